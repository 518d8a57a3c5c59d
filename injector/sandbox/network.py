"""The sandbox's network: a node namespace with a bridge, and one namespace per pod.

Built from :mod:`injector.netns` (bridge, attach, delete) plus what the sandbox adds: namespaces
with chosen names (``mi-<supervisor pid>-<pod>.<namespace>``, readable in ``ip netns list`` and
still recognised by ``netns.cleanup_stale`` once the supervisor is gone), /32 pod addresses routed
through the node (so the node's DNAT for Services sees both directions), and hosts files. Nothing
touches the root namespace: the bridge, the addresses and the iptables rules all live in the node
namespace or in pods. Every namespace and hosts directory is journaled before it is created.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path

from injector.sandbox import netns, services
from injector.sandbox.model import BRIDGE, NODE_ADDRESS, VIP_RANGE, PodPlan, SandboxPlan
from injector.sandbox.state import StateDir, start_time
from mesh.errors import SandboxError

HOSTS_ROOT = Path("/etc/netns")


def node_name(owner: int) -> str:
    return f"mi-{owner}-node"


def _ip(*args: str, stdin: str | None = None) -> None:
    proc = subprocess.run(list(args), capture_output=True, text=True, input=stdin, check=False)
    if proc.returncode != 0:
        raise SandboxError(f"{' '.join(args[:6])} failed: {proc.stderr.strip()}")


def _namespace(state: StateDir, name: str, plan: SandboxPlan, pod: PodPlan | None) -> netns.Netns:
    """Journal, then create, a named namespace with lo up and its hosts file."""
    hosts_dir = HOSTS_ROOT / name
    state.record(namespace=name, hosts_dir=str(hosts_dir))
    hosts_dir.mkdir(parents=True, exist_ok=True)
    (hosts_dir / "hosts").write_text(services.hosts_file(plan, pod=pod))
    (hosts_dir / "resolv.conf").write_text(services.resolv_conf(pod))
    _ip("ip", "netns", "add", name)
    _ip("ip", "-n", name, "link", "set", "lo", "up")
    return netns.Netns(name)


def build(state: StateDir, plan: SandboxPlan, *, owner: int) -> dict[str, str]:
    """Create the node and every pod's namespace; returns pod key -> namespace name."""
    node = _namespace(state, node_name(owner), plan, None)
    node.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0",
              "net.ipv4.conf.default.send_redirects=0"])
    netns.bridge(node, name=BRIDGE, address=f"{NODE_ADDRESS}/16")
    # the node's own connections to a Service (the demo's load) need a route before OUTPUT DNAT
    _ip("ip", "-n", node.name, "route", "add", VIP_RANGE, "dev", BRIDGE)
    node.run(["iptables-restore"], input_text=services.nat_rules(plan))
    names: dict[str, str] = {}
    for pod in plan.pods:
        ns = _namespace(state, pod.netns(owner), plan, pod)
        netns.attach(ns, node, address=f"{pod.address}/32", bridge_name=BRIDGE)
        _ip("ip", "-n", ns.name, "route", "add", NODE_ADDRESS, "dev", "eth0", "scope", "link")
        _ip("ip", "-n", ns.name, "route", "add", "default", "via", NODE_ADDRESS, "dev", "eth0")
        names[pod.key] = ns.name
    return names


def teardown(state: StateDir, *, wait: float = 5) -> list[str]:
    """Delete every journaled namespace (killing what runs in it) and hosts directory, and
    wait (a little) until those processes are really gone, not just signalled."""
    resources = state.resources()
    doomed = [pid for name in resources["namespaces"] for pid in netns.pids(netns.Netns(name))]
    for name in reversed(resources["namespaces"]):
        netns.delete(name)
    deadline = time.monotonic() + wait
    while any(start_time(pid) is not None for pid in doomed) and time.monotonic() < deadline:
        time.sleep(0.02)
    for directory in resources["hosts_dirs"]:
        path = Path(directory)
        if path.parent == HOSTS_ROOT:  # never remove anything the journal did not create
            shutil.rmtree(path, ignore_errors=True)
    busy = _mounted_anywhere()
    for directory in reversed(resources["mount_dirs"]):  # deepest last made, first removed
        path = Path(directory)
        if any(str(path.resolve()) == m or m.startswith(f"{path.resolve()}/") for m in busy):
            continue  # another sandbox's container still has a volume bound there
        with contextlib.suppress(OSError):  # only while empty: never anything of the host's
            path.rmdir()
    return resources["namespaces"]


def _mounted_anywhere() -> set[str]:
    """Every mount point in any process's mount namespace (removing a directory would detach
    what another namespace mounted on it)."""
    points: set[str] = set()
    for info in Path("/proc").glob("[0-9]*/mountinfo"):
        with contextlib.suppress(OSError):
            points.update(line.split()[4] for line in info.read_text().splitlines()
                          if len(line.split()) > 4)
    return points


def mount_points(state: StateDir, paths: list[str]) -> None:
    """Make (and journal) the empty host directories the containers' volumes are bound onto:
    only those that do not exist yet, each parent before its child."""
    for path in paths:
        missing: list[Path] = []
        here = Path(path)
        while not here.exists():
            missing.append(here)
            here = here.parent
        for directory in reversed(missing):
            state.record(mount_dir=str(directory))
            directory.mkdir(exist_ok=True)


def leftovers(state: StateDir) -> list[str]:
    """Journaled namespaces or hosts directories that still exist (for ``down`` to verify)."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    alive = {line.split()[0] for line in listing.stdout.splitlines() if line.strip()}
    resources = state.resources()
    return [n for n in resources["namespaces"] if n in alive] + [
        d for d in resources["mount_dirs"] if Path(d).exists()] + [
        d for d in resources["hosts_dirs"] if Path(d).exists()
    ]
