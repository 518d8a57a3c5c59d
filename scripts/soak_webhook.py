#!/usr/bin/env python3
"""Soak the admission webhook: N reviews at a steady rate over verified TLS, memory watched.

Why: a webhook that leaks a little per request, or fails one request in ten thousand, passes
every unit test and then takes a cluster's pod creations down after a week. So this starts
``meshinject serve --self-signed`` in its own process (the harness of tests/webhook), sends
``--requests`` AdmissionReviews cycling through the shared corpus (injected, skipped and denied
pods, other kinds) at ``--rate`` per second over ``--connections`` keep-alive connections that
verify the certificate like the API server, and checks every answer: HTTP 200, the same uid,
and the same decision (allowed or not, patch or not) the pure ``review`` gives in-process.

It prints the server's resident memory (VmRSS of its PID) before the first request, after a
warm-up (the first requests import and cache lazily), every ``--interval`` seconds, and at
the end; then the counts. Prints figures; asserts nothing (exit 1 if any request failed).

    .venv/bin/python scripts/soak_webhook.py [--requests 100000] [--rate 500] [--connections 4]
"""

from __future__ import annotations

import argparse
import copy
import http.client
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from injector.core.review import review  # noqa: E402
from mesh.settings import MeshConfig  # noqa: E402
from tests.support.corpus import admission_review, corpus_pods  # noqa: E402
from tests.support.webhook_server import Server, serve  # noqa: E402

Expected = tuple[int, bool | None, bool]  # HTTP status, allowed, has a patch


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def _decision(status: int, body: bytes) -> Expected:
    if status != 200:
        return status, None, False
    response = orjson.loads(body)["response"]
    return status, bool(response["allowed"]), "patch" in response


def bodies(count: int) -> list[tuple[bytes, str, Expected]]:
    """A mix as a cluster sends it: corpus pods to inject, opted-out, bad annotation, a Service."""
    config = MeshConfig()
    pods = [pod for _, pod in corpus_pods()][: count or None]
    docs = []
    for i, pod in enumerate(pods):
        docs.append(admission_review(pod, namespace="shop", uid=f"soak-{i}"))
    opted_out = copy.deepcopy(pods[0])
    opted_out["metadata"].setdefault("labels", {})["meshinject.io/inject"] = "false"
    docs.append(admission_review(opted_out, namespace="shop", uid="soak-out"))
    bad = copy.deepcopy(pods[0])
    bad["metadata"].setdefault("annotations", {})["proxy.meshinject.io/cpu"] = "lots"
    docs.append(admission_review(bad, namespace="shop", uid="soak-bad"))
    docs.append(admission_review({"metadata": {}}, kind="Service", uid="soak-svc"))
    out = []
    for doc in docs:
        raw = orjson.dumps(doc)
        done = review(raw, config=config)
        out.append((raw, doc["request"]["uid"], _decision(done.status_code, done.body)))
    return out


class Soak:
    def __init__(self, server: Server, mix: list[tuple[bytes, str, Expected]], args: Any) -> None:
        self.server, self.mix, self.args = server, mix, args
        self.sent = 0
        self.outcomes: Counter[str] = Counter()
        self.failures: list[str] = []
        self.lock = threading.Lock()

    def worker(self, index: int, count: int, start: float) -> None:
        interval = self.args.connections / self.args.rate
        offset = index * interval / self.args.connections
        conn = self._connect()
        for n in range(count):
            delay = start + offset + n * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            raw, uid, want = self.mix[(n * self.args.connections + index) % len(self.mix)]
            try:
                conn.request("POST", "/mutate", raw, {"Content-Type": "application/json"})
                reply = conn.getresponse()
                got = _decision(reply.status, reply.read())
                outcome = "ok" if got == want else f"wrong {got} != {want} for {uid}"
            except (OSError, http.client.HTTPException) as err:
                outcome = f"{type(err).__name__}: {err}"
                conn.close()
                conn = self._connect()
            with self.lock:
                self.sent += 1
                self.outcomes["ok" if outcome == "ok" else "failed"] += 1
                if outcome != "ok" and len(self.failures) < 20:
                    self.failures.append(outcome)
        conn.close()

    def _connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            "localhost", self.server.port, context=self.server.ssl_context(), timeout=10
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=500.0, help="requests/s, all connections")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--interval", type=float, default=15.0, help="seconds between samples")
    parser.add_argument("--pods", type=int, default=0, help="corpus pods in the mix (0: all)")
    args = parser.parse_args()
    mix = bodies(args.pods)
    print(f"mix: {len(mix)} reviews, {sum(len(b) for b, _, _ in mix) // len(mix)} bytes average")
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, serve(
        Path(tmp), ["--self-signed", "--log-level", "warning"]
    ) as server:
        pid = server.proc.pid
        print(f"server pid {pid}; VmRSS at start (before any review): {rss_kib(pid)} KiB")
        soak = Soak(server, mix, args)
        per = [args.requests // args.connections] * args.connections
        for i in range(args.requests % args.connections):
            per[i] += 1
        start = time.monotonic()
        threads = [
            threading.Thread(target=soak.worker, args=(i, n, start), daemon=True)
            for i, n in enumerate(per)
        ]
        for t in threads:
            t.start()
        samples: list[tuple[float, int, int]] = []
        warm = min(2000, args.requests // 10)
        while any(t.is_alive() for t in threads):
            time.sleep(0.2)
            now = time.monotonic() - start
            if not samples and soak.sent >= warm:
                samples.append((now, soak.sent, rss_kib(pid)))
                print(f"t={now:6.1f}s sent={soak.sent:7d} VmRSS={samples[-1][2]} KiB (warm)")
            elif samples and now - samples[-1][0] >= args.interval:
                samples.append((now, soak.sent, rss_kib(pid)))
                print(f"t={now:6.1f}s sent={soak.sent:7d} VmRSS={samples[-1][2]} KiB", flush=True)
        elapsed = time.monotonic() - start
        end_rss = rss_kib(pid)
        print(f"t={elapsed:6.1f}s sent={soak.sent:7d} VmRSS={end_rss} KiB (end)")
        log = server.log()
    warm_rss = samples[0][2] if samples else end_rss
    print(
        f"requests {soak.sent}, ok {soak.outcomes['ok']}, failed {soak.outcomes['failed']}, "
        f"{soak.sent / elapsed:.0f} req/s achieved over {elapsed:.1f} s"
    )
    print(f"VmRSS warm -> end: {warm_rss} -> {end_rss} KiB ({end_rss - warm_rss:+d} KiB)")
    for failure in soak.failures:
        print(f"  failure: {failure}")
    if "Traceback" in log:
        print("server log has a traceback:\n" + log[-3000:])
    return 0 if soak.outcomes["failed"] == 0 and soak.sent == args.requests else 1


if __name__ == "__main__":
    raise SystemExit(main())
