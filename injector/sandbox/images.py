"""Images to local programs: the sandbox has no container runtime, so a container runs a program.

The two mesh images are known: the mesh-init image runs ``meshinject-init`` and the Envoy image
runs ``envoy``, both from the environment meshinject runs in (the venv), so the sandbox always
runs the code it was installed with. Any other image runs its container's own ``command`` when
that program exists here; an image's entrypoint cannot be known without the image, so a
container without a command is an error, as is a command this machine does not have. All of it
is checked while planning, before anything starts.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mesh.contract import INIT_COMMAND, INIT_NAME, PROXY_COMMAND, PROXY_NAME
from mesh.errors import SandboxError
from mesh.settings import MeshConfig

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def tools_dir() -> Path:
    """Where this meshinject's programs live (the venv's bin): first on every container's PATH."""
    return Path(sys.executable).parent


def container_path() -> str:
    return f"{tools_dir()}:{SYSTEM_PATH}"


def _repository(image: str) -> str:
    """``docker.io/envoyproxy/envoy:v1.40.0@sha256:..`` -> ``docker.io/envoyproxy/envoy``."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return name


def mesh_program(container: Mapping[str, Any], *, config: MeshConfig) -> str | None:
    """``meshinject-init`` or ``envoy`` when the container runs one of the mesh's images."""
    image = str(container.get("image", ""))
    repo = _repository(image)
    if image == config.init.image or container.get("name") == INIT_NAME or repo.endswith(
        "/mesh-init"
    ):
        return INIT_COMMAND
    if image == config.proxy.image or container.get("name") == PROXY_NAME or repo.endswith(
        "envoyproxy/envoy"
    ):
        return PROXY_COMMAND
    return None


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command and args; ``$$`` is a literal ``$``."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR.sub(sub, text)


def _which(program: str) -> str | None:
    if "/" in program:
        return program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    return shutil.which(program, path=container_path())


def resolve_argv(
    container: Mapping[str, Any], *, where: str, config: MeshConfig, env: Mapping[str, str]
) -> list[str]:
    """The argv a container runs here, its program resolved to a path; or a SandboxError."""
    image = str(container.get("image", ""))
    command = [str(c) for c in container.get("command") or []]
    args = [str(a) for a in container.get("args") or []]
    mesh = mesh_program(container, config=config)
    if mesh is not None:
        path = tools_dir() / mesh
        if not path.exists():
            found = shutil.which(mesh)
            if found is None:
                raise SandboxError(f"{where}: image {image!r} maps to {mesh!r}, not installed here")
            path = Path(found)
        if not command or Path(command[0]).name == mesh:
            command = [str(path), *command[1:]]
    if not command:
        raise SandboxError(
            f"{where}: image {image!r} has no 'command' in the manifest; the sandbox runs a "
            "container's own command (it has no images), so give the container a command"
        )
    program = _which(command[0])
    if program is None:
        raise SandboxError(
            f"{where}: command {command[0]!r} (image {image!r}) is not a program on this "
            "machine; the sandbox runs a container's command as a local program"
        )
    return [program, *(expand(c, env) for c in command[1:]), *(expand(a, env) for a in args)]
