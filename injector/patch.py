"""Pod -> injected pod -> JSON Patch; and the reverse, from the status annotation.

Injection first strips whatever an earlier injection added (the status annotation lists it),
then renders afresh. So injecting twice equals injecting once, and a pod injected under an
older config, or with since-changed annotations, is upgraded rather than doubled.

The patch is a diff, never hand-written indexes: we change a copy and let ``jsonpatch`` compare.
But only the subtrees injection touches are copied and compared (annotations, init containers,
containers, volumes): diffing a whole pod with 2,000 env vars costs ~9 ms, comparing just these
costs far less, and everything else is shared, untouched, between input and output. The
returned pod therefore shares unchanged subtrees with the input: treat both as read-only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonpatch

from injector import sidecar
from injector.annotations import STATUS, PodOverrides, parse_overrides
from injector.policy import Decision, decide
from injector.settings import MeshConfig

# (status key, spec key): what the status annotation records, and where it lives in the spec
_LISTS = (
    ("initContainers", "initContainers"), ("containers", "containers"), ("volumes", "volumes"),
)
_RESERVED = frozenset((sidecar.INIT_NAME, sidecar.PROXY_NAME))
_DIFFED = (("metadata", "annotations"), ("spec", "initContainers"), ("spec", "containers"),
           ("spec", "volumes"))
_MISSING: Any = object()


@dataclass(frozen=True)
class InjectionResult:
    decision: Decision
    pod: dict[str, Any]
    patch: list[dict[str, Any]]


def _editable(pod: Mapping[str, Any]) -> dict[str, Any]:
    """A copy in which exactly the subtrees injection edits are fresh objects."""
    new = dict(pod)
    metadata = dict(new.get("metadata") or {})
    if "annotations" in metadata:
        metadata["annotations"] = dict(metadata["annotations"] or {})
    new["metadata"] = metadata
    spec = dict(new.get("spec") or {})
    for _, key in _LISTS:
        if key in spec:
            spec[key] = list(spec[key] or [])
    new["spec"] = spec
    return new


def _status_names(annotations: Mapping[str, Any]) -> dict[str, set[str]]:
    """What an earlier injection added, by spec list. Our two container names are reserved, so
    they go even when the status is missing or unreadable (a copied pod, a hand edit)."""
    names: dict[str, set[str]] = {key: set() for _, key in _LISTS}
    names["initContainers"] |= _RESERVED
    names["containers"] |= _RESERVED
    try:
        status = json.loads(annotations.get(STATUS) or "{}")
    except (TypeError, ValueError, RecursionError):  # the annotation is the user's to garble
        return names
    if isinstance(status, dict):
        for status_key, spec_key in _LISTS:
            listed = status.get(status_key)
            if isinstance(listed, list):
                names[spec_key] |= {n for n in listed if isinstance(n, str)}
    return names


def _strip(new: dict[str, Any]) -> None:
    """Remove in place, from an ``_editable`` copy, what the status says injection added."""
    metadata, spec = new["metadata"], new["spec"]
    annotations = metadata.get("annotations") or {}
    names = _status_names(annotations)
    annotations.pop(STATUS, None)
    if "annotations" in metadata and not annotations:
        del metadata["annotations"]
    for _, key in _LISTS:
        if key not in spec:
            continue
        spec[key] = [
            c for c in spec[key] if not (isinstance(c, dict) and c.get("name") in names[key])
        ]
        if not spec[key]:
            del spec[key]


def strip_injection(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The pod as it was before injection (if it was injected at all)."""
    new = _editable(pod)
    _strip(new)
    return new


def config_hash(*, config: MeshConfig, overrides: PodOverrides) -> str:
    text = json.dumps([config.fingerprint(), overrides.proxy_annotations], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def render(
    pod: Mapping[str, Any], *, config: MeshConfig, overrides: PodOverrides
) -> dict[str, Any]:
    """Strip an earlier injection, then add mesh-init, mesh-proxy and the status annotation."""
    new = _editable(pod)
    _strip(new)
    spec = new["spec"]
    proxy = sidecar.proxy_container(config=config, overrides=overrides)
    init = sidecar.init_container(config=config, overrides=overrides)
    if overrides.native:
        spec["initContainers"] = [init, proxy, *spec.get("initContainers", [])]
        added = {"initContainers": [init["name"], proxy["name"]], "containers": []}
    else:
        spec["initContainers"] = [init, *spec.get("initContainers", [])]
        spec["containers"] = [proxy, *spec.get("containers", [])]
        added = {"initContainers": [init["name"]], "containers": [proxy["name"]]}
    status = {**added, "volumes": [], "configHash": config_hash(config=config, overrides=overrides)}
    annotations = new["metadata"].setdefault("annotations", {})
    annotations[STATUS] = json.dumps(status, separators=(",", ":"))
    return new


def _get(obj: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, Mapping) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def _pointer(path: tuple[str, ...]) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """JSON Patch from ``old`` to ``new``, looking only at the subtrees injection edits."""
    ops: list[dict[str, Any]] = []
    added: set[tuple[str, ...]] = set()
    for path in _DIFFED:
        before, after = _get(old, path), _get(new, path)
        if before is after or before == after or any(path[:i] in added for i in range(1, 3)):
            continue
        if after is _MISSING:
            ops.append({"op": "remove", "path": _pointer(path)})
            continue
        if before is _MISSING:
            # add at the shallowest missing level: /metadata/annotations needs /metadata
            depth = next(i for i in range(1, len(path) + 1) if _get(old, path[:i]) is _MISSING)
            added.add(path[:depth])
            value = _get(new, path[:depth])
            ops.append({"op": "add", "path": _pointer(path[:depth]), "value": value})
            continue
        ops.extend(_subtree_patch(before, after, prefix=_pointer(path)))
    return ops


def _subtree_patch(before: Any, after: Any, *, prefix: str) -> list[dict[str, Any]]:
    """jsonpatch over one subtree. In lists, items that are the very same object on both sides
    (the user's containers: we never copy them) stand in as tokens, so jsonpatch never walks
    into them; a container with 2,000 env vars then costs nothing to compare."""
    tokens: dict[str, Any] = {}
    if isinstance(before, list) and isinstance(after, list):
        shared = {id(item): item for item in before if isinstance(item, dict)}
        shared = {key: item for key, item in shared.items() if any(x is item for x in after)}

        def shrink(items: list[Any]) -> list[Any]:
            return [f"\0{id(x)}" if id(x) in shared else x for x in items]

        tokens = {f"\0{key}": item for key, item in shared.items()}
        before, after = shrink(before), shrink(after)
    try:
        diffed = jsonpatch.make_patch(before, after).patch
    except RecursionError:  # absurd nesting in what we strip: replace the subtree whole
        diffed = [{"op": "replace", "path": "", "value": after}]
    ops = []
    for op in diffed:
        op = dict(op)
        op["path"] = prefix + op["path"]
        if "from" in op:
            op["from"] = prefix + op["from"]
        if tokens and "value" in op:
            op["value"] = _untoken(op["value"], tokens)
        ops.append(op)
    return ops


def _untoken(value: Any, tokens: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return tokens.get(value, value)
    if isinstance(value, list):
        return [tokens.get(v, v) if isinstance(v, str) else v for v in value]
    return value


def inject_pod(
    pod: Mapping[str, Any],
    *,
    config: MeshConfig,
    namespace: str,
    namespace_labels: Mapping[str, str] | None = None,
) -> InjectionResult:
    """Decide, and if the pod joins the mesh render it and diff; raises AnnotationError."""
    decision = decide(pod, namespace=namespace, namespace_labels=namespace_labels, config=config)
    if not decision.inject:
        return InjectionResult(decision=decision, pod=dict(pod), patch=[])
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    overrides = parse_overrides(annotations, config=config)
    new = render(pod, config=config, overrides=overrides)
    return InjectionResult(decision=decision, pod=new, patch=diff(pod, new))
