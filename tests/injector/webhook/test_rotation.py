"""Certificate rotation under load, against the real ``meshinject serve``: clients keep getting
answers, new handshakes get the new pair, and no handshake fails while the server reloads.

The files are rewritten the way the cert store does it, key first and then certificate, each by
atomic rename. The new key file is a FIFO the test feeds (:class:`KeyFeeder`): every time the
server reads it (its poll, each second, and each load of the pair) the read waits while the test
makes a verified handshake. So the test handshakes at exactly the moments a reload is under way:
while the server holds a key that does not match its certificate, and while it loads the new
pair. A reload that changed the live SSL context in place (``load_cert_chain`` on it) has the new
certificate without its key at that moment, and the handshake fails, every time.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from mesh.pki import certs
from tests.support.tlsfiles import (
    KeyFeeder,
    fingerprint,
    handshake,
    pem_fingerprint,
    write_atomic,
)
from tests.support.webhook_server import Server, serve

MAX_REQUESTS = 20_000  # per load thread: the run is bounded in count as well as in time


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
        for _ in range(MAX_REQUESTS):
            if self.stop.is_set():
                return
            try:
                with self.server.client() as client:
                    reply = client.get("/healthz")
                    self.seen.append(fingerprint(reply))
                self._count(reply)
            except Exception as err:
                self.errors.append(repr(err))

    def _kept(self) -> None:
        with self.server.client() as client:
            for _ in range(MAX_REQUESTS):
                if self.stop.is_set():
                    return
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


def wait_for(what: str, ready: Callable[[], bool], *, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.02)


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
def test_a_rotation_under_load_fails_no_handshake_not_even_during_the_reload(
    rotating: tuple[Server, certs.CertPair, Path],
) -> None:
    server, ca, where = rotating
    old = pem_fingerprint((where / "tls.crt").read_bytes())
    new_pair = certs.generate_serving_cert(ca, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    new = pem_fingerprint(new_pair.cert_pem)
    trust = ssl.create_default_context(cafile=str(server.ca_file))
    probes: list[str] = []
    feeder = KeyFeeder(where / "tls.key", new_pair.key_pem, reader=server.proc.pid,
                       on_read=lambda: probes.append(handshake(server.port, trust)))
    with Load(server) as load:
        wait_for("the load is answered", lambda: load.ok >= 20)
        feeder.start()  # the new key first: the server's pair no longer matches
        try:
            # the server's poll reads the key (the pair changed), then loads it and must keep
            # the old pair: that load fails, the key does not match the certificate
            wait_for("the server reads the new key twice", lambda: feeder.reads >= 2)
            assert set(probes) == {old}, probes
            write_atomic(where / "tls.crt", new_pair.cert_pem)
            # the next poll loads the new pair; the one after reads it again, through the new one
            wait_for("a handshake during a read of the key gets the new certificate",
                     lambda: new in probes or any(p.startswith("failed") for p in probes))
        finally:
            feeder.stop(final=new_pair.key_pem)
        wait_for("the load gets the new certificate", lambda: new in load.seen[-5:])
    assert [p for p in probes if p not in (old, new)] == [], probes
    assert load.errors == []
    assert old in load.seen and load.seen[-1] == new
    assert load.ok > 50
