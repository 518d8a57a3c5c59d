"""List, then watch, then resume: a resource's objects kept current, across any failure.

A list gives every object and the resourceVersion it is consistent at; a watch from that
version delivers each later change. Watches end (the server's timeout, a dropped connection, a
restarted API server): the next one resumes from the last version seen (bookmarks keep it fresh
while nothing changes), so nothing is missed and nothing is delivered twice. Only when the
server has forgotten that version (410 Gone, or an ERROR event with code 410) does it list
again, and the caller gets the whole set anew.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from mesh.errors import KubeError
from mesh.kube.client import Kube

log = logging.getLogger("meshinject.kube")
Obj = dict[str, Any]

WATCH_SECONDS = 290  # ask the server to end each watch before common 5-minute proxy timeouts
RETRY_SECONDS = (0.5, 1, 2, 5, 10)


class _Gone(Exception):
    """The server no longer has the version we asked for."""


def _lines(response: Any) -> Iterator[bytes]:
    buffer = b""
    for chunk in response.stream(64 * 1024, decode_content=True):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line
    if buffer.strip():
        yield buffer


def list_watch(
    kube: Kube, path: str, *, on_list: Callable[[list[Obj]], None],
    on_event: Callable[[str, Obj], None], stop: threading.Event,
    query: dict[str, Any] | None = None,
) -> None:
    """Keep ``path``'s objects current until ``stop``: ``on_list`` with every object after each
    (re)list, ``on_event(type, object)`` for each ADDED, MODIFIED or DELETED."""
    version = ""
    failures = 0
    while not stop.is_set():
        try:
            if not version:
                listed = kube.request("GET", path, query=dict(query or {}))
                version = str((listed.get("metadata") or {}).get("resourceVersion") or "")
                on_list(list(listed.get("items") or []))
            version = _watch(kube, path, version, query or {}, on_event, stop)
            failures = 0
        except _Gone:
            log.info("watch of %s: version expired, listing again", path)
            version = ""
        except (KubeError, OSError, ValueError) as err:
            if isinstance(err, KubeError) and err.status == 410:
                version = ""
                continue
            delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
            failures += 1
            log.warning("watch of %s failed (%s); again in %gs", path, err, delay)
            stop.wait(delay)


def _watch(kube: Kube, path: str, version: str, query: dict[str, Any],
           on_event: Callable[[str, Obj], None], stop: threading.Event) -> str:
    params = {**query, "watch": "true", "resourceVersion": version,
              "allowWatchBookmarks": "true", "timeoutSeconds": WATCH_SECONDS}
    response = kube.stream(path, query=params, read_timeout=WATCH_SECONDS + 30)
    started = time.monotonic()
    try:
        for line in _lines(response):
            if stop.is_set():
                break
            event = json.loads(line)
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise _Gone
                raise KubeError(f"watch of {path}: {obj.get('message', obj)}",
                                status=int(obj.get("code") or 0))
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                on_event(str(kind), obj)
    finally:
        response.release_conn()
    if time.monotonic() - started < 1 and not stop.is_set():
        stop.wait(1)  # a watch that ends at once: do not spin
    return version
