"""AccessPolicies reach the runtime from both registries; a policy that does not parse is
logged with its problems, counted and ignored, and never stops a watch; a policy change
re-computes only the views of the proxies whose pods it selects."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from controlplane.metrics import ControlPlaneMetrics
from controlplane.model.state import Change
from controlplane.model.values import Service, ServicePort, Workload
from controlplane.registry.file import FileRegistry
from controlplane.registry.kube import ACCESS_POLICIES, KubeRegistry
from controlplane.registry.policies import PolicyBook
from controlplane.runtime import Runtime, Subscriber
from mesh.access import parse_policy
from tests.support.accesspolicies import FRONTEND_ONLY, policy_obj

WEB = Service("shop", "web", "198.19.0.10", (ServicePort(80, "http"),))
BAD = policy_obj("bad", {"mtls": "strict", "allow": [{"from": {}}]})
HOSTILE: list[Any] = [policy_obj("x", {"allow": "everything"}), policy_obj("y", [1]),
                      {"kind": "AccessPolicy", "metadata": "nope"},
                      policy_obj("z", {"selector": {"matchLabels": {"app": 7}}})]


def _invalid(metrics: ControlPlaneMetrics) -> float:
    value = metrics.registry.get_sample_value("meshinject_accesspolicies_invalid")
    assert value is not None
    return value


def test_the_kube_registry_watches_the_crds_path() -> None:
    assert ACCESS_POLICIES == "/apis/security.meshinject.io/v1alpha1/accesspolicies"


def test_an_invalid_policy_is_logged_with_its_problems_counted_and_ignored(
    caplog: pytest.LogCaptureFixture
) -> None:
    metrics = ControlPlaneMetrics()
    book = PolicyBook(metrics)
    with caplog.at_level(logging.ERROR, "meshinject.registry"):
        change = book.change(("shop", "bad"), BAD)
    assert change == Change("policy", ("shop", "bad"), None)
    [record] = caplog.records
    assert "AccessPolicy shop/bad is ignored" in record.getMessage()
    assert 'spec.mtls="strict"' in record.getMessage()  # every problem, each naming its field
    assert "spec.allow[0].from" in record.getMessage()
    assert _invalid(metrics) == 1
    fixed = book.change(("shop", "bad"), policy_obj("bad", {"allow": [{}]}))
    assert fixed.value == parse_policy(policy_obj("bad", {"allow": [{}]}))
    assert _invalid(metrics) == 0


def test_the_kube_watch_survives_hostile_policies_and_forgets_deleted_ones() -> None:
    metrics = ControlPlaneMetrics()
    registry = KubeRegistry(object(), config_namespace="meshinject-system",  # type: ignore[arg-type]
                            metrics=metrics)
    listed = registry._policy_list([FRONTEND_ONLY, BAD, *HOSTILE])
    assert [c.value for c in listed if c.value is not None] == [parse_policy(FRONTEND_ONLY)]
    assert _invalid(metrics) == 1 + len(HOSTILE)
    again = registry._policy_list([FRONTEND_ONLY])  # a relist: the rest are gone
    assert {c.key: c.value for c in again}[("shop", "bad")] is None
    assert _invalid(metrics) == 0
    [deleted] = registry._policy_event("DELETED", FRONTEND_ONLY)
    assert deleted == Change("policy", ("shop", "frontend-only"), None)


def _write(path: Path, *items: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"kind": "List", "items": list(items)}))
    tmp.replace(path)


def test_the_file_registry_reads_policies_and_their_updates(tmp_path: Path) -> None:
    path = tmp_path / "mesh.json"
    rt = Runtime()
    registry = FileRegistry(path)
    _write(path, FRONTEND_ONLY, BAD)
    assert registry.poll(rt)
    rt.flush()
    assert list(rt.state.policies) == [("shop", "frontend-only")]
    opened = policy_obj("frontend-only", {"allow": [{}]})
    _write(path, opened, BAD, {"kind": "Namespace", "metadata": {"name": "shop"}})
    assert registry.poll(rt)
    rt.flush()
    assert rt.state.policies[("shop", "frontend-only")] == parse_policy(opened)
    _write(path)
    registry.poll(rt)
    rt.flush()
    assert not rt.state.policies


def _pod(name: str, app: str) -> Workload:
    return Workload("shop", name, ip=f"198.18.0.{len(name)}", labels=(("app", app),))


def test_a_policy_change_recomputes_only_the_views_of_the_pods_it_selects() -> None:
    rt = Runtime()
    rt.submit_all([Change("service", WEB.key, WEB),
                   Change("workload", ("shop", "web-1"), _pod("web-1", "web")),
                   Change("workload", ("shop", "db-1"), _pod("db-1", "db"))])
    rt.flush()
    web, db = (Subscriber(workload=("shop", n), wake=lambda: None) for n in ("web-1", "db-1"))
    rt.attach(web)
    rt.attach(db)
    db_view = db.view
    looked_at: list[tuple[str, str]] = []
    rt.on_assign = lambda s: looked_at.append(s.workload)
    policy = parse_policy(FRONTEND_ONLY)  # selects app=web
    rt.submit(Change("policy", ("shop", "frontend-only"), policy))
    assert rt.flush().policies == {("shop", "frontend-only")}
    assert looked_at == [("shop", "web-1")]
    assert web.view is not None and web.view.key.security.policies == (policy,)
    assert db.view is db_view
    looked_at.clear()
    rt.submit(Change("policy", ("shop", "frontend-only"), None))  # deleted: web-1 again
    rt.flush()
    assert looked_at == [("shop", "web-1")]
    assert web.view is not None and web.view.key.security.policies == ()
