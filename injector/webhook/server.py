"""The webhook's server: uvicorn around the app, TLS only (the only importer of uvicorn).

The API server calls webhooks only over HTTPS, so there is no plain-HTTP mode to get wrong in
production. The TLS context follows its certificate files (:mod:`injector.webhook.tls`), so a
rotated pair is served to new connections without a restart. One uvicorn worker: the machine has
two cores and the review is CPU-bound Python, so a second process would only help if the API
server opened many connections at once; run more replicas instead.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
from dataclasses import dataclass
from typing import Any

from injector.webhook.tls import ReloadingSSLContext
from mesh.settings import MeshConfig

log = logging.getLogger("meshinject.serve")

# Longer than the API server's idle-connection timeout (90 s), so the client closes idle
# connections first and never sends a review on one we are closing.
KEEP_ALIVE_SECONDS = 120
# A request's headers must arrive this soon after its first byte (or after the connection is
# made). uvicorn times out idle keep-alive connections only, so without it a client that sends
# half a header, or nothing after the handshake, holds a connection and a descriptor forever.
HEADER_SECONDS = 10.0
# How long a stop waits for requests in flight: well inside the kubelet's default grace period
# (30 s, then SIGKILL), so the process always exits on its own and cleans up.
GRACEFUL_SECONDS = 20
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _exit_zero(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def exit_cleanly_on_stop() -> None:
    """From now on SIGTERM and SIGINT end the process with exit 0 through the normal path
    (``finally`` blocks and ``atexit`` hooks run); while uvicorn serves, its own handlers drain
    first. Call it first thing, from the main thread."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _exit_zero)


@dataclass(frozen=True)
class ServeOptions:
    """How to serve: ``meshinject serve``'s flags, as values."""

    host: str = "0.0.0.0"
    port: int = 8443
    loop: str = "auto"
    http: str = "auto"
    header_timeout: float = HEADER_SECONDS
    log_level: str = "info"


def http_protocol(choice: str, *, header_seconds: float) -> Any:
    """The uvicorn HTTP protocol: httptools (when installed and not refused) with a deadline on
    request headers; plain h11 otherwise (uvicorn's own, with no such deadline)."""
    if choice == "h11":
        return "h11"
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        if choice == "httptools":
            raise
        return "h11"

    class HeaderDeadlineProtocol(HttpToolsProtocol):
        """Closes the connection when a request's headers are not complete in time."""

        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._deadline = self.loop.call_later(header_seconds, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            self.transport.close()

    return HeaderDeadlineProtocol


def serve(
    options: ServeOptions, *, config: MeshConfig, tls: ReloadingSSLContext, stop: threading.Event
) -> int:
    """Serve the webhook until interrupted; ``stop`` is set on the way out (the cert store's
    renewal thread watches it)."""
    import uvicorn

    from injector.webhook.app import create_app

    tls.start()
    server_config = uvicorn.Config(
        create_app(config=config),
        host=options.host,
        port=options.port,
        ssl_context_factory=lambda _cfg, _default: tls.context,
        access_log=False,
        # the API server calls us directly: no X-Forwarded-* to trust, and no middleware for it
        proxy_headers=False,
        server_header=False,
        log_level=options.log_level,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        workers=1,
        loop=options.loop,
        http=http_protocol(options.http, header_seconds=options.header_timeout),
    )
    # everything built so far lives as long as the server: collect start-up's garbage once,
    # then keep the rest out of every collection
    gc.collect()
    gc.freeze()
    try:
        uvicorn.Server(server_config).run()
    finally:
        stop.set()
        tls.stop()
    return 0
