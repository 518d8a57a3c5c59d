"""Fixtures for the real-Envoy tests: two meshed pods, gone when the test ends, pass or fail."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from injector import netns
from tests.proxy.envoy_bin import need_envoy
from tests.proxy.mesh import CLIENT_IP, SERVER_IP, Mesh, Pod


@pytest.fixture(scope="session")
def can_mesh() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for tool in ("ip", "setpriv", "curl", "iptables-restore"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    need_envoy()
    netns.cleanup_stale()


@pytest.fixture
def mesh(can_mesh: None, tmp_path: Path) -> Iterator[Mesh]:
    created: list[netns.Netns] = []
    started: list[subprocess.Popen[bytes]] = []

    def spawn(ns: netns.Netns, cmd: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        proc = ns.spawn(cmd, **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc

    try:
        client_ns = netns.create("l7cli")
        created.append(client_ns)
        server_ns = netns.create("l7srv")
        created.append(server_ns)
        netns.veth(client_ns, server_ns, a_addr=f"{CLIENT_IP}/24", b_addr=f"{SERVER_IP}/24")
        yield Mesh(Pod(client_ns, CLIENT_IP, spawn, tmp_path),
                   Pod(server_ns, SERVER_IP, spawn, tmp_path))
    finally:
        for proc in reversed(started):
            netns.stop(proc)
        for ns in reversed(created):
            netns.delete(ns)
