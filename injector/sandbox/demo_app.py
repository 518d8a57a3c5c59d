"""The demo's three services: plain HTTP programs that know nothing about any mesh.

Only the standard library: ``http.server`` to serve, ``http.client`` to call other services by
their Service name. No proxy settings, no mesh library, no ports but their own: whatever the
mesh does, it does from outside. Each request is logged as ``PEER METHOD PATH -> STATUS``, so
the logs show who the app thinks called it, and each call it makes as ``call TARGET -> STATUS
POD CONNECTION`` (the pod that answered, the number of the keep-alive connection it used), so
the demo can tell whether its proxy counted every one and spread them over the replicas. A
backend logs each distinct ``x-forwarded-client-cert`` header once, as ``client-cert VALUE``:
what its proxy verified of the caller's certificate.

    python -m injector.sandbox.demo_app backend --name catalog --port 8080
    python -m injector.sandbox.demo_app backend --name reviews --port 8080 --fail-every 5
    python -m injector.sandbox.demo_app backend --name slow --port 8080 --delay-ms 400
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
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple

_LOG = threading.Lock()
CLIENT_CERT_HEADER = "x-forwarded-client-cert"
MAX_CERTS_LOGGED = 16


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


def backend(name: str, port: int, fail_every: int, delay_ms: int = 0) -> None:
    """Answers every request with its pod's name; with ``fail_every=N`` every Nth gets a 503
    (flaky, but exactly); with ``delay_ms`` each answer waits that long first (slow, to show a
    timeout). Logs each distinct ``x-forwarded-client-cert`` it is given (what its
    proxy says about the caller's certificate) once."""
    counter = itertools.count(1)
    lock = threading.Lock()
    certs: set[str] = set()

    class Handler(_Handler):
        def do_GET(self) -> None:
            with lock:
                n = next(counter)
                cert = self.headers.get(CLIENT_CERT_HEADER, "")
                if cert and cert not in certs and len(certs) < MAX_CERTS_LOGGED:
                    certs.add(cert)
                    log(f"client-cert {cert.replace(' ', '')}")
            if delay_ms:
                time.sleep(delay_ms / 1000)
            if fail_every and n % fail_every == 0:
                self.answer(503, {"service": name, "error": "flaky by design"})
            else:
                self.answer(200, {"service": name, "pod": os.environ.get("HOSTNAME", "?")})

    serve(Handler, port)


class Caller:
    """One keep-alive connection to ``host:port``, reused by every call (one at a time) and
    opened again only when it breaks; each call is logged with the connection's number."""

    def __init__(self, target: str) -> None:
        self.target = target
        hostport, _, path = target.partition("/")
        host, _, port = hostport.partition(":")
        self.host, self.port, self.path = host, int(port or 80), "/" + path
        self.lock = threading.Lock()
        self.conn: http.client.HTTPConnection | None = None
        self.opened = 0

    def call(self) -> int:
        """GET the target; the status, or 599 when the connection itself failed."""
        with self.lock:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
                self.opened += 1
            try:
                self.conn.request("GET", self.path)
                response = self.conn.getresponse()
                body = response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn, status, body = None, 599, b""
            log(f"call {self.target} -> {status} {_answered_by(body)} {self.opened}")
            return status


class CallLine(NamedTuple):
    """One ``call TARGET -> STATUS POD CONNECTION`` line of a frontend's log."""

    target: str  # HOST:PORT/PATH
    status: int  # 599 when the connection itself failed
    pod: str  # the pod that answered, ``-`` when none said
    connection: int  # the keep-alive connection's number, from 1


def parse_call(line: str) -> CallLine | None:
    """The call a log line records, or None when it records none."""
    parts = line.split()
    if (len(parts) != 6 or parts[0] != "call" or parts[2] != "->"
            or not parts[3].isdigit() or not parts[5].isdigit()):
        return None
    return CallLine(parts[1], int(parts[3]), parts[4], int(parts[5]))


def _answered_by(body: bytes) -> str:
    """The pod a backend's reply names, ``-`` when it names none."""
    try:
        pod = json.loads(body).get("pod")
    except (ValueError, AttributeError):
        return "-"
    return str(pod) if pod else "-"


def frontend(port: int, calls: dict[str, str]) -> None:
    """Calls every backend per request, each over its own keep-alive connection; 200 only when
    all answered 200, else 502."""
    callers = {name: Caller(target) for name, target in calls.items()}

    class Handler(_Handler):
        def do_GET(self) -> None:
            results = {name: caller.call() for name, caller in callers.items()}
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
    b.add_argument("--delay-ms", type=int, default=0)
    f = sub.add_parser("frontend")
    f.add_argument("--port", type=int, default=8080)
    f.add_argument("--call", action="append", default=[], metavar="NAME=HOST:PORT/PATH")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.role == "backend":
        backend(args.name, args.port, args.fail_every, args.delay_ms)
    else:
        frontend(args.port, dict(item.split("=", 1) for item in args.call))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
