"""The app in-process, for what a real socket makes slow or awkward: stalled and vanished
clients, the documented route behind the fast path, readiness."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import FastAPI

from injector.webhook.app import create_app
from mesh.settings import MeshConfig
from tests.support.corpus import admission_review, corpus_pods

Message = dict[str, Any]
BODY = orjson.dumps(admission_review(corpus_pods()[0][1], uid="same"))


def scope(method: str, path: str, body: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8443),
        "headers": [(b"host", b"localhost"), (b"content-length", str(len(body)).encode())],
    }


def call(app: Any, method: str, path: str, messages: list[Message]) -> list[Message]:
    """Run one request through ``app``; ``messages`` are what receive() returns, in order,
    after which it waits forever (a client that stopped sending)."""
    sent: list[Message] = []

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    body = b"".join(m.get("body", b"") for m in messages)
    asyncio.run(asyncio.wait_for(app(scope(method, path, body), receive, send), timeout=10))
    return sent


def status_and_body(sent: list[Message]) -> tuple[int, bytes]:
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_a_body_that_stops_arriving_gets_408_and_frees_the_worker() -> None:
    app = create_app(config=MeshConfig(), body_timeout=0.2)
    sent = call(
        app, "POST", "/mutate", [{"type": "http.request", "body": BODY[:10], "more_body": True}]
    )
    status, body = status_and_body(sent)
    assert status == 408
    assert b"not received within 0.2 s" in body


def test_a_request_cancelled_while_its_body_is_awaited_stays_cancelled() -> None:
    """A server shutting down cancels the request's task: that is no 408 of the body's
    deadline, and nothing is answered."""
    app = create_app(config=MeshConfig(), body_timeout=5)
    sent: list[Message] = []

    async def receive() -> Message:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    async def cancelled() -> bool:
        task = asyncio.create_task(app(scope("POST", "/mutate", BODY), receive, send))
        await asyncio.sleep(0.05)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(cancelled())
    assert sent == []


def test_a_client_that_goes_away_gets_no_answer_and_breaks_nothing() -> None:
    app = create_app(config=MeshConfig())
    assert call(app, "POST", "/mutate", [{"type": "http.disconnect"}]) == []


def test_a_body_arriving_in_pieces_is_reviewed_whole() -> None:
    app = create_app(config=MeshConfig())
    pieces = [BODY[i : i + 100] for i in range(0, len(BODY), 100)]
    messages = [{"type": "http.request", "body": p, "more_body": True} for p in pieces]
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    status, body = status_and_body(call(app, "POST", "/mutate", messages))
    assert status == 200
    assert orjson.loads(body)["response"]["patchType"] == "JSONPatch"


def test_the_documented_route_answers_exactly_like_the_fast_path() -> None:
    fast_app = create_app(config=MeshConfig())
    fast = status_and_body(
        call(fast_app, "POST", "/mutate", [{"type": "http.request", "body": BODY}])
    )
    routed_app = create_app(config=MeshConfig())
    routed_app.fast_path = False
    routed = status_and_body(
        call(routed_app, "POST", "/mutate", [{"type": "http.request", "body": BODY}])
    )
    assert fast == routed
    assert fast[0] == 200


def test_the_openapi_description_has_mutate_and_the_probes() -> None:
    app: FastAPI = create_app(config=MeshConfig())
    paths = app.openapi()["paths"]
    assert {"/mutate", "/healthz", "/readyz", "/metrics"} <= set(paths)
    assert {"200", "400", "408", "413"} <= set(paths["/mutate"]["post"]["responses"])


def test_readyz_says_not_ready_until_the_check_passes() -> None:
    ready = False
    app = create_app(config=MeshConfig(), ready=lambda: ready)
    assert status_and_body(call(app, "GET", "/readyz", []))[0] == 503
    ready = True
    assert status_and_body(call(app, "GET", "/readyz", [])) == (200, b"ok")
