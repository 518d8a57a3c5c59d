"""Upgrade: a changed mesh config makes the running pods STALE; a rollout makes them current.

The pods really run (``examples/shop.yaml`` on the sandbox node): before the change every proxy
is ready, current and synced with the control plane; after it, ``inspect`` shows them STALE
(their status annotation records the config hash they were injected with); ``kubectl rollout
restart`` replaces them, rolling (each new pod Ready before an old one goes), with pods the
restarted injector renders from the new config.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from mesh.contract import (
    BOOTSTRAP_FILE,
    CA_CONFIGMAP,
    CONFIG_KEY,
    CONFIGMAP,
    INJECT,
    NAMESPACE_ENABLED,
)
from mesh.envoy import bootstrap
from mesh.settings import MeshConfig
from tests.support import meshapp
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
    return sorted(p["metadata"]["name"] for p in meshapp.pods(cluster, ns))


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


def cluster_inspect_pod(cluster: LocalCluster, ns: str, pod: str) -> str:
    """``meshinject inspect -n NS POD``: which xDS type a proxy has not ACKed, for a failure."""
    proc = subprocess.run([str(MESHINJECT), "inspect", "-n", ns, pod, "--kubeconfig",
                           cluster.kubeconfig], capture_output=True, text=True, timeout=60,
                          check=False)
    return proc.stdout + proc.stderr


def test_a_changed_mesh_config_shows_pods_stale_until_a_rollout_restart_reinjects_them(
    cluster: LocalCluster, mesh_config: dict[str, Any]
) -> None:
    with cluster.namespace("upgrade", labels={INJECT: NAMESPACE_ENABLED}) as ns:
        meshapp.deploy(cluster, ns)
        first = pods_of(cluster, ns)
        code, rows, out = inspect(cluster, ns)
        assert code == 0, out
        assert [rows[p][:7] for p in first] == [
            ["yes", "ready", "native", "REDIRECT", "0", "current", "synced"]] * 3, out

        changed = json.loads(json.dumps(mesh_config))
        changed["proxy"]["concurrency"] = 2
        patch = json.dumps({"data": {CONFIG_KEY: yaml.safe_dump(changed)}})
        cluster.kubectl("patch", "configmap", CONFIGMAP, "-n", NS, "--type=merge", "-p", patch)
        code, rows, out = inspect(cluster, ns)
        assert [rows[p][5] for p in first] == ["STALE"] * 3, out
        assert "STALE: injected under an older mesh config: restart to re-inject" in out

        # the injector reads its config at start: it is restarted on the new one, as
        # `kubectl -n meshinject-system rollout restart deploy/meshinject` would
        cluster.injector("restart")
        cluster.kubectl("rollout", "restart", "deployment/web", "deployment/catalog", "-n", ns)
        for name in ("web", "catalog"):
            cluster.kubectl("rollout", "status", f"deployment/{name}", "-n", ns,
                            "--timeout=180s", timeout=200)

        def replaced() -> bool:  # and the old ones gone, not only terminating (preStop)
            out = cluster.kubectl("get", "pods", "-n", ns, "-o", "json").stdout
            now = json.loads(out)["items"]
            return (len(now) == 3 and not {p["metadata"]["name"] for p in now} & set(first)
                    and all(meshapp.ready(p) for p in now))

        meshapp.wait_for("3 new Ready pods, the old ones gone", replaced, timeout=120)
        seen: list[str] = []

        def synced() -> bool:  # the old pods' endpoints going is one more push to ACK
            code, rows, out = inspect(cluster, ns)
            seen[:] = [out]
            return code == 0 and [rows[p][5:7] for p in pods_of(cluster, ns)] == [
                ["current", "synced"]] * 3

        try:
            meshapp.wait_for("the new pods current and synced", synced, timeout=30, every=1)
        except AssertionError as err:
            one = cluster_inspect_pod(cluster, ns, pods_of(cluster, ns)[0])
            raise AssertionError(f"{err}:\n{seen[0]}\n{one}") from None
        out = seen[0]
        assert "STALE" not in out


def _published_bootstrap(cluster: LocalCluster, ns: str) -> str:
    found = json.loads(cluster.kubectl("get", "configmap", CA_CONFIGMAP, "-n", ns, "-o",
                                       "json").stdout)
    return str(found["data"].get(BOOTSTRAP_FILE, ""))


def test_the_proxies_shared_bootstrap_is_published_and_follows_the_mesh_config(
    cluster: LocalCluster
) -> None:
    """Every namespace's root ConfigMap carries the bootstrap its proxies read at start, made
    from the installed mesh config; a new control plane address reaches it without a restart
    (pods started after it use it), and going back puts the old one back."""
    out = cluster.kubectl("get", "configmap", CONFIGMAP, "-n", NS, "-o", "json").stdout
    original = json.loads(out)["data"][CONFIG_KEY]
    installed = MeshConfig.model_validate(yaml.safe_load(original) or {})
    with cluster.namespace("boot", labels={INJECT: NAMESPACE_ENABLED}) as ns:
        expected = bootstrap.text(bootstrap.shared(installed))
        meshapp.wait_for("the root ConfigMap with the bootstrap",
                         lambda: _published_bootstrap(cluster, ns) == expected, timeout=30)
        changed = yaml.safe_load(original) or {}
        changed.setdefault("controlPlane", {})["address"] = "cp.elsewhere.example:15012"
        moved = bootstrap.text(bootstrap.shared(MeshConfig.model_validate(changed)))
        try:
            patch = json.dumps({"data": {CONFIG_KEY: yaml.safe_dump(changed)}})
            cluster.kubectl("patch", "configmap", CONFIGMAP, "-n", NS, "--type=merge", "-p",
                            patch)
            meshapp.wait_for("the moved address published",
                             lambda: _published_bootstrap(cluster, ns) == moved, timeout=30)
            assert "cp.elsewhere.example:15012" in moved
        finally:
            patch = json.dumps({"data": {CONFIG_KEY: original}})
            cluster.kubectl("patch", "configmap", CONFIGMAP, "-n", NS, "--type=merge", "-p",
                            patch)
            meshapp.wait_for("the installed address published again",
                             lambda: _published_bootstrap(cluster, ns) == expected, timeout=30)
