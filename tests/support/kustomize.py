"""Render a kustomization the way ``kubectl apply -k`` would, for the manifest tests.

``kubectl kustomize`` is the reference when it is installed. Without it, a small renderer
covers what our base uses (resources, files and directories, ``labels`` on metadata only,
``images`` and ``sortOptions: fifo``, which keeps resources in the order listed), so the tests
of the base run anywhere; overlays with components need kubectl. The order matters: it is the
order ``kubectl apply -k`` creates and ``kubectl delete -k`` deletes objects in.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from mesh.contract import CONFIG_KEY, CONFIGMAP
from mesh.settings import MeshConfig, config_from_yaml
from tests.support.paths import MANIFESTS

Obj = dict[str, Any]


def kubectl_kustomize(path: Path) -> list[Obj] | None:
    """Render with kubectl, or None when kubectl is not installed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    out = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=True
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _documents(path: Path) -> list[Obj]:
    if path.is_dir():
        return render_here(path)
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _set_image(container: Obj, images: list[Obj]) -> None:
    name, _, tag = container["image"].partition(":")
    for image in images:
        if image["name"] == name:
            name = image.get("newName", name)
            tag = image.get("newTag", tag)
            digest = image.get("digest")
            container["image"] = f"{name}@{digest}" if digest else f"{name}:{tag}"


def render_here(path: Path) -> list[Obj]:
    """The pure-Python renderer (no components, no patches: the base has none)."""
    kustomization = yaml.safe_load((path / "kustomization.yaml").read_text())
    unsupported = {"patches", "components", "namePrefix", "nameSuffix", "namespace"}
    assert not unsupported & set(kustomization), f"{path}: extend render_here for {unsupported}"
    order = (kustomization.get("sortOptions") or {}).get("order", "legacy")
    assert order == "fifo", f"{path}: render_here keeps the listed order only (sortOptions fifo)"
    docs = [d for res in kustomization.get("resources", []) for d in _documents(path / res)]
    for doc in docs:
        for group in kustomization.get("labels", []):
            assert not group.get("includeSelectors"), "selectors are left alone"
            doc.setdefault("metadata", {}).setdefault("labels", {}).update(group["pairs"])
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            _set_image(container, kustomization.get("images", []))
    return docs


def render(path: Path = MANIFESTS) -> list[Obj]:
    rendered = kubectl_kustomize(path)
    return rendered if rendered is not None else render_here(path)


def one(docs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def injector_container(docs: list[Obj]) -> Obj:
    """The injector's container in the rendered Deployment."""
    deployment = one(docs, "Deployment", "meshinject")
    container: Obj = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def mesh_config(docs: list[Obj]) -> MeshConfig:
    """The mesh config the rendered ConfigMap installs."""
    return config_from_yaml(one(docs, "ConfigMap", CONFIGMAP)["data"][CONFIG_KEY])
