"""Renewal under load, through the real ``meshinject serve --cert-secret`` against the real API
server: the store renews the Secret and rewrites the files, the running server's context follows
them, and no handshake fails on the way (clients verify against the caBundle under the Service's
name, as the API server does). The renewal is another replica's: a cert store in the test
process, with a clock a year on, renews the Secret and writes the serving pair into the server's
``--cert-dir``."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from injector.webhook import certstore
from tests.support.certstore import SVC, World, serve_with_cert_secret, world
from tests.support.realcluster import LocalCluster


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


@pytest.mark.cluster
def test_renewal_under_load_swaps_the_served_cert_without_a_failed_handshake(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    with world(cluster) as here:
        _renew_under_load(here, tmp_path)


def _renew_under_load(here: World, tmp_path: Path) -> None:
    here.seed_webhook()
    host = f"{SVC}.{here.namespace}.svc"
    with serve_with_cert_secret(here, tmp_path, "--log-level=warning") as port:
        first = _der((tmp_path / "certs" / "tls.crt").read_bytes())
        trust = ssl.create_default_context(cadata=here.ca_bundles()[0].decode())
        seen: set[bytes] = set()
        failures: list[str] = []
        handshakes: list[bytes] = []
        done = threading.Event()

        def client() -> None:
            while not done.is_set() and len(handshakes) < 20_000:
                try:
                    with (
                        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                        trust.wrap_socket(raw, server_hostname=host) as tls,
                    ):
                        peer = tls.getpeercert(binary_form=True)
                        assert peer is not None
                        seen.add(peer)
                        handshakes.append(peer)
                        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: webhook\r\n"
                                    b"Connection: close\r\n\r\n")
                        answer = b""
                        while chunk := tls.recv(4096):
                            answer += chunk
                        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok"), answer
                except (OSError, AssertionError) as err:
                    failures.append(repr(err))

        clients = [threading.Thread(target=client) for _ in range(4)]
        try:
            for c in clients:
                c.start()
            later = dt.datetime.now(dt.UTC) + dt.timedelta(days=300)
            renewed = certstore.sync_once(here.options(tmp_path / "certs"), now=later)
            want = _der(renewed.tls_crt)
            assert want != first
            deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)
            while want not in seen and dt.datetime.now(dt.UTC) < deadline:
                done.wait(0.05)
            done.wait(0.3)  # keep the load on a little after the swap
        finally:
            done.set()
            for c in clients:
                c.join(timeout=10)
    assert failures == []
    assert len(handshakes) >= 20, "not much of a load"
    assert {first, want} <= seen
