"""Fixtures for the real-Envoy tests: meshed pods, gone when the test ends, pass or fail."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from injector.sandbox import netns
from tests.support.envoy import need_envoy
from tests.support.lab import CLIENT_IP, SERVER_IP, Lab, Mesh
from tests.support.meshcontrol import LabControl


@pytest.fixture(scope="session")
def can_mesh() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for tool in ("ip", "setpriv", "curl", "iptables-restore", "bash"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    need_envoy()
    netns.cleanup_stale()


@pytest.fixture
def lab(can_mesh: None, tmp_path: Path) -> Iterator[Lab]:
    """Namespaces and processes for one test; all stopped and deleted at teardown."""
    created: list[netns.Netns] = []
    started: list[subprocess.Popen[bytes]] = []

    def spawn(ns: netns.Netns, cmd: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        proc = ns.spawn(cmd, **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc

    try:
        yield Lab(created, spawn, tmp_path, LabControl(tmp_path / "mesh"))
    finally:
        for proc in reversed(started):
            netns.stop(proc)
        for ns in reversed(created):
            netns.delete(ns)


@pytest.fixture
def mesh(lab: Lab) -> Mesh:
    """A client pod (198.18.5.1) and a server pod (198.18.5.2) joined by a veth."""
    client, server = lab.pod("l7cli", CLIENT_IP), lab.pod("l7srv", SERVER_IP)
    netns.veth(client.ns, server.ns, a_addr=f"{CLIENT_IP}/24", b_addr=f"{SERVER_IP}/24")
    return Mesh(client, server, lab.control)
