"""Hostile bodies and slow clients against the real server: uvicorn, TLS, one worker.

The pure review takes the volume (test_fuzz_review); here a sample goes through everything the
API server's request goes through (TLS, HTTP parsing, the bounded body read, the metrics), and
slow clients hold connections open while others must still be served. At the end the server
is still the same process, its log has no traceback, and /metrics counted no internal failure.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from prometheus_client.parser import text_string_to_metric_families

from tests.support.corpus import admission_review
from tests.support.hostile import broken_reviews, check_answer, garbage_bodies
from tests.support.webhook_server import Server, serve

pytestmark = pytest.mark.slow

OVER_TLS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)
POD = {"metadata": {}, "spec": {"containers": [{"name": "app", "image": "nginx"}]}}
MAX_BODY = 3 * 1024 * 1024
CUT_OFF = 10.0  # the README's: half-sent headers are cut after 10 s (the server's default)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(tmp_path_factory.mktemp("fuzz"), ["--self-signed", "--log-level", "warning"]) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@OVER_TLS
@given(doc=broken_reviews())
def test_a_broken_review_over_tls_gets_a_well_formed_answer(
    client: httpx.Client, doc: dict[str, Any]
) -> None:
    reply = client.post("/mutate", content=orjson.dumps(doc))
    check_answer(reply.status_code, reply.content, doc)


@settings(OVER_TLS, max_examples=200)
@given(body=garbage_bodies())
def test_garbage_over_tls_gets_a_400_with_a_reason(client: httpx.Client, body: bytes) -> None:
    reply = client.post("/mutate", content=body)
    assert reply.status_code == 400, reply.content[:300]
    assert reply.json()["detail"]


@pytest.mark.parametrize("size", [MAX_BODY + 1, 8 * MAX_BODY])
def test_an_oversized_review_gets_413_and_the_connection_serves_the_next(
    client: httpx.Client, size: int
) -> None:
    pad = "x" * (size - 200)
    doc = admission_review({**POD, "metadata": {"annotations": {"pad": pad}}}, uid="big")
    assert client.post("/mutate", content=orjson.dumps(doc)).status_code == 413
    streamed = client.post("/mutate", content=iter([b"{" + b" " * (1 << 20)] * (size >> 20)))
    assert streamed.status_code == 413 and "larger than" in streamed.json()["detail"]
    small = admission_review(POD, namespace="shop", uid="after")
    reply = client.post("/mutate", content=orjson.dumps(small))
    assert check_answer(reply.status_code, reply.content, small) == "allowed"


class SlowClients:
    """Connections that hold the server: no TLS handshake, half a header, a body trickled."""

    def __init__(self, server: Server, *, silent: int, half_headers: int, trickle: int) -> None:
        self.server = server
        self.socks: list[socket.socket] = []
        self.trickling: list[ssl.SSLSocket] = []
        self.answers: list[bytes] = []
        self.half: dict[ssl.SSLSocket, float] = {}  # half a header sent at (monotonic)
        self.cut: list[float] = []  # seconds from half a header to the server closing
        self.half_answers: list[bytes] = []
        self.stop = threading.Event()
        for _ in range(silent):
            self.socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        for _ in range(half_headers):
            tls = self._tls()
            tls.sendall(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Ty")
            self.half[tls] = time.monotonic()
            self.socks.append(tls)
        for _ in range(trickle):
            tls = self._tls()
            tls.sendall(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\n"
                        b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
            self.trickling.append(tls)
        self.threads = [threading.Thread(target=self._trickle),
                        threading.Thread(target=self._watch_half)]
        for thread in self.threads:
            thread.start()

    def _tls(self) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.server.port), timeout=5)
        return self.server.ssl_context().wrap_socket(raw, server_hostname="localhost")

    def _trickle(self) -> None:
        """A byte a second on each, until the server answers (it must: the body has a deadline)."""
        pending = list(self.trickling)
        for s in pending:
            s.setblocking(False)
        while pending and not self.stop.wait(1.0):
            for s in list(pending):
                try:
                    self.answers.append(s.recv(4096))
                    pending.remove(s)
                except (ssl.SSLWantReadError, BlockingIOError):
                    with contextlib.suppress(ssl.SSLWantWriteError, BlockingIOError):
                        s.send(b" ")
                except OSError as err:
                    self.answers.append(repr(err).encode())
                    pending.remove(s)

    def _watch_half(self) -> None:
        """When the server closes each half-header connection: it must, at the cut-off."""
        pending = dict(self.half)
        for s in pending:
            s.setblocking(False)
        while pending and not self.stop.is_set():
            readable, _, _ = select.select(list(pending), [], [], 0.2)
            for s in readable:
                try:
                    data = s.recv(4096)
                except (ssl.SSLWantReadError, BlockingIOError):
                    continue  # a TLS record that carried no data (a session ticket)
                except OSError:
                    data = b""  # reset: closed all the same
                if data:
                    self.half_answers.append(data)
                self.cut.append(time.monotonic() - pending.pop(s))

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)
        for s in [*self.socks, *self.trickling]:
            s.close()


def test_slow_clients_hold_connections_while_others_are_served_and_trickled_bodies_time_out(
    server: Server,
) -> None:
    slow = SlowClients(server, silent=100, half_headers=100, trickle=50)
    try:
        latencies: list[float] = []
        started = time.monotonic()
        for i in range(150):  # a new TLS connection each, as a busy API server might
            doc = admission_review(POD, namespace="shop", uid=f"meanwhile-{i}")
            began = time.monotonic()
            with server.client() as c:
                reply = c.post("/mutate", content=orjson.dumps(doc))
            latencies.append(time.monotonic() - began)
            assert check_answer(reply.status_code, reply.content, doc) == "allowed"
        latencies.sort()
        assert latencies[int(0.99 * len(latencies))] < 1.0, latencies[-5:]
        deadline = started + 25  # the body and the header deadlines are 10 s
        while (len(slow.answers) < 50 or len(slow.cut) < 100) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        slow.close()
    assert len(slow.answers) == 50
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in slow.answers), {a[:40] for a in slow.answers}
    # this server runs with the default cut-off: each half header is cut after 10 s, unanswered
    assert slow.half_answers == []
    assert len(slow.cut) == 100, f"{100 - len(slow.cut)} half-header connections still open"
    assert min(slow.cut) > CUT_OFF - 0.5 and max(slow.cut) < CUT_OFF + 4, (min(slow.cut),
                                                                         max(slow.cut))


def test_the_server_survived_everything_and_counted_no_internal_failure(server: Server) -> None:
    assert server.proc.poll() is None
    with server.client() as c:
        assert c.get("/healthz").status_code == 200
        text = c.get("/metrics").text
    outcomes = {
        sample.labels.get("outcome"): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "outcome" in sample.labels and sample.name.endswith("_total")
    }
    assert outcomes.get("failed", 0) == 0, outcomes
    assert "Traceback" not in server.log(), server.log()[-3000:]

