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
from tests.support.envoy import need_envoy
from tests.support.spec import Spec

CLIENT_IP = "198.18.5.1"
SERVER_IP = "198.18.5.2"
HERE = Path(__file__).parent
PY = sys.executable
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
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, spec: Spec) -> None:
        """mesh-init with the spec's args (as root), then Envoy with its args as its uid/gid."""
        self.ns.run([INIT, *spec.init_args])
        log = str(self.logdir / f"envoy-{self.ns.name}.log")
        self.proxy = self.spawn(self.ns, [envoy_path(), *spec.proxy_args], uid=spec.uid,
                                gid=spec.gid, log_path=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proxy.poll() is not None:
                raise RuntimeError(f"envoy exited: {self.log()[-3000:]}")
            if self.admin("/ready", check=False).strip() == "LIVE":
                return
            time.sleep(0.05)
        raise RuntimeError(f"envoy never became ready: {self.log()[-3000:]}")

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

    def ns(self, role: str) -> netns.Netns:
        ns = netns.create(role)
        self.created.append(ns)
        return ns

    def pod(self, role: str, ip: str) -> Pod:
        return Pod(self.ns(role), ip, self.spawn, self.logdir)


@dataclass
class Mesh:
    client: Pod
    server: Pod

    def start(self, client: Spec, server: Spec) -> None:
        self.client.start(client)
        self.server.start(server)
