"""A small Kubernetes API server double, kept for one thing the real local cluster cannot do yet.

``inspect POD`` reads a proxy's live counters through the API server's pod proxy
(``pods/NAME:15090/proxy/stats/prometheus``); the real API server dials the pod's IP for that,
and until a node agent gives pods addresses it can reach, no pod of the local cluster has one.
So this double stores objects by (resource, namespace, name), answers GETs and lists the way the
API server does (real paths, real JSON, 404 as a ``Status``), and serves pod-proxy GETs from
canned text. Everything else the tests once ran against it (409s, resourceVersions, RBAC's
403s, races) runs against the real API server now (``tests/support/realcluster.py``).
"""

from __future__ import annotations

import copy
import re
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

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

    # -- request handling ------------------------------------------------------------------
    def handle(self, method: str, path: str, query: str, body: Any) -> tuple[int, Any]:
        del body  # nothing is written
        self.requests.append((method, path))
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
            return self._read(method, res, ns, name, query)

    def _proxy(self, ns: str, name_port: str, rest: str) -> tuple[int, Any]:
        name, _, port = name_port.partition(":")
        text = self.proxied.get((ns, f"{name}:{port}", rest.removeprefix("/proxy")))
        if text is None:
            return status(503, "ServiceUnavailable", f"error trying to reach service: {name}")
        return 200, text

    def _read(self, method: str, res: str, ns: str, name: str | None, query: str
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
        if method != "GET":
            return status(405, "MethodNotAllowed", f"{method}: this double only reads")
        if current is None:
            return status(404, "NotFound", f'{res} "{name}" not found')
        return 200, copy.deepcopy(current)


def status(code: int, reason: str, message: str) -> tuple[int, Obj]:
    return code, {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
