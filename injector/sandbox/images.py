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
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from injector.sandbox.podspec import expand
from mesh.contract import INIT_COMMAND, INIT_NAME, PROXY_COMMAND, PROXY_NAME
from mesh.errors import SandboxError
from mesh.settings import MeshConfig

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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


# -- the sandbox node: images as the cluster names them ------------------------------------
# What the sandbox knows of an image without pulling it: the entrypoint and default args of
# meshinject's own images (docker/), and that Envoy's runs envoy. Their programs are this
# environment's; no other program is run for them.
KNOWN_IMAGES: dict[str, tuple[list[str], list[str]]] = {
    "ghcr.io/meshinject/meshinject": (["meshinject"], ["serve", "--help"]),
    "ghcr.io/meshinject/mesh-init": ([INIT_COMMAND], []),
    "envoyproxy/envoy": ([PROXY_COMMAND], []),
    "docker.io/envoyproxy/envoy": ([PROXY_COMMAND], []),
}


def node_argv(container: Mapping[str, Any], *, env: Mapping[str, str]) -> list[str]:
    """The argv a pod's container runs on the sandbox node, as a container runtime would make
    it: ``command`` replaces the image's entrypoint and ``args`` its default arguments, each
    with ``$(VAR)`` expanded. A known image's programs are meshinject's own; any other image
    runs its ``command`` when that is a program on this machine. Anything else raises
    SandboxError, which the node reports as the container's ErrImagePull."""
    image = str(container.get("image", ""))
    command = [expand(str(c), env) for c in container.get("command") or []]
    args = [expand(str(a), env) for a in container.get("args") or []]
    known = KNOWN_IMAGES.get(_repository(image))
    if known is not None:
        entry, default = known
        argv = (command or entry) + (args if container.get("args") is not None or command
                                     else default)
        own = tools_dir() / Path(argv[0]).name
        if not own.exists():
            raise SandboxError(f"image not runnable in the sandbox: {image}: its program "
                               f"{argv[0]!r} is not in {tools_dir()}")
        return [str(own), *argv[1:]]
    if not command:
        raise SandboxError(
            f"image not runnable in the sandbox: {image} has no command the sandbox can run "
            "(it has no images: give the container a command that is a program here)")
    program = _which(command[0])
    if program is None:
        raise SandboxError(f"image not runnable in the sandbox: {image}: command "
                           f"{command[0]!r} is not a program on this machine")
    return [program, *command[1:], *args]
