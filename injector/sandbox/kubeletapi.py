"""The part of the kubelet's API the sandbox node serves: container logs, and a health check.

``kubectl logs POD -c CONTAINER`` asks the API server, which calls the pod's node at
``https://<InternalIP>:<kubeletEndpoint port>/containerLogs/NS/POD/CONTAINER`` (through its
``cluster`` egress, so through the node's CONNECT proxy into the node namespace, where this
listens). TLS both ways: the node serves a certificate from the cluster CA, and only a client
certificate from that CA is answered, and only the API server's kubelet client (or an admin,
group ``system:masters``) is allowed; anyone else gets 403, as a kubelet's authorizer would.
The query is the kubelet's: ``follow``, ``previous``, ``tailLines``, ``limitBytes``,
``sinceSeconds`` (by the log file's age), ``timestamps`` (ignored: the logs carry none).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from injector.sandbox import nssocket

# (namespace, pod, container, previous) -> (log file, still running) or None
Finder = Callable[[str, str, str, bool], tuple[Path, Callable[[], bool]] | None]
ALLOWED_USERS = ("kube-apiserver-kubelet-client",)
ALLOWED_GROUPS = ("system:masters",)


def tail(data: bytes, lines: int) -> bytes:
    if lines < 0:
        return data
    if lines == 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


def _subject(cert: dict[str, Any] | None) -> tuple[str, list[str]]:
    names = [pair for rdn in (cert or {}).get("subject", ()) for pair in rdn]
    return (next((v for k, v in names if k == "commonName"), ""),
            [v for k, v in names if k == "organizationName"])


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def setup(self) -> None:
        """The TLS handshake here, in the request's thread, not in the accepting one."""
        self.request.settimeout(30)
        self.request.do_handshake()
        self.request.settimeout(None)
        super().setup()

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
            super().handle()

    def _plain(self, code: int, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path in ("/healthz", "/readyz", "/livez"):
            self._plain(200, "ok")
            return
        user, groups = _subject(self.connection.getpeercert())
        if user not in ALLOWED_USERS and not set(groups) & set(ALLOWED_GROUPS):
            self._plain(403, f"Forbidden (user={user}, verb=get, resource=nodes, "
                             "subresource=log)")
            return
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if len(parts) != 4 or parts[0] != "containerLogs":
            self._plain(404, f"{url.path}: the sandbox node serves /containerLogs only")
            return
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        previous = query.get("previous") == "true"
        found = self.server.finder(parts[1], parts[2], parts[3], previous)
        if found is None:
            self._plain(404, f'container "{parts[3]}" in pod "{parts[2]}" is not known to '
                             "this node")
            return
        path, running = found
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            if previous:
                self._plain(400, f'previous terminated container "{parts[3]}" in pod '
                                 f'"{parts[2]}" not found')
                return
            data = b""
        if "sinceSeconds" in query and path.exists() and (
                time.time() - path.stat().st_mtime > int(query["sinceSeconds"])):
            data = b""
        data = tail(data, int(query.get("tailLines", "-1")))
        limit = int(query.get("limitBytes", "0") or 0)
        if limit:
            data = data[:limit]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(data)
        if query.get("follow") == "true" and not previous and not limit:
            self._follow(path, path.stat().st_size if path.exists() else 0, running)

    def _follow(self, path: Path, offset: int, running: Callable[[], bool]) -> None:
        """Send what is appended until the container stops or the caller goes away."""
        while not self.server.stopping.is_set():
            with contextlib.suppress(FileNotFoundError), path.open("rb") as log:
                log.seek(offset)
                chunk = log.read()
                if chunk:
                    offset += len(chunk)
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    continue
            if not running():
                return
            time.sleep(0.2)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    finder: Finder
    stopping: threading.Event


class KubeletApi:
    def __init__(self, *, node_ns: str, address: str, port: int, cert: Path, key: Path,
                 client_ca: Path, finder: Finder) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        ctx.load_verify_locations(str(client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
        server = _Server((address, port), _Handler, bind_and_activate=False)
        server.socket.close()
        raw = nssocket.socket_in(node_ns)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        raw.bind((address, port))
        raw.listen(64)
        server.socket = ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        server.finder, server.stopping = finder, threading.Event()
        self.server = server
        self._thread = threading.Thread(target=server.serve_forever, name="kubelet-api",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.stopping.set()
        self.server.shutdown()
        self.server.server_close()
