"""Certificate rotation under load: clients keep getting answers, new handshakes get the new pair.

The files are rewritten the way the cert store does it, key first and then certificate, each by
atomic rename, with a pause in between so the server's poller surely sees the mismatched pair
(new key, old certificate) and must keep serving the old one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mesh.pki import certs
from tests.support.tlsfiles import fingerprint, pem_fingerprint, write_atomic
from tests.support.webhook_server import Server, serve


class Load:
    """Two clients in threads: one opens a new TLS connection per request, one keeps its own."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.stop = threading.Event()
        self.ok = 0
        self.errors: list[str] = []
        self.seen: list[str] = []
        self.threads = [threading.Thread(target=self._fresh), threading.Thread(target=self._kept)]

    def _fresh(self) -> None:
        while not self.stop.is_set():
            try:
                with self.server.client() as client:
                    reply = client.get("/healthz")
                    self.seen.append(fingerprint(reply))
                self._count(reply)
            except Exception as err:
                self.errors.append(repr(err))

    def _kept(self) -> None:
        with self.server.client() as client:
            while not self.stop.is_set():
                try:
                    self._count(client.get("/readyz"))
                except Exception as err:
                    self.errors.append(repr(err))

    def _count(self, reply: httpx.Response) -> None:
        if reply.status_code == 200:
            self.ok += 1
        else:
            self.errors.append(f"HTTP {reply.status_code}")

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=20)


@pytest.fixture
def rotating(tmp_path: Path) -> Iterator[tuple[Server, certs.CertPair, Path]]:
    ca = certs.generate_ca("rotation test CA")
    pair = certs.generate_serving_cert(ca, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    (tmp_path / "tls.crt").write_bytes(pair.cert_pem)
    (tmp_path / "tls.key").write_bytes(pair.key_pem)
    args = ["--tls-cert", str(tmp_path / "tls.crt"), "--tls-key", str(tmp_path / "tls.key")]
    with serve(tmp_path, args, ca_file=tmp_path / "ca.crt") as server:
        yield server, ca, tmp_path


@pytest.mark.slow
def test_replacing_the_certificate_under_load_fails_no_request_and_serves_the_new_one(
    rotating: tuple[Server, certs.CertPair, Path],
) -> None:
    server, ca, where = rotating
    old = pem_fingerprint((where / "tls.crt").read_bytes())
    new_pair = certs.generate_serving_cert(ca, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    new = pem_fingerprint(new_pair.cert_pem)
    with Load(server) as load:
        time.sleep(0.5)
        write_atomic(where / "tls.key", new_pair.key_pem)
        time.sleep(2.5)  # the poller (1 s) sees a key that does not match the certificate
        assert new not in load.seen
        write_atomic(where / "tls.crt", new_pair.cert_pem)
        deadline = time.monotonic() + 10
        while new not in load.seen[-5:] and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
    assert load.errors == []
    assert old in load.seen and load.seen[-1] == new
    assert load.ok > 50
