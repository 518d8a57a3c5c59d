"""The Dockerfiles, checked on paper (no Docker here): pinned bases and packages, the right
users, every dependency of the package in the image, and nothing the build needs ignored."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement

from tests.support.paths import REPO

DOCKER = REPO / "docker"
INJECTOR = (DOCKER / "Dockerfile.injector").read_text()
INIT = (DOCKER / "Dockerfile.init").read_text()
PINNED = dict(
    line.split("==")
    for line in (DOCKER / "requirements.txt").read_text().splitlines()
    if line and not line.startswith("#")
)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("text", [INJECTOR, INIT], ids=["injector", "init"])
def test_the_base_image_is_pinned_to_a_patch_release(text: str) -> None:
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base[1])
    assert all(
        line.split()[1] in ("${PYTHON_IMAGE}",)
        for line in text.splitlines()
        if line.startswith("FROM ")
    )


def test_the_injector_image_holds_every_runtime_dependency_pinned() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_norm(Requirement(r).name) for r in project["dependencies"]}
    assert wanted <= {_norm(n) for n in PINNED}, wanted - {_norm(n) for n in PINNED}
    for dep in project["dependencies"]:
        req = Requirement(dep)
        assert req.specifier.contains(
            PINNED[next(n for n in PINNED if _norm(n) == _norm(req.name))]
        )


def test_the_injector_runs_as_non_root_and_mesh_init_as_root() -> None:
    assert re.search(r"^USER 65532:65532$", INJECTOR, re.M)
    deployment = (REPO / "manifests" / "base" / "deployment.yaml").read_text()
    assert "runAsUser: 65532" in deployment
    assert re.search(r"^USER 0:0$", INIT, re.M)
    assert re.search(r"iptables=\d", INIT)  # the Debian package, pinned
    assert re.search(r"pyroute2==" + re.escape(PINNED["pyroute2"]), INIT)


def test_nothing_the_images_copy_is_left_out_by_dockerignore() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for text in (INJECTOR, INIT):
        for line in text.splitlines():
            if line.startswith("COPY ") and "--from=" not in line:
                for source in line.split()[1:-1]:
                    assert source.rstrip("/") in allowed, source
                    assert (REPO / source).exists(), source


def test_the_entrypoints_are_the_console_scripts() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert 'ENTRYPOINT ["meshinject"]' in INJECTOR and "meshinject" in scripts
    assert 'ENTRYPOINT ["meshinject-init"]' in INIT and "meshinject-init" in scripts


def test_requirements_are_exact_pins() -> None:
    assert PINNED and all(re.fullmatch(r"[\w.\-]+", v) for v in PINNED.values())
