"""The sandbox's stand-in for an API server: objects applied while it runs are laid over the
ones it makes from the plan (pure, on a state directory; no namespace)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from injector.sandbox import apiserver, demo_manifest
from injector.sandbox.plan import build_plan
from injector.sandbox.state import StateDir
from mesh.contract import CONFIG_KEY, CONFIGMAP
from mesh.settings import MeshConfig

PLAN = build_plan(demo_manifest.documents(), config=MeshConfig(), namespace="demo")


def _items(state: StateDir) -> dict[tuple[str, str], dict[str, Any]]:
    listing = apiserver.registry(PLAN, {}, apiserver.applied(state))
    return {(o["kind"], o["metadata"]["name"]): o for o in listing["items"]}


def test_an_applied_configmap_replaces_the_mesh_config_and_a_policy_is_added(
    tmp_path: Path,
) -> None:
    state = StateDir(tmp_path)
    config = dict(PLAN.mesh_config)
    config["traffic"] = {**config["traffic"], "timeout": "3s"}  # type: ignore[dict-item]
    apiserver.apply(state, apiserver.mesh_configmap(config))
    policy = {"apiVersion": "security.meshinject.io/v1alpha1", "kind": "AccessPolicy",
              "metadata": {"name": "p", "namespace": "demo"}, "spec": {"allow": []}}
    apiserver.apply(state, policy)
    apiserver.apply(state, {**policy, "spec": {"allow": [{}]}})  # applied again: replaced
    items = _items(state)
    assert yaml.safe_load(items[("ConfigMap", CONFIGMAP)]["data"][CONFIG_KEY])["traffic"][
        "timeout"] == "3s"
    assert [k for k in items if k[0] == "ConfigMap"] == [("ConfigMap", CONFIGMAP)]
    assert items[("AccessPolicy", "p")]["spec"] == {"allow": [{}]}
    assert len(apiserver.applied(state)) == 2


def test_nothing_applied_publishes_the_plan_as_it_is(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    assert apiserver.applied(state) == []
    assert yaml.safe_load(_items(state)[("ConfigMap", CONFIGMAP)]["data"][CONFIG_KEY]) == \
        PLAN.mesh_config
