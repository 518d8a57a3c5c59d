"""When things go wrong: a clear error before anything starts, and ``down`` after a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from injector.sandbox.state import StateDir, same_process
from tests.support.cli import meshinject
from tests.support.kernel import namespaces

pytestmark = [pytest.mark.netns, pytest.mark.envoy, pytest.mark.timeout(120)]

GHOST = f"ghost{os.getpid()}"
MISSING = f"""
apiVersion: v1
kind: Pod
metadata: {{name: fine}}
spec:
  containers: [{{name: app, image: busybox, command: [sleep, "60"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: {GHOST}}}
spec:
  containers: [{{name: app, image: example/ghost:1, command: [/opt/ghost/bin/serve, --fast]}}]
"""

# three pods that get as far as their native sidecar, then wait in a slow init container
SLOW = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: slow}
spec:
  replicas: 3
  selector: {matchLabels: {app: slow}}
  template:
    metadata: {labels: {app: slow}}
    spec:
      initContainers: [{name: wait, image: busybox, command: [sleep, "300"]}]
      containers: [{name: app, image: busybox, command: [sleep, "300"]}]
"""


# an app that runs but never passes its readiness probe (http.server answers 404 to /healthz)
NOT_READY = """
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: web
    image: python:3.11
    command: [python3, -m, http.server, "8080"]
    readinessProbe: {httpGet: {path: /healthz, port: 8080}}
"""


def test_a_pod_that_never_gets_ready_is_named_with_its_probe_and_log_and_kept(
    state: StateDir, tmp_path: Path
) -> None:
    path = tmp_path / "not-ready.yaml"
    path.write_text(NOT_READY)
    root = str(state.root)
    result = meshinject("sandbox", "up", "-f", str(path), "--state-dir", root, "--timeout", "4")
    assert result.returncode == 1
    err = result.stderr
    assert "1 pod of 1 not ready after 4s" in err, err
    assert ("pod web.default: container web (app): readiness probe httpGet :8080/healthz "
            "failing, last result: HTTP 404; its log ends:") in err, err
    assert '"GET /healthz HTTP/1.1" 404' in err  # the last lines of the container's own log
    assert "the sandbox is kept for inspection" in err
    assert f"remove it with `meshinject sandbox down --state-dir {root}`" in err
    status = meshinject("sandbox", "status", "--state-dir", root)  # the message is true
    assert status.returncode == 0 and "web.default" in status.stdout, status
    assert " running " in status.stdout
    logs = meshinject("sandbox", "logs", "web", "web", "--state-dir", root)
    assert "/healthz" in logs.stdout
    assert meshinject("sandbox", "down", "--state-dir", root).returncode == 0
    assert not state.root.exists()


def test_with_down_on_failure_a_pod_stuck_in_init_is_named_and_everything_removed(
    state: StateDir, tmp_path: Path
) -> None:
    path = tmp_path / "slow.yaml"
    path.write_text(SLOW)
    result = meshinject("sandbox", "up", "-f", str(path), "--state-dir", str(state.root),
                        "--timeout", "3", "--max-replicas", "1", "--down-on-failure")
    assert result.returncode == 1
    assert ("pod slow-0.default: container wait (init): init container still running; "
            "its log ends:\n    (its log is empty)") in result.stderr, result.stderr
    assert "removed everything" in result.stderr
    assert not state.root.exists()
    assert not [n for n in namespaces() if n.endswith("slow-0.default")]


def test_a_missing_command_is_a_clear_error_and_nothing_starts(
    state: StateDir, tmp_path: Path
) -> None:
    path = tmp_path / "ghost.yaml"
    path.write_text(MISSING)
    result = meshinject("sandbox", "up", "-f", str(path), "--state-dir", str(state.root))
    assert result.returncode == 1
    assert f"pod '{GHOST}', container 'app'" in result.stderr
    assert "'/opt/ghost/bin/serve'" in result.stderr and "'example/ghost:1'" in result.stderr
    assert not state.root.exists()
    assert not [n for n in namespaces() if GHOST in n]


def _wait_for(what: str, check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_down_after_a_killed_up_leaves_no_namespace_bridge_process_or_hosts_file(
    state: StateDir, tmp_path: Path
) -> None:
    path = tmp_path / "slow.yaml"
    path.write_text(SLOW)
    cli = subprocess.Popen(
        [sys.executable, "-m", "injector.cli", "sandbox", "up", "-f", str(path),
         "--state-dir", str(state.root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:

        def sidecars_up() -> bool:
            pods = state.status().get("pods") or {}
            return len(pods) == 3 and all(
                p["containers"]["wait"]["state"] == "running" for p in pods.values()
            )

        _wait_for("three pods waiting in init", sidecars_up)
        journal = state.resources()
        running = {
            pid
            for name in journal["namespaces"]
            for pid in map(int, subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                                               text=True, check=False).stdout.split())
        }
        owner = state.owner()
        assert owner is not None and len(running) >= 6  # 3 proxies + 3 init sleeps
    finally:
        cli.kill()  # kill -9 the CLI, then the supervisor: nothing gets to clean up
        cli.wait()
    os.kill(owner[0], signal.SIGKILL)
    _wait_for("the supervisor to die", lambda: not same_process(*owner))
    assert set(journal["namespaces"]) <= namespaces()  # all still there, orphaned
    status = meshinject("sandbox", "status", "--state-dir", str(state.root))
    assert f"supervisor (pid {owner[0]}) is gone" in status.stdout

    result = meshinject("sandbox", "down", "--state-dir", str(state.root))
    assert result.returncode == 0, result.stderr
    assert not set(journal["namespaces"]) & namespaces()  # the node's bridge went with its ns
    assert not any(Path(d).exists() for d in journal["hosts_dirs"])
    assert not [pid for pid in running if same_process(pid, None)]  # a zombie is dead
    assert not state.root.exists()
