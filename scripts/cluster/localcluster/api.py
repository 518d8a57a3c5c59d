"""A few calls to the API server and to health endpoints, with the standard library only.

kubectl is a 60 MB Go program: starting it costs a tenth of a second or more, fine for
``apply -k`` but not for polling. These calls use the admin's client certificate.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Callable
from typing import Any

from localcluster.state import State


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def admin_context(state: State) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(state.pki / "ca.crt"))
    ctx.load_cert_chain(str(state.pki / "admin.crt"), str(state.pki / "admin.key"))
    return ctx


def call(state: State, method: str, path: str, body: Any = None, *,
         content_type: str = "application/json", timeout: float = 10) -> Any:
    """One request to the API server as admin; the decoded JSON (or text) answer."""
    conn = http.client.HTTPSConnection(
        "127.0.0.1", state.ports.apiserver, context=admin_context(state), timeout=timeout
    )
    try:
        payload = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=payload, headers={"Content-Type": content_type})
        response = conn.getresponse()
        raw = response.read().decode()
    finally:
        conn.close()
    try:
        data: Any = json.loads(raw)
    except ValueError:
        data = raw
    if response.status >= 400:
        message = data.get("message", raw) if isinstance(data, dict) else raw
        raise ApiError(response.status, str(message)[:500])
    return data


def healthy(port: int, path: str, *, ctx: ssl.SSLContext | None = None, host: str = "127.0.0.1",
            timeout: float = 2) -> bool:
    """GET ``path`` answers 200 (TLS with ``ctx``, or with no verification when None: the
    controller-manager's and scheduler's self-signed serving certificates)."""
    if ctx is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return _answers_200(http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout),
                        path)


def plain_healthy(port: int, path: str) -> bool:
    return _answers_200(http.client.HTTPConnection("127.0.0.1", port, timeout=2), path)


def _answers_200(conn: http.client.HTTPConnection, path: str) -> bool:
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def wait_for(what: str, check: Callable[[], bool], *, timeout: float,
             alive: Callable[[], str | None] | None = None) -> float:
    """Poll ``check`` until true; returns the seconds it took. ``alive`` returns a reason when
    the process being waited for has died (its log tail), which ends the wait at once."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if alive is not None and (why := alive()):
            raise RuntimeError(f"{what}: {why}")
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"{what}: not within {timeout:g} s")
        time.sleep(0.1)
