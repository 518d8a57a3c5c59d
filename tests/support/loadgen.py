"""A bounded HTTP/1.1 client for the proxy tests; prints one JSON summary line.

``--requests N --concurrency C`` sends N requests over C keep-alive connections (threads), or
``--rate R --duration S`` paces them; ``--new-connection`` opens a connection per request (as a
client without keep-alive does, so a Service VIP picks an endpoint per request), ``--method POST``
sends a small body. Every outcome is counted: a status code, or the name of
the exception when the connection failed, so a test can say "no request was lost".
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from collections import Counter


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0, help="requests/s over all threads")
    parser.add_argument("--timeout", type=float, default=10)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--new-connection", action="store_true")
    args = parser.parse_args()
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    per_thread = [args.requests // args.concurrency] * args.concurrency
    for i in range(args.requests % args.concurrency):
        per_thread[i] += 1
    interval = args.concurrency / args.rate if args.rate else 0.0
    start = time.monotonic()

    def worker(count: int, offset: float) -> None:
        conn = http.client.HTTPConnection(args.host, args.port, timeout=args.timeout)
        for n in range(count):
            if interval:
                delay = start + offset + n * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            began = time.monotonic()
            try:
                body = b"order=1" if args.method == "POST" else None
                conn.request(args.method, args.path, body=body)
                response = conn.getresponse()
                response.read()
                outcome = str(response.status)
                if args.new_connection or response.getheader("connection", "").lower() == "close":
                    conn.close()
            except (OSError, http.client.HTTPException) as err:
                outcome = type(err).__name__
                conn.close()
                conn = http.client.HTTPConnection(args.host, args.port, timeout=args.timeout)
            with lock:
                outcomes[outcome] += 1
                latencies.append(time.monotonic() - began)
        conn.close()

    threads = [
        threading.Thread(target=worker, args=(count, i * interval / args.concurrency))
        for i, count in enumerate(per_thread)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else 0.0

    print(json.dumps({"outcomes": dict(outcomes), "elapsed": time.monotonic() - start,
                      "p50": pct(0.5), "p99": pct(0.99), "max": latencies[-1] if latencies else 0}))


if __name__ == "__main__":
    main()
