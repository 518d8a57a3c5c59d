"""AdmissionReview in, AdmissionReview out: the webhook without HTTP.

``review`` turns the bytes the API server POSTs into the bytes we answer, calling the pure
injector in between; ``app.py`` only moves bytes and counts outcomes. Keeping this pure makes
every answer testable without a server, and keeps HTTP-framework costs out of the hot path.

Answers, by case:

- a body that is not an AdmissionReview v1 for us to read: HTTP 400 with the reason; the API
  server shows it in its "failed calling webhook" error.
- anything but a Pod CREATE (other kinds, subresources, UPDATE/DELETE): allowed, no patch;
  the webhook's rules should not send these, but answering them harmlessly is cheap.
- a pod the policy skips: allowed, no patch, the reason in ``warnings`` (kubectl prints it).
- a bad annotation value: denied, status code 400, message naming annotation and value.
- a pod to inject: allowed with a base64 JSONPatch, and in ``warnings`` any setting that will
  not do what the user expects (``injector.advice``).
- an unexpected error in the injector: denied, status code 500. We fail closed, like the
  webhook's ``failurePolicy: Fail``: a pod in a meshed namespace that silently started without
  its proxy would bypass the mesh's policies unnoticed, while a denied pod is loud (its
  controller retries and the event names the bug), and only opted-in namespaces are affected.

HTTP is 200 for every request we could read (never 5xx): the API server treats a non-200 as
the webhook failing, and the decision belongs in the AdmissionReview.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any

import orjson
import pybase64

from injector.core.patch import patch_json
from mesh.errors import MeshError, ReviewError
from mesh.settings import MeshConfig

API_VERSION = "admission.k8s.io/v1"
_WARNING_LIMIT = 250  # the API server may truncate longer warnings


@dataclass(frozen=True)
class ReviewOutcome:
    """What to answer, and the label ``/metrics`` counts it under."""

    status_code: int
    body: bytes
    outcome: str  # injected, unchanged, ignored, skipped:<code>, denied, failed, bad-request
    detail: str = ""  # for the log: the skip reason, denial or error


def _need(value: Any, typ: type | tuple[type, ...], field: str, what: str) -> Any:
    if not isinstance(value, typ):
        raise ReviewError(f"{field} must be {what}, got {_show(value)}")
    return value


_REPR = reprlib.Repr()  # bounded: a value nested 1,000 deep must not exhaust the stack
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 80, 80


def _show(value: Any) -> str:
    text = "nothing" if value is None else f"{type(value).__name__} {_REPR.repr(value)}"
    return text if len(text) <= 80 else text[:77] + "..."


def _string_map(value: Any, field: str) -> None:
    if value is None:
        return
    _need(value, dict, field, "a mapping of strings")
    for k, v in value.items():
        if not isinstance(v, str):
            raise ReviewError(f"{field}[{k!r}] must be a string, got {_show(v)}")


def _check_pod(pod: Any) -> dict[str, Any]:
    """The shape the API server guarantees (it decoded the pod into a typed struct), checked so
    that a hand-made or hostile body gets a 400 instead of a crash deep in the injector."""
    checked: dict[str, Any] = _need(pod, dict, "request.object", "a Pod object")
    meta = checked.get("metadata", {})
    _need(meta, dict, "request.object.metadata", "an object")
    _string_map(meta.get("labels"), "request.object.metadata.labels")
    _string_map(meta.get("annotations"), "request.object.metadata.annotations")
    spec = _need(checked.get("spec"), dict, "request.object.spec", "an object")
    for key in ("containers", "initContainers"):
        items = spec.get(key, [] if key == "initContainers" else None)
        _need(items, list, f"request.object.spec.{key}", "a list")
        for i, c in enumerate(items):
            _need(c, dict, f"request.object.spec.{key}[{i}]", "a container object")
            _need(c.get("name"), str, f"request.object.spec.{key}[{i}].name", "a string")
    if not spec["containers"]:
        raise ReviewError("request.object.spec.containers must not be empty")
    for key in ("volumes", "ephemeralContainers"):  # matched by name when re-injecting
        items = _need(spec.get(key, []), list, f"request.object.spec.{key}", "a list")
        for i, item in enumerate(items):
            _need(item, dict, f"request.object.spec.{key}[{i}]", "an object")
            _need(item.get("name"), str, f"request.object.spec.{key}[{i}].name", "a string")
    host = spec.get("hostNetwork", False)
    _need(host, bool, "request.object.spec.hostNetwork", "a boolean")
    return checked


def _answer(uid: str, outcome: str, detail: str = "", **response: Any) -> ReviewOutcome:
    body = orjson.dumps(
        {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": {"uid": uid, **response}}
    )
    return ReviewOutcome(200, body, outcome, detail)


def bad_request(reason: str, outcome: str = "bad-request", status: int = 400) -> ReviewOutcome:
    """A request we cannot review: an HTTP error with the reason, as JSON."""
    return ReviewOutcome(status, orjson.dumps({"detail": reason}), outcome, reason)


def _is_pod_create(request: dict[str, Any]) -> bool:
    kind = request.get("kind")
    resource = request.get("resource")
    kind_name = kind.get("kind") if isinstance(kind, dict) else None
    resource_name = resource.get("resource") if isinstance(resource, dict) else None
    if kind_name != "Pod" and resource_name != "pods":
        return False
    if request.get("subResource"):
        return False
    return request.get("operation") == "CREATE"


def _parse(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise ReviewError(f"body is not JSON: {err}") from None
    _need(doc, dict, "body", "an AdmissionReview object")
    if doc.get("apiVersion") != API_VERSION:
        raise ReviewError(f"apiVersion must be {API_VERSION}, got {_show(doc.get('apiVersion'))}")
    if doc.get("kind") != "AdmissionReview":
        raise ReviewError(f"kind must be AdmissionReview, got {_show(doc.get('kind'))}")
    request = _need(doc.get("request"), dict, "request", "an object")
    uid = _need(request.get("uid"), str, "request.uid", "a string")
    if not uid:
        raise ReviewError("request.uid must not be empty")
    _need(request.get("operation"), str, "request.operation", "a string")
    return request  # type: ignore[no-any-return]


def _namespace(request: dict[str, Any], pod: dict[str, Any]) -> str:
    """The request's namespace: on CREATE the pod's own metadata.namespace may be empty."""
    ns = request.get("namespace")
    if ns is None or ns == "":
        ns = pod.get("metadata", {}).get("namespace")
    return _need(ns, str, "request.namespace", "a namespace name")  # type: ignore[no-any-return]


def review(body: bytes, *, config: MeshConfig) -> ReviewOutcome:
    """Answer one AdmissionReview body; never raises.

    A bug of ours while reading the request (any exception but ReviewError) still gets a 400,
    labelled ``failed`` so it is counted as ours and not the caller's.
    """
    try:
        request = _parse(body)
        uid: str = request["uid"]
        if not _is_pod_create(request):
            return _answer(uid, "ignored", allowed=True)
        pod = _check_pod(request.get("object"))
        namespace = _namespace(request, pod)
    except ReviewError as err:
        return bad_request(str(err))
    except Exception as err:
        return bad_request(f"cannot read the review ({_internal(err)})", "failed")
    try:
        return _decide(uid, pod, namespace=namespace, config=config)
    except MeshError as err:  # AnnotationError among them: the manifest needs fixing
        return _deny(uid, "denied", 400, str(err))
    except Exception as err:  # fail closed; see the module docstring
        return _deny(uid, "failed", 500, f"meshinject could not inject this pod ({_internal(err)})")


def _decide(uid: str, pod: dict[str, Any], *, namespace: str, config: MeshConfig) -> ReviewOutcome:
    decision, ops, advice = patch_json(pod, config=config, namespace=namespace)
    if not decision.inject:
        warning = _warning(f"not injected: {decision.reason}")
        return _answer(
            uid, f"skipped:{decision.code}", decision.reason, allowed=True, warnings=[warning]
        )
    extra: dict[str, Any] = {}
    if advice:
        extra["warnings"] = [_warning(text) for text in advice]
    if ops == b"[]":
        return _answer(uid, "unchanged", "already injected", allowed=True, **extra)
    patch = pybase64.b64encode(ops).decode("ascii")
    return _answer(uid, "injected", allowed=True, patchType="JSONPatch", patch=patch, **extra)


def _warning(text: str) -> str:
    return f"meshinject: {text}"[:_WARNING_LIMIT]


def _internal(err: Exception) -> str:
    text = f"internal error: {type(err).__name__}: {err}"
    return text if len(text) <= 500 else text[:497] + "..."


def _deny(uid: str, outcome: str, code: int, message: str) -> ReviewOutcome:
    return _answer(uid, outcome, message, allowed=False, status={"code": code, "message": message})
