"""Who joins the mesh, and the reason given: one test per rule, in the order they apply."""

from __future__ import annotations

import pytest

from injector.core.policy import decide
from mesh.settings import MeshConfig
from tests.support.pods import CONFIG, pod

ENABLED = {"meshinject.io/inject": "enabled"}


def test_a_pod_in_an_enabled_namespace_is_injected() -> None:
    decision = decide(pod(), namespace="shop", namespace_labels=ENABLED, config=CONFIG)
    assert (decision.inject, decision.code) == (True, "injected")
    assert "shop" in decision.reason


def test_a_host_network_pod_is_never_injected_even_when_it_opts_in() -> None:
    p = pod(labels={"meshinject.io/inject": "true"},
            spec={"hostNetwork": True, "containers": [{"name": "a", "image": "a"}]})
    decision = decide(p, namespace="shop", namespace_labels=ENABLED, config=CONFIG)
    assert (decision.inject, decision.code) == (False, "host-network")
    assert "hostNetwork" in decision.reason


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public", "kube-node-lease"])
def test_a_pod_in_a_system_namespace_is_not_injected(namespace: str) -> None:
    decision = decide(pod(), namespace=namespace, namespace_labels=None, config=CONFIG)
    assert (decision.inject, decision.code) == (False, "system-namespace")
    assert namespace in decision.reason


def test_a_pod_in_the_injectors_own_namespace_is_not_injected() -> None:
    config = MeshConfig(injector_namespace="mesh-ctl")
    decision = decide(pod(), namespace="mesh-ctl", namespace_labels=ENABLED, config=config)
    assert (decision.inject, decision.code) == (False, "injector-namespace")


@pytest.mark.parametrize("where", ["labels", "annotations"])
@pytest.mark.parametrize("value", ["false", "False", "disabled"])
def test_a_pod_opted_out_by_label_or_annotation_is_not_injected(where: str, value: str) -> None:
    p = pod(**{where: {"meshinject.io/inject": value}})  # type: ignore[arg-type]
    decision = decide(p, namespace="shop", namespace_labels=ENABLED, config=CONFIG)
    assert (decision.inject, decision.code) == (False, "opted-out")
    assert where.rstrip("s") in decision.reason


def test_an_opt_out_wins_over_an_opt_in() -> None:
    p = pod(labels={"meshinject.io/inject": "true"},
            annotations={"meshinject.io/inject": "false"})
    assert decide(p, namespace="shop", namespace_labels=ENABLED, config=CONFIG).code == "opted-out"


def test_without_namespace_labels_the_caller_has_already_chosen_injection() -> None:
    decision = decide(pod(), namespace="shop", namespace_labels=None, config=CONFIG)
    assert (decision.inject, decision.code) == (True, "injected")


def test_a_pod_in_a_namespace_not_enabled_is_skipped_with_the_reason() -> None:
    decision = decide(pod(), namespace="shop", namespace_labels={"team": "a"}, config=CONFIG)
    assert (decision.inject, decision.code) == (False, "namespace-not-enabled")
    assert "meshinject.io/inject=enabled" in decision.reason


@pytest.mark.parametrize("where", ["labels", "annotations"])
def test_a_pod_can_opt_in_when_its_namespace_is_not_enabled(where: str) -> None:
    p = pod(**{where: {"meshinject.io/inject": "true"}})  # type: ignore[arg-type]
    decision = decide(p, namespace="shop", namespace_labels={}, config=CONFIG)
    assert (decision.inject, decision.code) == (True, "injected")
    assert "opts in" in decision.reason


def test_a_template_without_metadata_or_spec_is_decided_without_crashing() -> None:
    assert decide({}, namespace="shop", namespace_labels=None, config=CONFIG).inject
