"""The demo's three services: plain HTTP programs that know nothing about any mesh.

Only the standard library: ``http.server`` to serve, ``http.client`` to call other services by
their Service name. No proxy settings, no mesh library, no ports but their own: whatever the
mesh does, it does from outside. Each request is logged as ``PEER METHOD PATH -> STATUS``, so
the logs show who the app thinks called it, and each call it makes as ``call TARGET -> STATUS``,
so the demo can tell whether its proxy counted every one.

    python -m injector.sandbox.demo_app backend --name catalog --port 8080
    python -m injector.sandbox.demo_app backend --name reviews --port 8080 --fail-every 5
    python -m injector.sandbox.demo_app frontend --port 8080 --call catalog=catalog:80/items ...
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_LOG = threading.Lock()


def log(line: str) -> None:
    """One line on stdout, whole, even with many request threads."""
    with _LOG:
        print(line, flush=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "demo"

    def answer(self, code: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log(f"{self.client_address[0]} {self.command} {self.path} -> {code}")

    def log_message(self, format: str, *args: object) -> None:
        return


def backend(name: str, port: int, fail_every: int) -> None:
    """Answers every request; with ``fail_every=N`` every Nth gets a 503 (flaky, but exactly)."""
    counter = itertools.count(1)
    lock = threading.Lock()

    class Handler(_Handler):
        def do_GET(self) -> None:
            with lock:
                n = next(counter)
            if fail_every and n % fail_every == 0:
                self.answer(503, {"service": name, "error": "flaky by design"})
            else:
                self.answer(200, {"service": name, "pod": os.environ.get("HOSTNAME", "?")})

    serve(Handler, port)


def call(target: str) -> int:
    """GET ``host:port/path``; the status, or 599 when the connection itself failed."""
    hostport, _, path = target.partition("/")
    host, _, port = hostport.partition(":")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=5)
    try:
        conn.request("GET", "/" + path)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return 599
    finally:
        conn.close()


def frontend(port: int, calls: dict[str, str]) -> None:
    """Calls every backend per request; 200 only when all answered 200, else 502."""

    class Handler(_Handler):
        def do_GET(self) -> None:
            results = {}
            for name, target in calls.items():
                results[name] = call(target)
                log(f"call {target} -> {results[name]}")
            ok = all(code == 200 for code in results.values())
            self.answer(200 if ok else 502, {"service": "frontend", "backends": results})

    serve(Handler, port)


def serve(handler: type[BaseHTTPRequestHandler], port: int) -> None:
    server = ThreadingHTTPServer(("0.0.0.0", port), handler)
    server.daemon_threads = True
    proxy_vars = [k for k in os.environ if k.lower() in ("http_proxy", "https_proxy", "all_proxy")]
    print(f"listening on :{port} as uid {os.getuid()}; proxy settings: {proxy_vars or 'none'}",
          flush=True)
    server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo_app")
    sub = parser.add_subparsers(dest="role", required=True)
    b = sub.add_parser("backend")
    b.add_argument("--name", required=True)
    b.add_argument("--port", type=int, default=8080)
    b.add_argument("--fail-every", type=int, default=0)
    f = sub.add_parser("frontend")
    f.add_argument("--port", type=int, default=8080)
    f.add_argument("--call", action="append", default=[], metavar="NAME=HOST:PORT/PATH")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.role == "backend":
        backend(args.name, args.port, args.fail_every)
    else:
        frontend(args.port, dict(item.split("=", 1) for item in args.call))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
