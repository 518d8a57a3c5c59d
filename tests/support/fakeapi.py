"""A small Kubernetes API server double: real paths, real JSON, real 409s.

No API server can run on these machines, so the code that talks to one is driven through the
real ``kubernetes`` client against this (served over TLS by :mod:`tests.support.fakeserver`): it
stores objects by (resource, namespace, name), stamps a ``resourceVersion`` on every write,
refuses a create of an existing name and a write carrying a stale resourceVersion with a 409
``Status``, applies JSON and merge patches, filters lists by label selector, answers 403 where a
test says RBAC would, and serves pod-proxy GETs from canned text.
"""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import jsonpatch

Obj = dict[str, Any]

_NAMESPACED = re.compile(
    r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<res>[a-z]+)(?:/(?P<name>[^/]+))?(?P<rest>/.*)?$"
)
_ALL_PODS = re.compile(r"^/api/v1/pods$")
_NAMESPACES = re.compile(r"^/api/v1/namespaces(?:/(?P<name>[^/]+))?$")
_WEBHOOKS = re.compile(
    r"^/apis/admissionregistration\.k8s\.io/v1/mutatingwebhookconfigurations(?:/(?P<name>[^/]+))?$"
)
_POLICIES = re.compile(
    r"^/apis/security\.meshinject\.io/v1alpha1(?:/namespaces/(?P<ns>[^/]+))?/accesspolicies"
    r"(?:/(?P<name>[^/]+))?$"
)
_KINDS = {
    "secrets": ("v1", "Secret"),
    "configmaps": ("v1", "ConfigMap"),
    "pods": ("v1", "Pod"),
    "namespaces": ("v1", "Namespace"),
    "accesspolicies": ("security.meshinject.io/v1alpha1", "AccessPolicy"),
    "mutatingwebhookconfigurations": (
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
    ),
}


def _selected(obj: Obj, selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key) != value.lstrip("="):
                return False
        elif labels.get(term) is None:
            return False
    return True


@dataclass
class FakeApi:
    """The store and the request log; tests seed objects with :meth:`put` and read them back."""

    objects: dict[tuple[str, str, str], Obj] = field(default_factory=dict)
    proxied: dict[tuple[str, str, str], str] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    hooks: list[Callable[[str, str], None]] = field(default_factory=list)
    forbidden: set[tuple[str, str]] = field(default_factory=set)  # (method, path): RBAC says no
    lock: threading.Lock = field(default_factory=threading.Lock)
    version: int = 100

    def put(self, obj: Obj) -> Obj:
        """Store an object as-is (seeding), stamping a resourceVersion."""
        kind = obj["kind"]
        res = next(r for r, (_, k) in _KINDS.items() if k == kind)
        meta = obj.setdefault("metadata", {})
        ns = (
            ""
            if res in ("namespaces", "mutatingwebhookconfigurations")
            else meta.get("namespace", "default")
        )
        if ns:
            meta["namespace"] = ns
        with self.lock:
            self.version += 1
            meta["resourceVersion"] = str(self.version)
            self.objects[(res, ns, meta["name"])] = copy.deepcopy(obj)
        return obj

    def get(self, res: str, ns: str, name: str) -> Obj | None:
        with self.lock:
            found = self.objects.get((res, ns, name))
            return copy.deepcopy(found) if found else None

    def count(self, method: str, fragment: str) -> int:
        return sum(1 for m, p in self.requests if m == method and fragment in p)

    # -- request handling ------------------------------------------------------------------
    def handle(self, method: str, path: str, query: str, body: Any) -> tuple[int, Any]:
        self.requests.append((method, path))
        for hook in self.hooks:
            hook(method, path)
        if (method, path) in self.forbidden:
            return status(403, "Forbidden", f'cannot {method.lower()} "{path}" (RBAC)')
        if m := _NAMESPACED.match(path):
            res, ns, name, rest = m["res"], m["ns"], m["name"], m["rest"]
            if res == "pods" and rest and rest.startswith("/proxy"):
                return self._proxy(ns, name or "", rest)
        elif _ALL_PODS.match(path):
            res, ns, name = "pods", "", None
        elif m := _NAMESPACES.match(path):
            res, ns, name = "namespaces", "", m["name"]
        elif m := _WEBHOOKS.match(path):
            res, ns, name = "mutatingwebhookconfigurations", "", m["name"]
        elif m := _POLICIES.match(path):
            res, ns, name = "accesspolicies", m["ns"] or "", m["name"]
        else:
            return status(404, "NotFound", f"no route for {path}")
        if res not in _KINDS:
            return status(404, "NotFound", f"the server could not find resource {res}")
        with self.lock:
            return self._crud(method, res, ns, name, query, body)

    def _proxy(self, ns: str, name_port: str, rest: str) -> tuple[int, Any]:
        name, _, port = name_port.partition(":")
        text = self.proxied.get((ns, f"{name}:{port}", rest.removeprefix("/proxy")))
        if text is None:
            return status(503, "ServiceUnavailable", f"error trying to reach service: {name}")
        return 200, text

    def _crud(
        self, method: str, res: str, ns: str, name: str | None, query: str, body: Any
    ) -> tuple[int, Any]:
        api_version, kind = _KINDS[res]
        key = (res, ns, name or "")
        current = self.objects.get(key)
        if method == "GET" and name is None:
            selector = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get(
                "labelSelector", ""
            )
            items = [
                copy.deepcopy(o)
                for (r, n, _), o in sorted(self.objects.items())
                if r == res and (not ns or n == ns) and _selected(o, unquote(selector))
            ]
            return 200, {
                "apiVersion": api_version,
                "kind": f"{kind}List",
                "items": items,
                "metadata": {"resourceVersion": str(self.version)},
            }
        if method == "POST":
            name = body.get("metadata", {}).get("name", "")
            key = (res, ns, name)
            if key in self.objects:
                return status(409, "AlreadyExists", f'{res} "{name}" already exists')
            return 201, self._store(key, body, ns)
        if current is None:
            return status(404, "NotFound", f'{res} "{name}" not found')
        if method == "GET":
            return 200, copy.deepcopy(current)
        if method == "PUT":
            if (
                body.get("metadata", {}).get("resourceVersion")
                != current["metadata"]["resourceVersion"]
            ):
                return _conflict(res, name)
            return 200, self._store(key, body, ns)
        if method == "PATCH":
            try:
                patched = (
                    jsonpatch.apply_patch(current, body)
                    if isinstance(body, list)
                    else _merge(current, body)
                )
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as err:
                return status(422, "Invalid", str(err))
            if patched["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                return _conflict(res, name)
            return 200, self._store(key, patched, ns)
        return status(405, "MethodNotAllowed", method)

    def _store(self, key: tuple[str, str, str], body: Obj, ns: str) -> Obj:
        obj = copy.deepcopy(body)
        self.version += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.version)
        if ns:
            obj["metadata"]["namespace"] = ns
        self.objects[key] = obj
        return copy.deepcopy(obj)


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


def status(code: int, reason: str, message: str) -> tuple[int, Obj]:
    return code, {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _conflict(res: str, name: str | None) -> tuple[int, Obj]:
    return status(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {res} "{name}": '
        "the object has been modified; please apply your changes to the latest version "
        "and try again",
    )
