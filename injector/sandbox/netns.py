"""Network namespaces on this host: the harness for real-kernel tests and the local sandbox.

A thin I/O shell over ``ip netns``, ``ip link`` and ``setpriv``. Why a module of its own: the
capture tests and ``meshinject sandbox`` need the same few moves (a pod namespace, a veth to a
client or to a bridge in a "node" namespace, a process running as a given uid/gid), and the rules
of this machine apply to both:

- nothing is ever created in the root namespace: veths are created inside a namespace with the
  peer placed straight into the other one, so the root namespace never sees them;
- addresses come from 198.18.0.0/15 only (the benchmarking range), and IPv6 ones from
  2001:2::/48 (its IPv6 counterpart), checked here;
- every name starts with :data:`PREFIX` and the creating process's pid, so concurrent runs never
  collide and :func:`cleanup_stale` can delete what a crashed run left behind.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from mesh.errors import NetnsError

PREFIX = "mi-"
ALLOWED = ipaddress.ip_network("198.18.0.0/15")
ALLOWED6 = ipaddress.ip_network("2001:2::/48")
_counter = itertools.count()


def _run(cmd: Sequence[str], *, timeout: float = 30) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _check_address(address: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    iface = ipaddress.ip_interface(address)
    allowed = ALLOWED if iface.version == 4 else ALLOWED6
    if iface.ip not in allowed:
        raise ValueError(
            f"address {address!r} is outside {allowed}: test hosts use that range only"
        )
    return iface


def _addr_add(ns: Netns, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
              ifname: str) -> None:
    """Assign an address; an IPv6 one without duplicate detection (usable at once)."""
    nodad = ["nodad"] if iface.version == 6 else []
    _run(["ip", "-n", ns.name, "addr", "add", str(iface), "dev", ifname, *nodad])


@dataclass(frozen=True)
class Netns:
    """A named network namespace; the handle is only its name."""

    name: str

    def argv(
        self, cmd: Sequence[str], *, uid: int | None = None, gid: int | None = None,
        mounts: Sequence[tuple[str, str]] = (), writable: Sequence[str] = (),
    ) -> list[str]:
        """The command line that runs ``cmd`` inside the namespace, optionally as uid/gid, with
        ``mounts`` (host directory, path in the container) bound read-only, but for the paths
        in ``writable`` (an emptyDir), bound read-write.

        ``setpriv --reuid`` alone keeps gid 0 and root's groups, so a gid-owner rule would not
        match: the gid is always set and the supplementary groups cleared. The mounts are made
        in the mount namespace ``ip netns exec`` creates for the command (it is a slave of the
        host's, so nothing leaks back), by a shell that then execs in place: the pid is still
        the program's.
        """
        prefix = ["ip", "netns", "exec", self.name]
        if mounts:
            script = "set -e; " + "".join(
                f'mkdir -p "${{{2 * i + 2}}}"; '
                f'mount --rbind "${{{2 * i + 1}}}" "${{{2 * i + 2}}}"; '
                + ("" if m[1] in writable else f'mount -o remount,bind,ro "${{{2 * i + 2}}}"; ')
                for i, m in enumerate(mounts)
            ) + f"shift {2 * len(mounts)}; exec \"$@\""
            prefix += ["sh", "-c", script, "sh", *(p for m in mounts for p in m)]
        if uid is not None or gid is not None:
            u = 0 if uid is None else uid
            g = u if gid is None else gid
            prefix += ["setpriv", f"--reuid={u}", f"--regid={g}", "--clear-groups", "--"]
        return [*prefix, *cmd]

    def run(
        self,
        cmd: Sequence[str],
        *,
        uid: int | None = None,
        gid: int | None = None,
        check: bool = True,
        timeout: float = 30,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command to completion in the namespace and return its output."""
        proc = subprocess.run(
            self.argv(cmd, uid=uid, gid=gid),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=input_text,
        )
        if check and proc.returncode != 0:
            raise NetnsError(
                f"in {self.name}: {' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}"
            )
        return proc

    def spawn(
        self,
        cmd: Sequence[str],
        *,
        uid: int | None = None,
        gid: int | None = None,
        log_path: str | None = None,
        mounts: Sequence[tuple[str, str]] = (),
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process in its own process group; stop it with :func:`stop`."""
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            return subprocess.Popen(
                self.argv(cmd, uid=uid, gid=gid, mounts=mounts),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if not isinstance(out, int):
                out.close()

    def wait_for_port(self, port: int, *, host: str = "127.0.0.1", timeout: float = 10) -> None:
        """Block until something accepts TCP on host:port inside the namespace."""
        probe = (
            "import socket,sys,time\n"
            f"end=time.monotonic()+{timeout}\n"
            "while True:\n"
            "    try:\n"
            f"        socket.create_connection(({host!r},{port}),0.5).close(); sys.exit(0)\n"
            "    except OSError:\n"
            "        if time.monotonic()>end: sys.exit(1)\n"
            "        time.sleep(0.02)\n"
        )
        proc = self.run([sys.executable, "-c", probe], check=False, timeout=timeout + 5)
        if proc.returncode != 0:
            raise NetnsError(f"nothing listens on {host}:{port} in {self.name} after {timeout}s")


def unique_name(role: str) -> str:
    """``mi-<pid>-<role><n>``: unique per process, recognisable by :func:`cleanup_stale`."""
    return f"{PREFIX}{os.getpid()}-{role}{next(_counter)}"


def create(role: str) -> Netns:
    """Create a fresh namespace with ``lo`` up."""
    ns = Netns(unique_name(role))
    _run(["ip", "netns", "add", ns.name])
    try:
        _run(["ip", "-n", ns.name, "link", "set", "lo", "up"])
    except NetnsError:
        delete(ns)
        raise
    return ns


def pids(ns: Netns) -> list[int]:
    """Processes still living in the namespace (ours: only we start processes in it)."""
    proc = subprocess.run(
        ["ip", "netns", "pids", ns.name], capture_output=True, text=True, check=False
    )
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def delete(ns: Netns | str) -> None:
    """Delete a namespace, killing what still runs in it so it does not linger. Idempotent."""
    name = ns if isinstance(ns, str) else ns.name
    for pid in pids(Netns(name)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def _add_veth(a: Netns, a_if: str, b: Netns, b_if: str) -> None:
    """Create the pair inside ``a`` with the peer placed straight into ``b`` (never the root ns)."""
    peer = ["peer", "name", b_if, "netns", b.name]
    _run(["ip", "-n", a.name, "link", "add", a_if, "type", "veth", *peer])


def veth(
    a: Netns, b: Netns, *, a_addr: str, b_addr: str, a_if: str = "eth0", b_if: str = "eth0",
    a_addr6: str | None = None, b_addr6: str | None = None,
) -> None:
    """A veth pair between two namespaces, created inside ``a`` with the peer placed in ``b``.
    Addresses of either family; ``a_addr6``/``b_addr6`` add IPv6 ones (a dual-stack link)."""
    a_ifaces = [_check_address(x) for x in (a_addr, a_addr6) if x]
    b_ifaces = [_check_address(x) for x in (b_addr, b_addr6) if x]
    _add_veth(a, a_if, b, b_if)
    for ns, ifname, ifaces in ((a, a_if, a_ifaces), (b, b_if, b_ifaces)):
        for iface in ifaces:
            _addr_add(ns, iface, ifname)
        _run(["ip", "-n", ns.name, "link", "set", ifname, "up"])


def bridge(node: Netns, *, name: str = "br0", address: str | None = None) -> str:
    """A bridge living inside the node namespace (the sandbox's node); returns its name."""
    _run(["ip", "-n", node.name, "link", "add", name, "type", "bridge"])
    if address is not None:
        _run(["ip", "-n", node.name, "addr", "add", str(_check_address(address)), "dev", name])
    _run(["ip", "-n", node.name, "link", "set", name, "up"])
    return name


def attach(
    pod: Netns,
    node: Netns,
    *,
    address: str,
    bridge_name: str = "br0",
    pod_if: str = "eth0",
    gateway: str | None = None,
) -> str:
    """Plug a pod namespace into the node's bridge; returns the node-side interface name."""
    iface = _check_address(address)
    node_if = f"veth{next(_counter)}"  # unique within the node namespace, which is ours
    _add_veth(pod, pod_if, node, node_if)
    _run(["ip", "-n", node.name, "link", "set", node_if, "master", bridge_name, "up"])
    _run(["ip", "-n", pod.name, "addr", "add", str(iface), "dev", pod_if])
    _run(["ip", "-n", pod.name, "link", "set", pod_if, "up"])
    if gateway is not None:
        _run(
            [
                "ip",
                "-n",
                pod.name,
                "route",
                "add",
                "default",
                "via",
                str(_check_address(gateway).ip),
            ]
        )
    return node_if


def stop(proc: subprocess.Popen[bytes], *, timeout: float = 5) -> int | None:
    """Stop a process started by :meth:`Netns.spawn`, and its process group: TERM, then KILL."""
    if proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
    return proc.poll()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale(*, prefix: str = PREFIX) -> list[str]:
    """Delete namespaces left by runs whose process is gone (a crash); returns their names."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    removed = []
    for line in listing.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        owner = name[len(prefix) :].split("-", 1)[0]
        if name.startswith(prefix) and owner.isdigit() and not _alive(int(owner)):
            delete(name)
            removed.append(name)
    return removed
