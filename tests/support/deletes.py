"""An API server stand-in that lets the real ``kubectl delete`` run and records what it deletes.

It serves just enough for kubectl to map the objects it is given (legacy discovery for their
kinds), answers every DELETE with success, and every later GET (``--wait``) with 404, so the
recorded paths are exactly the requests kubectl makes, in its order. The objects themselves are
not stored: this tests kubectl's ordering of ``delete -k``, not the API server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding",
                  "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}


def plural(kind: str) -> str:
    return kind.lower() + ("es" if kind.endswith("s") else "s")


@dataclass
class Recorder:
    docs: list[Obj]
    deleted: list[str] = field(default_factory=list)

    def _resources(self, group_version: str) -> list[Obj]:
        kinds = sorted({d["kind"] for d in self.docs if d["apiVersion"] == group_version})
        return [{"name": plural(k), "singularName": k.lower(), "kind": k,
                 "namespaced": k not in CLUSTER_SCOPED,
                 "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                for k in kinds]

    def answer(self, method: str, path: str) -> tuple[int, Obj]:
        versions = sorted({d["apiVersion"] for d in self.docs})
        if method == "GET" and path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"],
                         "serverAddressByClientCIDRs": []}
        if method == "GET" and path == "/apis":
            groups = [{"name": gv.split("/")[0],
                       "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
                       "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]}}
                      for gv in versions if "/" in gv]
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        for gv in versions:
            if method == "GET" and path == ("/api/v1" if gv == "v1" else f"/apis/{gv}"):
                return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                             "resources": self._resources(gv)}
        if method == "DELETE":
            self.deleted.append(path)
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                     "reason": "NotFound", "code": 404, "message": f"{path} not found"}


def object_path(doc: Obj) -> str:
    """The URL path of ``doc``, as kubectl addresses it."""
    gv, kind, meta = doc["apiVersion"], doc["kind"], doc["metadata"]
    base = "/api/v1" if gv == "v1" else f"/apis/{gv}"
    where = "" if kind in CLUSTER_SCOPED else f"/namespaces/{meta['namespace']}"
    return f"{base}{where}/{plural(kind)}/{meta['name']}"


@contextmanager
def recording(docs: list[Obj], tmp: Path) -> Iterator[tuple[Recorder, Path]]:
    """Serve on 127.0.0.1 (plain HTTP), yield the recorder and a kubeconfig, stop."""
    recorder = Recorder(docs)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            code, payload = recorder.answer(self.command, self.path.partition("?")[0])
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_DELETE = do_POST = do_PUT = do_PATCH = _serve

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp / "recorder.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "rec",
        "clusters": [{"name": "rec", "cluster": {
            "server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "rec", "user": {}}],
        "contexts": [{"name": "rec", "context": {"cluster": "rec", "user": "rec"}}],
    }))
    try:
        yield recorder, kubeconfig
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
