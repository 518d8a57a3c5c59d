"""Pod -> injected pod -> JSON Patch; and the reverse (``strip_injection``, for ``uninject``).

Injection first strips whatever an earlier injection added, then renders afresh. So injecting
twice equals injecting once, and a pod injected under an older config, or with since-changed
annotations, is upgraded rather than doubled. What counts as added is decided by
:mod:`injector.core.rendered` (our name and our rendered shape), never by the status
annotation, which users copy and edit: a user's container is never stripped.

The patch is a diff of a changed copy: ``jsonpatch`` compares, except where a list was only
added to (the common case: injecting a fresh pod), whose adds are written at once from the
comparison itself (``_spliced``), never from indexes assumed beforehand.
But only the subtrees injection touches are copied and compared (annotations, init containers,
containers, volumes): diffing a whole pod with 2,000 env vars costs ~9 ms, comparing just these
costs far less, and everything else is shared, untouched, between input and output. The
returned pod therefore shares unchanged subtrees with the input: treat both as read-only.
The sidecars are rendered once per (config, overrides) and copied for each pod, except by
``patch_json``, the webhook's path, which serializes them at once.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jsonpatch
import orjson

from injector.core import advice, conflicts, rendered, sidecar
from injector.core.policy import REQUESTED, Decision, decide, flag_errors
from mesh.contract import STATUS
from mesh.errors import AnnotationError, MeshError, PodErrors, one_or_all
from mesh.overrides.pod import PodOverrides, parse_overrides
from mesh.settings import MeshConfig

# the spec lists injection adds to
_LISTS = ("initContainers", "containers", "volumes")
# what injection may edit, as (parent, key): plain names, nothing to escape in a JSON Pointer
_DIFFED = (("metadata", "annotations"), ("spec", "initContainers"), ("spec", "containers"),
           ("spec", "volumes"))
_MISSING: Any = object()


@dataclass(frozen=True)
class InjectionResult:
    decision: Decision
    pod: dict[str, Any]
    patch: list[dict[str, Any]]
    warnings: tuple[str, ...] = ()  # see injector.advice


class PatchAnswer(NamedTuple):
    """What the webhook needs: ``patch`` is the JSON Patch as JSON, ``b"[]"`` for none."""

    decision: Decision
    patch: bytes
    warnings: tuple[str, ...] = ()


def _editable(pod: Mapping[str, Any]) -> dict[str, Any]:
    """A copy in which exactly the subtrees injection edits are fresh objects. Nothing is
    added or normalised (a null stays null), so that strip can give back the very pod."""
    new = dict(pod)
    metadata = new.get("metadata")
    if isinstance(metadata, dict):
        metadata = new["metadata"] = dict(metadata)
        if isinstance(metadata.get("annotations"), dict):
            metadata["annotations"] = dict(metadata["annotations"])
    spec = new.get("spec")
    if isinstance(spec, dict):
        spec = new["spec"] = dict(spec)
        for key in _LISTS:
            if isinstance(spec.get(key), list):
                spec[key] = list(spec[key])
    return new


# What injection may find empty (or null) and fill: (status record name, parent, key). The
# status annotation records, under "empty", those the pod had present but empty, with their
# value, so that strip gives back exactly the pod it was given; absent ones simply go again.
_EMPTY = (("annotations", "metadata", "annotations"), ("metadata", None, "metadata"),
          ("initContainers", "spec", "initContainers"), ("containers", "spec", "containers"),
          ("volumes", "spec", "volumes"))


def _empties(pod: Mapping[str, Any]) -> dict[str, Any]:
    """Which of ``_EMPTY`` the (stripped) pod has present but empty or null, and as what."""
    found: dict[str, Any] = {}
    for name, parent, key in _EMPTY:
        holder = pod if parent is None else pod.get(parent)
        if isinstance(holder, dict) and key in holder and holder[key] in (None, {}, []):
            found[name] = holder[key]
    return found


def _recorded_empties(annotations: Mapping[str, Any]) -> dict[str, Any]:
    """The status annotation's "empty" record, keeping only what it may hold (null, {} or []):
    the annotation is the user's to garble, and the worst a garbled one may do is keep an empty
    map or list that would otherwise go."""
    try:
        status = json.loads(annotations.get(STATUS) or "{}")
    except (TypeError, ValueError, RecursionError):
        return {}
    record = status.get("empty") if isinstance(status, dict) else None
    if not isinstance(record, dict):
        return {}
    return {name: value for name, value in record.items() if value in (None, {}, [])}


def _strip(new: dict[str, Any]) -> None:
    """Remove in place, from an ``_editable`` copy, what injection added: the status annotation
    and the containers :mod:`injector.core.rendered` recognises as ours (never a container or
    volume because the status names it). What that empties goes back to how the pod had it:
    absent, or as the status records."""
    metadata, spec = new.get("metadata"), new.get("spec")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    record = _recorded_empties(annotations) if isinstance(annotations, dict) else {}
    if isinstance(metadata, dict) and isinstance(annotations, dict) and STATUS in annotations:
        del annotations[STATUS]
        if not annotations:
            _restore(metadata, "annotations", record)
            if not metadata:
                _restore(new, "metadata", record)
    if isinstance(spec, dict):
        for key in _LISTS:
            items = spec.get(key)
            if not isinstance(items, list):
                continue
            kept = [c for c in items if not _is_ours(key, c)]
            if len(kept) != len(items):
                spec[key] = kept
                if not kept:
                    _restore(spec, key, record)


def _is_ours(key: str, item: Any) -> bool:
    if key == "volumes":
        return rendered.is_our_volume(item)
    return rendered.is_ours(item, init=key == "initContainers")


def _restore(holder: dict[str, Any], key: str, record: Mapping[str, Any]) -> None:
    """Put back an emptied ``holder[key]`` as the pod had it before injection."""
    if key in record:
        holder[key] = record[key]
    else:
        del holder[key]


def strip_injection(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The pod as it was before injection; a pod that was not injected comes back equal."""
    new = _editable(pod)
    _strip(new)
    return new


def config_hash(*, config: MeshConfig, overrides: PodOverrides) -> str:
    text = json.dumps([config.injection_fingerprint(), overrides.proxy_annotations],
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _Additions:
    """What injection adds to a pod, in the order it goes in. Cached and shared: see
    :meth:`fresh` before handing any of it out."""

    init_containers: tuple[dict[str, Any], ...]
    containers: tuple[dict[str, Any], ...]
    volumes: tuple[dict[str, Any], ...]
    status: str  # the status annotation's value

    def fresh(self) -> _Additions:
        """A copy the caller may modify (about 13 us: the bootstrap, a string, is shared)."""
        return _Additions(
            tuple(map(_json_copy, self.init_containers)),
            tuple(map(_json_copy, self.containers)),
            tuple(map(_json_copy, self.volumes)),
            self.status,
        )


def _json_copy(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {k: _json_copy(v) for k, v in value.items()}
    if kind is list:
        return [_json_copy(v) for v in value]
    return value  # str, int, bool, None: immutable


@functools.lru_cache(maxsize=256)
def _additions(config: MeshConfig, overrides: PodOverrides) -> _Additions:
    """Rendered once per (config, overrides): every pod of a workload gets the same sidecars,
    and rendering them (the bootstrap above all) is most of an injection's cost."""
    proxy = sidecar.proxy_container(config=config, overrides=overrides)
    init = sidecar.init_container(config=config, overrides=overrides)
    inits, containers = ((init, proxy), ()) if overrides.native else ((init,), (proxy,))
    volumes = tuple(sidecar.volumes(config=config))
    status = {
        "initContainers": [c["name"] for c in inits],
        "containers": [c["name"] for c in containers],
        "volumes": [v["name"] for v in volumes],
        "configHash": config_hash(config=config, overrides=overrides),
    }
    return _Additions(inits, containers, volumes, json.dumps(status, separators=(",", ":")))


def render(
    pod: Mapping[str, Any], *, config: MeshConfig, overrides: PodOverrides
) -> dict[str, Any]:
    """Strip an earlier injection, then add mesh-init, mesh-proxy and the status annotation."""
    return _render(pod, _additions(config, overrides).fresh())


def _render(pod: Mapping[str, Any], additions: _Additions) -> dict[str, Any]:
    new = _editable(pod)
    _strip(new)
    status = additions.status
    if empty := _empties(new):  # rare: an empty (or null) map or list that injection fills
        status = f'{status[:-1]},"empty":{json.dumps(empty, separators=(",", ":"))}}}'
    spec = new.get("spec")
    if not isinstance(spec, dict):
        spec = new["spec"] = {}
    spec["initContainers"] = [*additions.init_containers, *(spec.get("initContainers") or [])]
    if additions.containers:
        spec["containers"] = [*additions.containers, *(spec.get("containers") or [])]
    spec["volumes"] = [*(spec.get("volumes") or []), *additions.volumes]
    metadata = new.get("metadata")
    if not isinstance(metadata, dict):
        metadata = new["metadata"] = {}
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        annotations = metadata["annotations"] = {}
    annotations[STATUS] = status
    return new


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """JSON Patch from ``old`` to ``new``, looking only at the subtrees injection edits."""
    ops: list[dict[str, Any]] = []
    for parent, key in _DIFFED:
        old_parent, new_parent = old.get(parent, _MISSING), new.get(parent, _MISSING)
        if not isinstance(old_parent, dict):  # a template without metadata: add it whole
            added = isinstance(new_parent, dict) and key in new_parent
            if added and (not ops or ops[-1]["path"] != f"/{parent}"):
                ops.append({"op": "add", "path": f"/{parent}", "value": new_parent})
            continue
        before, after = old_parent.get(key, _MISSING), new_parent.get(key, _MISSING)
        if before is after or before == after:
            continue
        if after is _MISSING:
            ops.append({"op": "remove", "path": f"/{parent}/{key}"})
        elif before is _MISSING:
            ops.append({"op": "add", "path": f"/{parent}/{key}", "value": after})
        else:
            ops.extend(_subtree_patch(before, after, prefix=f"/{parent}/{key}"))
    return ops


def _spliced(before: list[Any], after: list[Any], *, prefix: str
             ) -> list[dict[str, Any]] | None:
    """The adds that make ``after`` from ``before`` when ``after`` is ``before`` with items put
    in front and/or behind (what injection does to init containers and volumes), in the order
    and with the indices jsonpatch gives them; None when it is anything else. The old items
    are matched by identity first (the user's are shared, never copied), so a pod's containers
    are not compared field by field: this is most of a review's time saved."""
    extra = len(after) - len(before)
    if extra < 0:
        return None
    for front in range(extra + 1):
        kept = after[front:front + len(before)]
        if all(a is b or a == b for a, b in zip(kept, before, strict=True)):
            break
    else:
        return None
    ops = [{"op": "add", "path": f"{prefix}/{i}", "value": after[i]} for i in range(front)]
    ops += [{"op": "add", "path": f"{prefix}/{i}", "value": after[i]}
            for i in range(front + len(before), len(after))]
    return ops


def _subtree_patch(before: Any, after: Any, *, prefix: str) -> list[dict[str, Any]]:
    """jsonpatch over one subtree (or, for a list only added to, the adds at once). In lists
    (of containers), every item stands in as a token, the same token on both sides for the same
    or an equal item, so jsonpatch never walks into a container: one with 2,000 env vars costs
    nothing to compare, and a changed sidecar is replaced whole rather than diffed field by
    field."""
    tokens: dict[str, Any] = {}
    if isinstance(before, list) and isinstance(after, list):
        spliced = _spliced(before, after, prefix=prefix)
        if spliced is not None:
            return spliced
        before, after = _tokenize(before, after, tokens)
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


def _tokenize(
    before: list[Any], after: list[Any], tokens: dict[str, Any]
) -> tuple[list[Any], list[Any]]:
    """Both lists with each dict item replaced by a token (filled in ``tokens``): one token per
    distinct item, matched by identity first (the user's containers are shared, never copied)
    and by equality otherwise. Lists are a handful of items, so pairwise is cheap."""
    known: list[tuple[Any, str]] = []

    def token(item: Any) -> Any:
        if not isinstance(item, dict):
            return item
        for seen, name in known:
            if seen is item:
                return name
        for seen, name in known:
            if _equal(seen, item):
                return name
        name = f"\0{len(known)}"
        known.append((item, name))
        tokens[name] = item
        return name

    return [token(x) for x in before], [token(x) for x in after]


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except RecursionError:  # absurd nesting: call them different, which is always safe
        return False


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
    """Decide, and if the pod joins the mesh render it and diff; raises what ``judge`` raises."""
    decision, overrides = judge(pod, config=config, namespace=namespace,
                                namespace_labels=namespace_labels)
    if overrides is None:
        return InjectionResult(decision=decision, pod=dict(pod), patch=[])
    new = render(pod, config=config, overrides=overrides)
    return InjectionResult(decision=decision, pod=new, patch=diff(pod, new),
                           warnings=advice.warnings(pod, overrides))


def patch_json(pod: Mapping[str, Any], *, config: MeshConfig, namespace: str) -> PatchAnswer:
    """The webhook's answer, equal to ``inject_pod``'s, with the patch serialized here: so the
    cached sidecars can go in without a copy, as they never leave this function but as bytes."""
    decision, overrides = judge(pod, config=config, namespace=namespace, namespace_labels=None)
    if overrides is None:
        return PatchAnswer(decision, b"[]")
    new = _render(pod, _additions(config, overrides))
    return PatchAnswer(decision, orjson.dumps(diff(pod, new)), advice.warnings(pod, overrides))


def judge(
    pod: Mapping[str, Any],
    *,
    config: MeshConfig,
    namespace: str,
    namespace_labels: Mapping[str, str] | None,
    requested: str = REQUESTED,
) -> tuple[Decision, PodOverrides | None]:
    """Whether the pod is injected, and with what overrides (None when it is not); raises
    every problem at once (one MeshError, or PodErrors): an unreadable meshinject.io/inject
    value always, and for a pod to inject its bad annotations and the clashes of its spec with
    what injection adds (:mod:`injector.core.conflicts`). The webhook, ``inject`` and ``check``
    all judge here, so they can never disagree."""
    errors: list[MeshError] = list(flag_errors(pod))
    decision = decide(pod, namespace=namespace, namespace_labels=namespace_labels, config=config,
                      requested=requested)
    overrides = None
    if decision.inject:
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        try:
            overrides = parse_overrides(annotations, config=config)
        except (AnnotationError, PodErrors) as err:  # a bad mesh default is not the pod's
            errors.append(err)
        errors.extend(conflicts.problems(pod))
    if errors:
        raise one_or_all(errors)
    return decision, overrides
