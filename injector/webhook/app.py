"""The webhook's HTTP face: FastAPI around the pure ``review``.

Only HTTP lives here: reading a bounded body, timing, counting, and the probe endpoints. The
review is CPU-only and takes a fraction of a millisecond for a typical pod (about 0.5 ms with
2,000 env vars), so it runs in the event loop directly; a thread hop would cost more than it
saves on a one-worker server. ``POST /mutate`` is served ahead of FastAPI's own
machinery (see :class:`WebhookApp`): parsing the AdmissionReview is the review's job, done
once with orjson, and FastAPI's routing and request objects would add a third to its cost.
The probes and ``/metrics`` are ordinary FastAPI routes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from fastapi import FastAPI, Request, Response
from starlette.types import Receive, Scope, Send

from injector.core.review import ReviewOutcome, bad_request, review
from injector.webhook.metrics import CONTENT_TYPE, WebhookMetrics
from mesh.settings import MeshConfig

log = logging.getLogger("meshinject.webhook")

MAX_BODY = 3 * 1024 * 1024  # the API server caps objects at about 1.5 MiB; leave headroom
BODY_TIMEOUT = 10.0  # the API server's own webhook timeout is 10 s by default

_JSON = "application/json"
_JSON_BYTES = _JSON.encode()
# The contract of POST /mutate, for readers and for schemathesis: documentation only. The fast
# path never validates against it (the review checks what it reads, once), so it costs nothing.
_STR = {"type": "string"}
_GVK = {"type": "object", "properties": {"group": _STR, "version": _STR, "kind": _STR}}
_GVR = {"type": "object", "properties": {"group": _STR, "version": _STR, "resource": _STR}}
_STR_MAP = {"type": "object", "additionalProperties": _STR}
_CONTAINERS = {
    "type": "array",
    "items": {"type": "object", "required": ["name"], "properties": {"name": _STR}},
}
_POD = {
    "type": "object",
    "description": "the Pod, as the API server decoded it",
    "required": ["spec"],
    "properties": {
        "metadata": {"type": "object", "properties": {"labels": _STR_MAP, "annotations": _STR_MAP}},
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {
                "containers": {**_CONTAINERS, "minItems": 1},
                "initContainers": _CONTAINERS,
                "volumes": _CONTAINERS,
                "hostNetwork": {"type": "boolean"},
            },
        },
    },
}
_ADMISSION_REVIEW = {
    "type": "object",
    "title": "AdmissionReview",
    "description": "AdmissionReview v1 with a request (kinds other than Pod are allowed as is)",
    "required": ["apiVersion", "kind", "request"],
    "properties": {
        "apiVersion": {"enum": ["admission.k8s.io/v1"]},
        "kind": {"enum": ["AdmissionReview"]},
        "request": {
            "type": "object",
            "required": ["uid", "operation", "namespace"],  # pods are namespaced
            "properties": {
                "uid": {"type": "string", "minLength": 1},
                "kind": _GVK,
                "resource": _GVR,
                "subResource": _STR,
                "namespace": {"type": "string", "minLength": 1},
                "operation": {"enum": ["CREATE", "UPDATE", "DELETE", "CONNECT"]},
                "dryRun": {"type": "boolean"},
                "object": _POD,
            },
            # a CREATE carries what is created (a DELETE carries none)
            "if": {"required": ["operation"], "properties": {"operation": {"const": "CREATE"}}},
            "then": {"required": ["object"]},
        },
    },
}
_ADMISSION_RESPONSE = {
    "type": "object",
    "required": ["apiVersion", "kind", "response"],
    "properties": {
        "apiVersion": {"enum": ["admission.k8s.io/v1"]},
        "kind": {"enum": ["AdmissionReview"]},
        "response": {
            "type": "object",
            "required": ["uid", "allowed"],
            "properties": {
                "uid": _STR,
                "allowed": {"type": "boolean"},
                "patchType": {"enum": ["JSONPatch"]},
                "patch": {"type": "string", "contentEncoding": "base64"},
                "warnings": {"type": "array", "items": _STR},
                "status": {
                    "type": "object",
                    "properties": {"code": {"type": "integer"}, "message": _STR},
                },
            },
        },
    },
}
_ERROR = {"type": "object", "required": ["detail"], "properties": {"detail": _STR}}
_REVIEW_SCHEMA = {
    "requestBody": {"required": True, "content": {_JSON: {"schema": _ADMISSION_REVIEW}}},
    "responses": {
        "200": {
            "description": "AdmissionReview v1 with the response",
            "content": {_JSON: {"schema": _ADMISSION_RESPONSE}},
        },
        "400": {"description": "not an AdmissionReview v1 we can read",
                "content": {_JSON: {"schema": _ERROR}}},
        "408": {"description": "the body did not arrive in time",
                "content": {_JSON: {"schema": _ERROR}}},
        "413": {"description": "the body is larger than the bound",
                "content": {_JSON: {"schema": _ERROR}}},
    },
}


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class Mutator:
    """Reads a bounded body, reviews it, counts the outcome: the whole of ``POST /mutate``."""

    def __init__(
        self, *, config: MeshConfig, metrics: WebhookMetrics, max_body: int, body_timeout: float
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.max_body = max_body
        self.body_timeout = body_timeout

    async def _read(self, headers: list[tuple[bytes, bytes]], receive: Receive) -> bytes:
        for name, value in headers:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _read_in_time(self, headers: list[tuple[bytes, bytes]], receive: Receive) -> bytes:
        """The body, or TimeoutError when it has not all arrived within ``body_timeout``.

        A timer that cancels this task, not ``asyncio.timeout``: the body has nearly always
        arrived with the headers, and asyncio.timeout's bookkeeping (pure Python in 3.11) took
        5 us of each ``/mutate``, 4% of its server CPU for a realistic pod; this takes one."""
        task = asyncio.current_task()
        assert task is not None, "a request is always served by a task"
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = asyncio.get_running_loop().call_later(self.body_timeout, expire)
        try:
            return await self._read(headers, receive)
        except asyncio.CancelledError:
            if expired and task.uncancel() == 0:  # ours, not a shutdown's
                raise TimeoutError from None
            raise
        finally:
            timer.cancel()

    async def outcome(self, headers: list[tuple[bytes, bytes]], receive: Receive) -> ReviewOutcome:
        try:
            body = await self._read_in_time(headers, receive)
        except _TooLarge:
            out = bad_request(f"body larger than {self.max_body} bytes", "too-large", 413)
        except TimeoutError:
            out = bad_request(f"body not received within {self.body_timeout:g} s", status=408)
        else:
            start = time.perf_counter()
            out = review(body, config=self.config)
            self.metrics.record(out.outcome, time.perf_counter() - start)
            if out.outcome in ("failed", "bad-request"):
                log.warning("%s: %s", out.outcome, out.detail)
            return out
        self.metrics.record(out.outcome)
        return out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            out = await self.outcome(scope["headers"], receive)
        except _Disconnected:
            return  # the client went away; there is no one to answer
        headers = [(b"content-type", _JSON_BYTES), (b"content-length", b"%d" % len(out.body))]
        await send({"type": "http.response.start", "status": out.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": out.body})


class WebhookApp(FastAPI):
    """FastAPI, except that ``POST /mutate`` goes straight to the :class:`Mutator`.

    FastAPI's middleware stack (error handling, telemetry hooks that read the environment on
    every request, body limits), routing, dependency solving and Request/Response objects cost
    about as much CPU as reviewing a typical pod; the webhook's one hot path skips all of it.
    The FastAPI route stays as the documented contract (OpenAPI) and answers the same when
    ``fast_path`` is off.
    """

    mutator: Mutator
    fast_path = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.fast_path
            and scope["type"] == "http"
            and scope["path"] == "/mutate"
            and scope["method"] == "POST"
        ):
            await self.mutator(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(
    *,
    config: MeshConfig,
    ready: Callable[[], bool] | None = None,
    max_body: int = MAX_BODY,
    body_timeout: float = BODY_TIMEOUT,
) -> WebhookApp:
    """The webhook app. ``ready`` tells /readyz whether to take traffic (e.g. the serving
    certificate is in place); without it the app is ready as soon as it runs."""
    metrics = WebhookMetrics()
    mutator = Mutator(config=config, metrics=metrics, max_body=max_body, body_timeout=body_timeout)
    app = WebhookApp(title="meshinject webhook", version="1", docs_url=None, redoc_url=None)
    app.mutator = mutator

    @app.post("/mutate", openapi_extra=_REVIEW_SCHEMA, response_class=Response)
    async def mutate(request: Request) -> Response:
        """Review an AdmissionReview v1 (served by the fast path; kept for the contract)."""
        try:
            out = await mutator.outcome(request.scope["headers"], request.receive)
        except _Disconnected:
            return Response(status_code=400)
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
