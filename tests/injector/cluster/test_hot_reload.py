"""Renewal under load: the store rewrites the files, the server's context follows them, and no
handshake fails on the way (clients verify against the caBundle, as the API server does)."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from injector.webhook import certstore
from injector.webhook.tls import ReloadingSSLContext
from tests.support.certstore import SVC, World, world
from tests.support.realcluster import LocalCluster


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.cluster
def test_renewal_under_load_swaps_the_served_cert_without_a_failed_handshake(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    with world(cluster) as here:
        _renew_under_load(here, tmp_path)


def _renew_under_load(here: World, tmp_path: Path) -> None:
    here.seed_webhook()
    opts = here.options(tmp_path / "certs")
    first = certstore.bootstrap(opts)
    reloading = ReloadingSSLContext(
        tmp_path / "certs" / "tls.crt", tmp_path / "certs" / "tls.key", interval=0.02
    ).start()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    server.daemon_threads = True
    server.socket = reloading.context.wrap_socket(server.socket, server_side=True)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    trust = ssl.create_default_context(cadata=here.ca_bundles()[0].decode())
    seen: set[bytes] = set()
    failures: list[str] = []
    handshakes: list[bytes] = []
    done = threading.Event()
    port = server.server_address[1]

    def client() -> None:
        while not done.is_set():
            try:
                with (
                    socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                    trust.wrap_socket(raw, server_hostname=f"{SVC}.{here.namespace}.svc") as tls,
                ):
                    peer = tls.getpeercert(binary_form=True)
                    assert peer is not None
                    seen.add(peer)
                    handshakes.append(peer)
                    tls.sendall(b"GET / HTTP/1.0\r\nHost: webhook\r\n\r\n")
                    answer = b""
                    while chunk := tls.recv(4096):
                        answer += chunk
                    assert answer.startswith(b"HTTP/1.0 200") and answer.endswith(b"ok"), answer
            except (OSError, AssertionError) as err:
                failures.append(repr(err))

    clients = [threading.Thread(target=client) for _ in range(4)]
    try:
        for c in clients:
            c.start()
        renewed = certstore.sync_once(opts, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=300))
        want = x509.load_pem_x509_certificate(renewed.tls_crt).public_bytes(
            serialization.Encoding.DER
        )
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)
        while want not in seen and dt.datetime.now(dt.UTC) < deadline:
            done.wait(0.05)
        done.wait(0.3)  # keep the load on a little after the swap
    finally:
        done.set()
        for c in clients:
            c.join(timeout=10)
        server.shutdown()
        server.server_close()
        reloading.stop()
    old = x509.load_pem_x509_certificate(first.tls_crt).public_bytes(serialization.Encoding.DER)
    assert failures == []
    assert len(handshakes) >= 20, "not much of a load"
    assert {old, want} <= seen
    assert reloading.reloads >= 1
