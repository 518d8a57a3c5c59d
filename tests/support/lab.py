"""Two meshed pods on one machine: namespaces, real capture by mesh-init, real Envoy.

The client pod (198.18.5.1) and the server pod (198.18.5.2) are network namespaces joined by a
veth. Each gets the capture rules from ``meshinject-init`` (run with the args the injector
renders) and an Envoy running as uid/gid 1337 with the bootstrap under test; apps run as root,
so everything they send or receive goes through the proxies.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from injector.sandbox import netns
from mesh.contract import POD_IP_ENV, POD_NAME_ENV, POD_NAMESPACE_ENV, SERVICE_ACCOUNT_ENV
from tests.support.envoy import need_envoy
from tests.support.meshcontrol import LabControl, expand_args
from tests.support.spec import Spec

NAMESPACE = "l7"
CLIENT_IP = "198.18.5.1"
SERVER_IP = "198.18.5.2"
HERE = Path(__file__).parent
PY = sys.executable
# a client sending bytes that are not HTTP (what a database client would send), in plaintext:
# ``PY -c RAW_TCP HOST PORT`` prints what came back (b'' when the connection was closed)
RAW_TCP = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 5)
s.sendall(b"\\x00\\x01binary hello\\r\\n"); s.settimeout(5)
try:
    print(repr(s.recv(100)))
except ConnectionResetError:
    print(repr(b""))
"""

INIT = str(Path(sys.executable).parent / "meshinject-init")

Spawn = Callable[..., subprocess.Popen[bytes]]


def envoy_path() -> str:
    return need_envoy()  # the real binary, not a wrapper: its pid is the proxy's pid


@dataclass
class Pod:
    ns: netns.Netns
    ip: str
    spawn: Spawn
    logdir: Path
    proxy: subprocess.Popen[bytes] | None = None
    control_plane: subprocess.Popen[bytes] | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.ns.name

    def start(self, spec: Spec, *, control: LabControl, with_control_plane: bool = True,
              ports: tuple[int, ...] = (), service_account: str = "default",
              probes: tuple[tuple[int, str], ...] = (),
              labels: dict[str, str] | None = None) -> None:
        """mesh-init with the spec's args (as root), its control plane (unless told not to),
        then Envoy with its args (``$(VAR)`` expanded as the kubelet does) as its uid/gid, with
        its token and the mesh root mounted where the pod has them; returns once Envoy is
        LIVE (configured), or at once without a control plane."""
        self.ns.run([INIT, *spec.init_args])
        uid = control.register_pod(name=self.name, namespace=NAMESPACE, ip=self.ip,
                                   annotations=spec.annotations, ports=ports,
                                   service_account=service_account, probes=probes,
                                   labels=labels)
        mounts = control.pod_files(name=self.name, namespace=NAMESPACE, uid=uid,
                                   service_account=service_account)
        if with_control_plane:
            self.start_control_plane(control)
        env = {POD_NAME_ENV: self.name, POD_NAMESPACE_ENV: NAMESPACE, POD_IP_ENV: self.ip,
               SERVICE_ACCOUNT_ENV: service_account}
        log = str(self.logdir / f"envoy-{self.ns.name}.log")
        self.proxy = self.spawn(self.ns, [envoy_path(), *expand_args(spec.proxy_args, env)],
                                uid=spec.uid, gid=spec.gid, log_path=log, mounts=mounts)
        if with_control_plane:
            self.wait_live()

    def start_control_plane(self, control: LabControl) -> None:
        self.control_plane = control.start_in(
            self.ns, self.spawn, log=self.logdir / f"controlplane-{self.ns.name}.log")

    def stop_control_plane(self) -> None:
        if self.control_plane is not None:
            netns.stop(self.control_plane)
            self.control_plane = None

    def wait_live(self, timeout: float = 15) -> None:
        assert self.proxy is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proxy.poll() is not None:
                raise RuntimeError(f"envoy exited: {self.log()[-3000:]}")
            if self.admin("/ready", check=False).strip() == "LIVE":
                return
            time.sleep(0.05)
        control = self.logdir / f"controlplane-{self.ns.name}.log"
        said = control.read_text(errors="replace")[-2000:] if control.exists() else "(none)"
        raise RuntimeError(f"envoy never became ready: {self.log()[-3000:]}\n"
                           f"its control plane's log: {said}")

    def log(self) -> str:
        path = self.logdir / f"envoy-{self.ns.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_upstream(self, port: int, *args: str) -> subprocess.Popen[bytes]:
        proc = self.spawn(self.ns, [PY, str(HERE / "upstream.py"), "--port", str(port), *args])
        self.procs.append(proc)
        self.ns.wait_for_port(port)
        return proc

    def start_envoy_app(self, port: int, *, body: str = "hello") -> None:
        """An app that speaks HTTP/1.1 and h2c alike (Envoy, answering ``body`` to anything)."""
        hcm = {
            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                     "http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "app", "codec_type": "AUTO",
            "route_config": {"virtual_hosts": [{"name": "app", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"},
                 "direct_response": {"status": 200, "body": {"inline_string": body}}}]}]},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        }
        app = {"static_resources": {"listeners": [{
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
        }]}}
        self.procs.append(self.spawn(self.ns, [
            envoy_path(), "--config-yaml", json.dumps(app), "--disable-hot-restart",
            "--concurrency", "1", "-l", "error"], uid=1000, gid=1000))
        self.ns.wait_for_port(port)

    def admin(self, path: str, *, method: str = "GET", check: bool = True) -> str:
        cmd = ["curl", "-s", "--max-time", "5", "-X", method, f"http://127.0.0.1:15000{path}"]
        return self.ns.run(cmd, check=check).stdout

    def stats(self, prefix: str = "") -> dict[str, int]:
        text = self.admin(f"/stats?usedonly&filter=^{prefix}")
        values: dict[str, int] = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().lstrip("-").isdigit():
                values[name] = int(value)
        return values

    def load(self, host: str, port: int, *args: str, timeout: float = 120) -> dict[str, Any]:
        cmd = [PY, str(HERE / "loadgen.py"), "--host", host, "--port", str(port), *args]
        out = self.ns.run(cmd, timeout=timeout).stdout
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result


@dataclass
class Lab:
    """What one test created: namespaces (deleted at teardown) and a process starter."""

    created: list[netns.Netns]
    spawn: Spawn
    logdir: Path
    control: LabControl
    node: netns.Netns | None = None  # star()'s, where every pod's link ends

    def ns(self, role: str) -> netns.Netns:
        ns = netns.create(role)
        self.created.append(ns)
        return ns

    def pod(self, role: str, ip: str) -> Pod:
        return Pod(self.ns(role), ip, self.spawn, self.logdir)

    def star(self, pods: dict[str, str]) -> dict[str, Pod]:
        """Pods (role -> address, each in a /24 of its own) around a node namespace that routes
        between them, as a cluster's node does; returns them by role."""
        node = self.node = self.ns("l7node")
        node.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        made = {}
        for role, ip in pods.items():
            pod = self.pod(role, ip)
            gateway = ip.rsplit(".", 1)[0] + ".254"
            netns.veth(pod.ns, node, a_addr=f"{ip}/24", b_addr=f"{gateway}/24", b_if=f"v{role}")
            pod.ns.run(["ip", "route", "add", "default", "via", gateway])
            made[role] = pod
        return made


@dataclass
class Mesh:
    client: Pod
    server: Pod

    control: LabControl

    def start(self, client: Spec, server: Spec) -> None:
        self.client.start(client, control=self.control)
        self.server.start(server, control=self.control)
