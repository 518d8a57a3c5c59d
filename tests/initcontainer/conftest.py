"""Fixtures for the capture tests: namespaces and processes that are gone when a test ends.

Every namespace comes from :mod:`injector.netns` (``mi-<pid>-...``), and a finalizer deletes it
whether the test passed or failed; processes started through ``spawn`` are stopped first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence

import pytest

from initcontainer import iptables, netlink
from injector.sandbox import netns
from tests.support.kernel import CLIENT_IP, POD_IP


def _can_netns() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "setpriv", "iptables-nft", "iptables-legacy"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


@pytest.fixture(autouse=True)
def _not_in_the_machines_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    """mesh-init runs as a subprocess in a test's own namespace. In this process, which lives in
    the machine's network namespace, its iptables runner and its netlink client fail the test
    instead of changing anything."""

    def refuse(*args: object, **_: object) -> None:
        raise AssertionError(f"mesh-init tried to change the machine's own network namespace "
                             f"({args[0] if args else 'netlink'})")

    monkeypatch.setattr(iptables, "_run", refuse)
    monkeypatch.setattr(netlink, "_pyroute2", refuse)


@pytest.fixture(scope="session")
def netns_ok() -> None:
    why = _can_netns()
    if why:
        pytest.skip(why)
    netns.cleanup_stale()


@pytest.fixture
def make_netns(netns_ok: None) -> Iterator[Callable[[str], netns.Netns]]:
    """``make_netns("pod")`` -> a fresh namespace with lo up, deleted at teardown."""
    created: list[netns.Netns] = []

    def make(role: str) -> netns.Netns:
        ns = netns.create(role)
        created.append(ns)
        return ns

    yield make
    for ns in reversed(created):
        netns.delete(ns)
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    left = {line.split()[0] for line in listing.stdout.splitlines() if line.strip()}
    assert not left & {ns.name for ns in created}, f"namespaces left behind: {left}"


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """``spawn(ns, cmd, uid=..., gid=..., log_path=...)`` -> a process stopped at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(ns: netns.Netns, cmd: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        proc = ns.spawn(cmd, **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        netns.stop(proc)


@pytest.fixture
def pod_and_client(
    make_netns: Callable[[str], netns.Netns],
) -> tuple[netns.Netns, netns.Netns]:
    """A pod namespace (198.18.0.2) joined by a veth to a client namespace (198.18.0.1)."""
    pod, client = make_netns("pod"), make_netns("cli")
    netns.veth(pod, client, a_addr=f"{POD_IP}/24", b_addr=f"{CLIENT_IP}/24")
    return pod, client

