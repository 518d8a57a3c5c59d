"""The webhook's HTTP face: FastAPI routes around the pure ``review``.

Only HTTP lives here: reading a bounded body, timing, counting, and the probe endpoints. The
review itself is CPU-only and takes well under a millisecond for a typical pod, so it runs in the
event loop directly; a thread hop would cost more than it saves on a one-worker server. Routes
take the raw ``Request`` rather than a pydantic model: parsing the AdmissionReview is the
review's job, done once with orjson, and FastAPI's validation would double the per-request cost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from fastapi import FastAPI, Request, Response

from injector.metrics import CONTENT_TYPE, WebhookMetrics
from injector.review import bad_request, review
from injector.settings import MeshConfig

log = logging.getLogger("meshinject.webhook")

MAX_BODY = 3 * 1024 * 1024  # the API server caps objects at about 1.5 MiB; leave headroom
BODY_TIMEOUT = 10.0  # the API server's own webhook timeout is 10 s by default

_JSON = "application/json"
_REVIEW_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {_JSON: {"schema": {"type": "object", "description": "AdmissionReview v1"}}},
    },
    "responses": {
        "200": {"description": "AdmissionReview v1 with the response", "content": {_JSON: {}}},
        "400": {"description": "not an AdmissionReview v1 we can read", "content": {_JSON: {}}},
        "408": {"description": "the body did not arrive in time", "content": {_JSON: {}}},
        "413": {"description": "the body is larger than the bound", "content": {_JSON: {}}},
    },
}


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    *,
    config: MeshConfig,
    ready: Callable[[], bool] | None = None,
    max_body: int = MAX_BODY,
    body_timeout: float = BODY_TIMEOUT,
) -> FastAPI:
    """The webhook app. ``ready`` tells /readyz whether to take traffic (e.g. the serving
    certificate is in place); without it the app is ready as soon as it runs."""
    metrics = WebhookMetrics()
    app = FastAPI(title="meshinject webhook", version="1", docs_url=None, redoc_url=None)
    app.state.metrics = metrics
    app.state.config = config

    @app.post("/mutate", openapi_extra=_REVIEW_SCHEMA, response_class=Response)
    async def mutate(request: Request) -> Response:
        try:
            async with asyncio.timeout(body_timeout):
                body = await _read_body(request, max_body)
        except _TooLarge:
            out = bad_request(f"body larger than {max_body} bytes", "too-large", 413)
            metrics.record(out.outcome)
            return Response(out.body, status_code=413, media_type=_JSON)
        except TimeoutError:
            out = bad_request(f"body not received within {body_timeout:g} s", "timeout", 408)
            metrics.record("bad-request")
            return Response(out.body, status_code=408, media_type=_JSON)
        start = time.perf_counter()
        out = review(body, config=config)
        metrics.record(out.outcome, time.perf_counter() - start)
        if out.outcome in ("failed", "bad-request"):
            log.warning("%s: %s", out.outcome, out.detail)
        return Response(out.body, status_code=out.status_code, media_type=_JSON)

    @app.get("/healthz", response_class=Response)
    async def healthz() -> Response:
        return Response(b"ok", media_type="text/plain")

    @app.get("/readyz", response_class=Response)
    async def readyz() -> Response:
        if ready is None or ready():
            return Response(b"ok", media_type="text/plain")
        return Response(b"not ready", status_code=503, media_type="text/plain")

    @app.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app
