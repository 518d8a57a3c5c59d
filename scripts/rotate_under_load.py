#!/usr/bin/env python3
"""Rotate the webhook's serving certificate again and again under load; count every handshake.

Why: the API server opens new TLS connections to the webhook all the time, and a rotation
that fails even one handshake fails a pod creation somewhere in the cluster. The test in
tests/webhook/test_rotation.py proves one rotation; this runs many over a longer time and
prints the counts.

It starts ``meshinject serve --tls-cert --tls-key`` (the harness of tests/webhook) and sends
AdmissionReviews from ``--fresh`` threads that open a new verified TLS connection per request
(a handshake each) and ``--kept`` threads on keep-alive connections. Every ``--every`` seconds
it writes a new serving certificate the way the cert store does: the key first, a pause
longer than the server's 1 s poll (so the server sees a key that does not match its
certificate, and must keep serving the old pair), then the certificate. Prints handshakes,
failed handshakes, requests and failures, the rotations the clients saw, and how long each new
certificate took to reach a handshake.

    .venv/bin/python scripts/rotate_under_load.py [--duration 120] [--every 4]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mesh.pki import certs  # noqa: E402
from tests.support.corpus import admission_review  # noqa: E402
from tests.support.tlsfiles import pem_fingerprint, write_atomic  # noqa: E402
from tests.support.webhook_server import Server, serve  # noqa: E402

POD = {"metadata": {}, "spec": {"containers": [{"name": "app", "image": "nginx"}]}}
BODY = orjson.dumps(admission_review(POD, namespace="shop", uid="rotation"))


class Load:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.first_seen: dict[str, float] = {}

    def _conn(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            "localhost", self.server.port, context=self.server.ssl_context(), timeout=10
        )

    def _review(self, conn: http.client.HTTPSConnection) -> None:
        conn.request("POST", "/mutate", BODY, {"Content-Type": "application/json"})
        reply = conn.getresponse()
        body = reply.read()
        ok = reply.status == 200 and orjson.loads(body)["response"]["allowed"] is True
        with self.lock:
            self.counts["requests"] += 1
            if not ok:
                self.errors[f"HTTP {reply.status}"] += 1

    def fresh(self) -> None:
        while not self.stop.is_set():
            conn = self._conn()
            try:
                conn.connect()  # the handshake, verified like the API server's
            except (OSError, ssl.SSLError) as err:
                with self.lock:
                    self.counts["handshakes"] += 1
                    self.errors[f"handshake {type(err).__name__}: {err}"] += 1
                continue
            assert conn.sock is not None
            der = conn.sock.getpeercert(True)  # type: ignore[attr-defined]
            seen = hashlib.sha256(der).hexdigest()
            with self.lock:
                self.counts["handshakes"] += 1
                self.first_seen.setdefault(seen, time.monotonic())
            try:
                self._review(conn)
            except (OSError, http.client.HTTPException) as err:
                with self.lock:
                    self.errors[f"request {type(err).__name__}: {err}"] += 1
            finally:
                conn.close()

    def kept(self) -> None:
        conn = self._conn()
        while not self.stop.is_set():
            try:
                self._review(conn)
            except (OSError, http.client.HTTPException) as err:
                with self.lock:
                    self.errors[f"kept {type(err).__name__}: {err}"] += 1
                conn.close()
                conn = self._conn()
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load")
    parser.add_argument("--every", type=float, default=4.0, help="seconds between rotations")
    parser.add_argument("--fresh", type=int, default=2, help="threads, a handshake per request")
    parser.add_argument("--kept", type=int, default=1, help="threads on keep-alive connections")
    args = parser.parse_args()
    ca = certs.generate_ca("rotation soak CA")
    with tempfile.TemporaryDirectory(prefix="rotate-") as tmp:
        where = Path(tmp)
        pair = certs.generate_serving_cert(ca, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
        (where / "ca.crt").write_bytes(ca.cert_pem)
        (where / "tls.crt").write_bytes(pair.cert_pem)
        (where / "tls.key").write_bytes(pair.key_pem)
        flags = ["--tls-cert", str(where / "tls.crt"), "--tls-key", str(where / "tls.key"),
                 "--log-level", "warning"]
        with serve(where, flags, ca_file=where / "ca.crt") as server:
            load = Load(server)
            threads = [threading.Thread(target=load.fresh) for _ in range(args.fresh)]
            threads += [threading.Thread(target=load.kept) for _ in range(args.kept)]
            for t in threads:
                t.start()
            written: list[tuple[str, float]] = []
            began = time.monotonic()
            try:
                while time.monotonic() - began < args.duration - args.every:
                    time.sleep(args.every - 1.5)
                    new = certs.generate_serving_cert(
                        ca, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
                    write_atomic(where / "tls.key", new.key_pem)
                    time.sleep(1.5)  # the poller (1 s) sees a key without its certificate
                    write_atomic(where / "tls.crt", new.cert_pem)
                    written.append((pem_fingerprint(new.cert_pem), time.monotonic()))
                time.sleep(3)
            finally:
                load.stop.set()
                for t in threads:
                    t.join(timeout=20)
            elapsed = time.monotonic() - began
            log = server.log()
    delays = [load.first_seen[fp] - at for fp, at in written if fp in load.first_seen]
    print(f"{elapsed:.0f} s of load: {args.fresh} threads with a handshake per request, "
          f"{args.kept} on keep-alive; a rotation every {args.every:g} s")
    print(f"rotations written {len(written)}, seen by a new handshake {len(delays)}; "
          f"certificates seen {len(load.first_seen)}")
    if delays:
        print(f"write -> first handshake with the new certificate: "
              f"max {max(delays):.2f} s, mean {sum(delays) / len(delays):.2f} s")
    print(f"handshakes {load.counts['handshakes']}, requests {load.counts['requests']}, "
          f"failures {sum(load.errors.values())}")
    for what, count in load.errors.most_common(10):
        print(f"  {count} x {what}")
    if "Traceback" in log:
        print("server log has a traceback:\n" + log[-3000:])
    return 0 if not load.errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
