"""The sandbox for real: namespaces, mesh-init, Envoy and apps, proven by Envoy's counters."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from injector.sandbox import network, nssocket, stats
from injector.sandbox.state import StateDir
from tests.support.cli import meshinject
from tests.support.kernel import namespaces

pytestmark = [pytest.mark.netns, pytest.mark.envoy, pytest.mark.timeout(120)]

# corpus-like: a Deployment behind a Service whose port differs from the container's, and a
# client pod that calls it by name; the apps are plain Python HTTP servers
MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello, labels: {app: hello}}
spec:
  replicas: 2
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      securityContext: {runAsUser: 1000, runAsGroup: 1000}
      containers:
      - name: hello
        image: registry.example/hello:1
        command: [python3, -m, http.server, "8080"]
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: hello}
spec:
  selector: {app: hello}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers:
  - {name: client, image: busybox, command: [sleep, "3600"], securityContext: {runAsUser: 1001}}
"""
CALLS = 12


def up(state: StateDir, tmp_path: Path, manifest: str = MANIFEST) -> dict[str, str]:
    path = tmp_path / "app.yaml"
    path.write_text(manifest)
    result = meshinject("sandbox", "up", "-f", str(path), "--state-dir", str(state.root))
    assert result.returncode == 0, result.stderr
    owner = int(state.status()["owner"])
    return {p.name: p.netns(owner) for p in state.plan().pods}


def call_by_name(namespace: str, url: str, count: int) -> list[int]:
    """Requests from inside a pod (as an app uid, so the capture applies), by Service name."""
    script = (
        "import urllib.request, urllib.error\n"
        f"for _ in range({count}):\n"
        f"    try: print(urllib.request.urlopen({url!r}, timeout=5).status)\n"
        "    except urllib.error.HTTPError as e: print(e.code)\n"
    )
    out = subprocess.run(
        ["ip", "netns", "exec", namespace, "setpriv", "--reuid=1001", "--regid=1001",
         "--clear-groups", "--", sys.executable, "-c", script],
        capture_output=True, text=True, timeout=60, check=True,
        env={"PATH": os.environ["PATH"]},
    )
    return [int(line) for line in out.stdout.split()]


def test_pod_to_pod_traffic_by_service_name_passes_both_proxies(
    state: StateDir, tmp_path: Path
) -> None:
    names = up(state, tmp_path)
    before = {pod: stats.fetch(ns) for pod, ns in names.items()}
    codes = call_by_name(names["client"], "http://hello/", CALLS)
    codes += call_by_name(names["client"], "http://hello.default.svc.cluster.local/", CALLS)
    assert codes == [200] * (2 * CALLS)
    after = {pod: stats.fetch(ns) for pod, ns in names.items()}

    def grew(pod: str, key: str) -> int:
        return after[pod].get(key, 0) - before[pod].get(key, 0)

    # every app connection went through the client's outbound listener
    assert grew("client", stats.OUTBOUND_LISTENER + "downstream_cx_total") >= 2 * CALLS
    # every request reached a server's proxy (over connections the client's proxy pools), on
    # its mutual-TLS chain: both ends have proxies
    inbound = "http.inbound_mtls_http.downstream_rq_total"
    served = grew("hello-0", inbound) + grew("hello-1", inbound)
    assert served == 2 * CALLS
    # balanced per request over the Service's two endpoints: round robin, half each
    assert grew("hello-0", inbound) == grew("hello-1", inbound) == CALLS
    # and the apps saw the proxy's inbound passthrough, never the client
    logs = "".join(state.log_path(f"hello-{i}.default", "hello").read_text() for i in (0, 1))
    assert logs.count("127.0.0.6") >= 2 * CALLS and "198.18." not in logs


def test_status_shows_every_container_and_the_proxies_ready(
    state: StateDir, tmp_path: Path
) -> None:
    up(state, tmp_path)
    result = meshinject("sandbox", "status", "--state-dir", str(state.root))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum("ready" in line for line in lines) == 3
    assert sum(" completed " in line and "mesh-init" in line for line in lines) == 3
    assert any("hello" in line and " app " in line and "1000" in line for line in lines)
    logs = meshinject("sandbox", "logs", "client", "mesh-init", "--state-dir", str(state.root))
    assert "mesh-init: REDIRECT capture" in logs.stdout


def test_a_container_that_dies_is_restarted_and_counted(state: StateDir, tmp_path: Path) -> None:
    names = up(state, tmp_path)
    info = state.status()["pods"]["hello-0.default"]["containers"]["hello"]
    os.kill(info["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        now = state.status()["pods"]["hello-0.default"]["containers"]["hello"]
        if now["restarts"] == 1 and now["state"] == "running" and nssocket.probe(
            names["hello-0"], kind="tcp", port=8080
        ):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"not restarted: {state.status()['pods']['hello-0.default']}")
    assert now["pid"] != info["pid"]


def test_down_removes_namespaces_hosts_files_and_processes(
    state: StateDir, tmp_path: Path
) -> None:
    up(state, tmp_path)
    journal = state.resources()
    pids = [c["pid"] for p in state.status()["pods"].values() for c in p["containers"].values()
            if c["pid"]]
    assert len(journal["namespaces"]) == 4 and len(pids) == 6
    result = meshinject("sandbox", "down", "--state-dir", str(state.root))
    assert result.returncode == 0, result.stderr
    assert not network.leftovers(StateDir(state.root))
    assert not set(journal["namespaces"]) & namespaces()
    assert not any(Path(d).exists() for d in journal["hosts_dirs"])
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert not state.root.exists()
