"""Upgrade: a changed mesh config makes the running pods STALE; a rollout makes them current.

What ``inspect`` reads here is real: the pods as the API server stored them (the injector's
status annotation with its config hash, and the init containers it added) and the ConfigMap
installed from ``manifests/``. What it cannot show without a node: whether a proxy is ready
(no kubelet reports container statuses, so the PROXY column is ``?``). Without a node no pod
becomes available either, so a rolling update that keeps availability would wait forever; the
Deployment uses ``Recreate``, which a rollout restart then carries through.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from mesh.contract import CONFIG_KEY, CONFIGMAP, INJECT, NAMESPACE_ENABLED
from tests.support.paths import MESHINJECT
from tests.support.realcluster import NS, LocalCluster

pytestmark = pytest.mark.cluster


def inspect(cluster: LocalCluster, ns: str) -> tuple[int, dict[str, list[str]], str]:
    """``meshinject inspect -n NS``: (exit code, row per pod, output)."""
    done = subprocess.run([str(MESHINJECT), "inspect", "-n", ns, "--kubeconfig",
                           cluster.kubeconfig], capture_output=True, text=True, timeout=60,
                          check=False)
    rows = {line.split()[1]: line.split()[2:] for line in done.stdout.splitlines()
            if line.startswith(ns)}
    return done.returncode, rows, done.stdout + done.stderr


def pods_of(cluster: LocalCluster, ns: str) -> list[str]:
    out = cluster.kubectl("get", "pods", "-n", ns, "-l", "app=web", "-o", "json").stdout
    return sorted(p["metadata"]["name"] for p in json.loads(out)["items"]
                  if not p["metadata"].get("deletionTimestamp"))


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


@pytest.fixture
def mesh_config(cluster: LocalCluster) -> Iterator[dict[str, Any]]:
    """The installed mesh config, put back (and the injector restarted on it) after the test."""
    out = cluster.kubectl("get", "configmap", CONFIGMAP, "-n", NS, "-o", "json").stdout
    original = json.loads(out)["data"][CONFIG_KEY]
    try:
        yield yaml.safe_load(original)
    finally:
        patch = json.dumps({"data": {CONFIG_KEY: original}})
        cluster.kubectl("patch", "configmap", CONFIGMAP, "-n", NS, "--type=merge", "-p", patch)
        cluster.injector("restart")


def test_a_changed_mesh_config_shows_pods_stale_until_a_rollout_restart_reinjects_them(
    cluster: LocalCluster, mesh_config: dict[str, Any]
) -> None:
    with cluster.namespace("upgrade", labels={INJECT: NAMESPACE_ENABLED}) as ns:
        cluster.kubectl("create", "deployment", "web", "-n", ns, "--image=nginx:1.27",
                        "--replicas=2")
        cluster.kubectl("patch", "deployment", "web", "-n", ns, "--type=merge", "-p",
                        '{"spec": {"strategy": {"type": "Recreate", "rollingUpdate": null}}}')
        wait_for("2 pods", lambda: len(pods_of(cluster, ns)) == 2)
        first = pods_of(cluster, ns)
        code, rows, out = inspect(cluster, ns)
        assert code == 0, out
        # no control plane runs without a node: every proxy NOT CONNECTED
        assert [rows[p] for p in first] == [["yes", "?", "native", "REDIRECT", "0", "current",
                                             "NOT", "CONNECTED", "-"]] * 2

        changed = json.loads(json.dumps(mesh_config))
        changed["proxy"]["concurrency"] = 2
        patch = json.dumps({"data": {CONFIG_KEY: yaml.safe_dump(changed)}})
        cluster.kubectl("patch", "configmap", CONFIGMAP, "-n", NS, "--type=merge", "-p", patch)
        code, rows, out = inspect(cluster, ns)
        assert [rows[p][5] for p in first] == ["STALE", "STALE"], out
        assert "STALE: injected under an older mesh config: restart to re-inject" in out

        # the injector reads its config at start: it is restarted on the new one, as
        # `kubectl -n meshinject-system rollout restart deploy/meshinject` would
        cluster.injector("restart")
        cluster.kubectl("rollout", "restart", "deployment/web", "-n", ns)

        def replaced() -> bool:
            now = pods_of(cluster, ns)
            return len(now) == 2 and not set(now) & set(first)

        wait_for("2 new pods", replaced)
        code, rows, out = inspect(cluster, ns)
        assert code == 0, out
        assert [rows[p][5] for p in pods_of(cluster, ns)] == ["current", "current"], out
        assert "STALE" not in out
