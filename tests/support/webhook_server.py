"""A real ``meshinject serve`` in a subprocess, and a client that verifies it like the API server.

The API server dials the Service's DNS name and checks the serving certificate against the
webhook's caBundle, hostname included; the client here does the same with the CA the server
printed (``--self-signed``) or the test made (``--tls-cert``), dialing ``localhost``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.paths import REPO
from tests.support.processes import stop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int
    ca_file: Path
    log_file: Path

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.check_hostname = True
        return ctx

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.ssl_context(), timeout=10, **kwargs)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""


@contextlib.contextmanager
def serve(workdir: Path, args: Sequence[str], *, ca_file: Path | None = None) -> Iterator[Server]:
    """Start ``meshinject serve ARGS`` on a free port; stop it on exit, even after a failure.

    With ``--self-signed`` the CA path is read from the server's first line of output. The
    server gets a temporary directory of its own; once stopped (SIGTERM, as the kubelet stops
    it), it must have exited 0 and left nothing there (``--self-signed`` keeps its key there).
    """
    port = free_port()
    log_file = workdir / f"serve-{port}.log"
    tmp = workdir / f"tmp-{port}"
    tmp.mkdir()
    out = log_file.open("w")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "injector.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *args,
        ],
        cwd=REPO,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        server = Server(proc, port, ca_file or Path(), log_file)
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}:\n{server.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready in 30 s:\n{server.log()}")
            if ca_file is None:
                for line in server.log().splitlines():
                    if line.startswith("meshinject: CA certificate: "):
                        server.ca_file = Path(line.split(": ", 2)[2])
            if server.ca_file != Path() and _healthy(server):
                break
            time.sleep(0.05)
        yield server
    finally:
        stop(proc)
        out.close()
    assert proc.returncode == 0, f"server exited {proc.returncode}:\n{server.log()[-3000:]}"
    assert_nothing_left(tmp)


def assert_nothing_left(tmp: Path) -> None:
    """A stopped server's temporary directory must be empty: no key, no CA file."""
    left = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))
    assert not left, f"the stopped server left {left} in {tmp}"


def _healthy(server: Server) -> bool:
    try:
        with server.client() as c:
            return c.get("/healthz").status_code == 200
    except (httpx.TransportError, ssl.SSLError, OSError):
        return False
