"""Where the pods are in a manifest: pod templates inside workloads, and List items.

Offline injection works on whatever a user has in a YAML file, so this module maps each kind
that makes pods to the path of its pod template, finds them (in ``kind: List`` items too), and
puts an injected template back by copying only the dicts along that path; the rest of the
document is shared, untouched. The namespace is the workload's, since templates have none.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mesh.errors import ManifestError

# kind -> path from the document to its pod (template); a Pod is its own template
TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
DEFAULT_NAMESPACE = "default"

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Workload:
    """One pod template found in a document."""

    kind: str
    name: str
    namespace: str
    path: Path
    pod: Mapping[str, Any]

    @property
    def title(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def _at(doc: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(doc, Mapping):
            return None
        doc = doc.get(key)
    return doc


def find(
    doc: Any, *, prefix: Path = (), default_namespace: str = DEFAULT_NAMESPACE,
    name: str | None = None,
) -> Iterator[Workload]:
    """Every pod template in ``doc`` (a parsed YAML document), in document order; workloads
    that name no namespace are in ``default_namespace``. With ``name``, only the workloads of
    that name, and only those are checked for shape: a broken neighbour is not their fault."""
    if not isinstance(doc, Mapping):
        return
    kind = doc.get("kind")
    if kind == "List" or (isinstance(kind, str) and kind.endswith("List") and "items" in doc):
        for index, item in enumerate(doc.get("items") or []):
            yield from find(item, prefix=(*prefix, "items", index),
                            default_namespace=default_namespace, name=name)
        return
    if not isinstance(kind, str) or kind not in TEMPLATE_PATHS:
        return
    template = _at(doc, TEMPLATE_PATHS[kind])
    if not isinstance(template, Mapping):
        return
    metadata = doc.get("metadata")
    if not isinstance(metadata, Mapping):
        metadata = {}
    title = metadata.get("name") or metadata.get("generateName") or "<unnamed>"
    if name is not None and str(title) != name:
        return
    namespace = metadata.get("namespace") or default_namespace
    where = ".".join(TEMPLATE_PATHS[kind]) or "pod"
    problem = shape_problem(template)
    if problem:
        raise ManifestError(f"{where}{problem}", kind=f"{kind} {namespace}/{title}")
    yield Workload(kind=kind, name=str(title), namespace=str(namespace),
                   path=(*prefix, *TEMPLATE_PATHS[kind]), pod=template)


def shape_problem(pod: Mapping[str, Any]) -> str | None:
    """Why this pod (template) is not shaped like one, as a field suffix and reason, or None.

    The API server decodes pods into typed structs before a webhook sees them; a file has no
    such guarantee, and injection must not trip over a string where a list belongs."""
    metadata = pod.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        return ".metadata must be a mapping"
    if isinstance(metadata, Mapping):
        for key in ("labels", "annotations"):
            if metadata.get(key) is not None and not isinstance(metadata[key], Mapping):
                return f".metadata.{key} must be a mapping"
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return ".spec must be a mapping"
    for key in ("containers", "initContainers", "volumes"):
        items = spec.get(key)
        if items is None:
            continue
        if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
            return f".spec.{key} must be a list of mappings"
    return None


def replace(doc: Any, path: Path, value: Any) -> Any:
    """``doc`` with the value at ``path`` replaced, copying only the containers along the way."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, list) and isinstance(head, int):
        copy = list(doc)
        copy[head] = replace(doc[head], rest, value)
        return copy
    if isinstance(doc, Mapping) and isinstance(head, str):
        new = dict(doc)
        new[head] = replace(doc[head], rest, value)
        return new
    raise KeyError(f"no {head!r} in {type(doc).__name__}")
