"""The sandbox node's network: its own namespace with a bridge, and one namespace per pod.

The node namespace holds the bridge (the first address of the node's podCIDR, every pod's
gateway), the forwarding, kube-proxy's rules, and the node's listeners (its kubelet API, the
relay to the API server). Each pod gets a namespace of its own with a /32 from the podCIDR,
routed through the node (so the node's DNAT for Services sees both directions), a hosts file
(``ip netns exec`` binds ``/etc/netns/<ns>/hosts`` over ``/etc/hosts``) and a resolv.conf.
Nothing touches the root namespace. Every namespace and directory is journaled in the node's
state directory before it is made, so ``cleanup`` removes what a crashed agent left.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import subprocess
import threading
from pathlib import Path

from injector.sandbox import netns, network
from injector.sandbox.state import StateDir
from mesh.errors import SandboxError

BRIDGE = "br0"
FIRST_POD = 10  # .1 is the node; .2-.9 stay free for the node's own uses


def _ip(*args: str) -> None:
    proc = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SandboxError(f"{' '.join(args[:7])} failed: {proc.stderr.strip()}")


def write_in_place(path: Path, text: str) -> None:
    """Rewrite a file that is bind-mounted somewhere, keeping its inode (a rename would leave
    the mounts on the old one): padded with a comment to its old length, so a reader sees the
    new text whole or the old one, never a truncated file."""
    data = text.encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        old = os.fstat(fd).st_size
        if len(data) < old:
            pad = old - len(data)
            data += b"#" * (pad - 1) + b"\n" if pad > 1 else b"\n"
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)


def resolv_conf(namespace: str) -> str:
    """No DNS server on the node: names resolve from the hosts file. The resolver points at
    the pod's own closed port 53, so a name the hosts file lacks fails at once rather than
    after timeouts against servers the pod cannot reach."""
    return (f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local\n"
            "nameserver 127.0.0.1\noptions ndots:5 timeout:1 attempts:1\n")


class NodeNetwork:
    def __init__(self, state: StateDir, *, owner: int, pod_cidr: str) -> None:
        self.state = state
        self.owner = owner
        self.cidr = ipaddress.ip_network(pod_cidr)
        if not self.cidr.subnet_of(netns.ALLOWED):  # type: ignore[arg-type]
            raise SandboxError(f"pod CIDR {pod_cidr} is outside {netns.ALLOWED}")
        self.gateway = str(self.cidr.network_address + 1)
        self.node = netns.Netns(f"{netns.PREFIX}{owner}-node")
        self._lock = threading.Lock()
        self._taken: set[str] = set()

    def _namespace(self, name: str) -> Path:
        hosts_dir = network.HOSTS_ROOT / name
        self.state.record(namespace=name, hosts_dir=str(hosts_dir))
        hosts_dir.mkdir(parents=True, exist_ok=True)
        _ip("ip", "netns", "add", name)
        _ip("ip", "-n", name, "link", "set", "lo", "up")
        return hosts_dir

    def build(self) -> None:
        """The node namespace: forwarding on, redirects off (pods are /32s routed through it),
        the bridge with the gateway address."""
        hosts = self._namespace(self.node.name)
        (hosts / "hosts").write_text("127.0.0.1\tlocalhost\n")
        self.node.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                       "net.ipv4.conf.all.send_redirects=0",
                       "net.ipv4.conf.default.send_redirects=0"])
        netns.bridge(self.node, name=BRIDGE, address=f"{self.gateway}/{self.cidr.prefixlen}")

    def allocate(self) -> str:
        with self._lock:
            for offset in range(FIRST_POD, self.cidr.num_addresses - 1):
                address = str(self.cidr.network_address + offset)
                if address not in self._taken:
                    self._taken.add(address)
                    return address
        raise SandboxError(f"no address left in {self.cidr}")

    def pod_name(self, uid: str) -> str:
        return f"{netns.PREFIX}{self.owner}-{uid.replace('-', '')[:12]}"

    def attach(self, uid: str, *, namespace: str, hostname: str) -> tuple[str, str]:
        """A pod's namespace plugged into the bridge: (namespace name, pod IP)."""
        name, address = self.pod_name(uid), self.allocate()
        try:
            hosts = self._namespace(name)
            (hosts / "resolv.conf").write_text(resolv_conf(namespace))
            write_in_place(hosts / "hosts", f"127.0.0.1\tlocalhost\n{address}\t{hostname}\n")
            ns = netns.Netns(name)
            netns.attach(ns, self.node, address=f"{address}/32", bridge_name=BRIDGE)
            _ip("ip", "-n", name, "route", "add", self.gateway, "dev", "eth0", "scope", "link")
            _ip("ip", "-n", name, "route", "add", "default", "via", self.gateway, "dev", "eth0")
        except Exception:
            self.detach(name, address)
            raise
        return name, address

    def mount_points(self, paths: list[str]) -> None:
        """The (journaled) host directories volumes are bound onto."""
        network.mount_points(self.state, paths)

    def hosts_path(self, name: str) -> Path:
        return network.HOSTS_ROOT / name / "hosts"

    def detach(self, name: str, address: str) -> None:
        """Delete a pod's namespace (killing what still runs there) and give its address back."""
        netns.delete(name)
        with contextlib.suppress(OSError):
            shutil.rmtree(network.HOSTS_ROOT / name)
        with self._lock:
            self._taken.discard(address)

    def teardown(self) -> list[str]:
        return network.teardown(self.state)

    @staticmethod
    def cleanup(state: StateDir) -> list[str]:
        """What a killed agent left: its namespaces (and what runs in them), its directories."""
        return network.teardown(state) if state.root.exists() else []
