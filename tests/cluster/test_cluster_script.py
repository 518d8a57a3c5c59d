"""``scripts/cluster/cluster.py`` itself: ``up`` twice does nothing the second time, and ``down``
undoes a crashed ``up`` (processes by PID or, if the PID never reached the journal, by the tag
only its own processes carry; every file it made)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.realcluster import CLUSTER_PY, LocalCluster

pytestmark = pytest.mark.cluster
TAG = "MESHINJECT_CLUSTER_TAG"


def tagged(prefix: str) -> list[int]:
    """PIDs of live processes whose tag starts with ``prefix`` (this cluster's id)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(e.startswith(f"{TAG}={prefix}".encode()) for e in environ):
            found.append(int(entry.name))
    return found


def _free_base() -> int:
    """A port base whose six ports nothing listens on (another run may hold 26700's)."""
    for base in range(26700, 27700, 100):
        ports = [*range(base + 1, base + 6), base + 43]
        free = True
        for port in ports:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    free = False
                    break
        if free:
            return base
    raise AssertionError("no free port base between 26700 and 27600")


def _started(journal: Path, name: str) -> bool:
    """The journal has the process's PID: it was started (and has exec'd: Popen returns then)."""
    if not journal.exists():
        return False
    entries = []
    for line in journal.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue  # a line being written as we read
    tags = {e["tag"] for e in entries if e["op"] == "spawn" and e["name"] == name}
    return any(e["op"] == "pid" and e["tag"] in tags for e in entries)


def test_a_second_up_with_everything_running_reports_it_and_changes_nothing(
    cluster: LocalCluster,
) -> None:
    journal = cluster.state_dir / "journal.jsonl"
    before = journal.read_text()
    out = cluster.cluster_py("up")
    assert "cluster already up: nothing to do" in out
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                 "injector"):
        assert f"{name} " in out and "running (pid " in out
    assert journal.read_text() == before  # nothing started, nothing made


def test_down_after_a_crashed_up_stops_its_processes_and_removes_its_files(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    state, out = tmp_path / "crashed", tmp_path / "up.log"
    with out.open("w") as log:
        up = subprocess.Popen([sys.executable, str(CLUSTER_PY), "--state-dir", str(state), "up",
                               "--port-base", str(_free_base())], stdout=log,
                              stderr=subprocess.STDOUT)
    journal = state / "journal.jsonl"
    deadline = time.monotonic() + 60
    try:
        while not _started(journal, "kube-apiserver"):
            if up.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"up never got that far: {out.read_text()}")
            time.sleep(0.05)
    finally:
        up.send_signal(signal.SIGKILL)
        up.wait()
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    cluster_id = lines[0]["id"]
    running = tagged(cluster_id + "/")
    assert len(running) >= 2, "etcd and the API server should be running"
    # the window a kill can hit: a process started, its PID not yet journaled
    etcd_tag = next(e["tag"] for e in lines if e["op"] == "spawn" and e["name"] == "etcd")
    kept = [e for e in lines if not (e["op"] == "pid" and e["tag"] == etcd_tag)]
    journal.write_text("".join(json.dumps(e) + "\n" for e in kept))

    # the machine's python3, not the venv's: stopping needs the standard library only
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    down = subprocess.run([python, str(CLUSTER_PY), "--state-dir", str(state), "down"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "PID never journaled; found by its tag" in down.stdout
    assert tagged(cluster_id + "/") == []
    assert not state.exists(), list(state.rglob("*"))
