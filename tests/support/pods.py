"""Small builders for the pods the core tests feed the injector."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from mesh.settings import MeshConfig
from tests.support.paths import CORPUS

__all__ = ["CONFIG", "CORPUS", "apply", "names", "pod"]

CONFIG = MeshConfig()


def pod(
    *,
    name: str = "web",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if labels is not None:
        metadata["labels"] = labels
    if annotations is not None:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": spec or {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }


def apply(patch: list[dict[str, Any]], doc: dict[str, Any]) -> dict[str, Any]:
    """Apply a JSON Patch to a deep copy, as the API server would."""
    result: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(doc), patch)
    return result


def names(containers: list[dict[str, Any]] | None) -> list[str]:
    return [c["name"] for c in containers or []]
