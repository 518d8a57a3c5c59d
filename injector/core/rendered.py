"""Which of a pod's containers injection put there: the one rule that re-injection, ``uninject``
and the reserved-name check share.

A container is ours only when its name AND its shape are what :mod:`injector.core.sidecar`
renders, under any config, in either mode:

- ``mesh-init``: an init container whose command is ``[meshinject-init]``;
- ``mesh-proxy``: command ``[envoy]`` with the bootstrap as its first argument
  (``--config-yaml``), either a native sidecar (an init container with ``restartPolicy:
  Always``) or, in classic mode, a regular container.

Volumes likewise: ``meshinject-token`` only as a projected ServiceAccount token for our
audience, ``meshinject-ca`` only as the mesh root's ConfigMap.

The name alone is not enough: a user may call their own container ``mesh-proxy``, and deleting
it without a word is the worst thing injection could do (the pod is refused instead, see
:mod:`injector.core.conflicts`). The status annotation is not consulted at all: it is copied
between pods, edited by hand, garbled.
"""

from __future__ import annotations

from typing import Any

from mesh.contract import (
    CA_CONFIGMAP,
    CA_VOLUME,
    INIT_COMMAND,
    INIT_NAME,
    PROXY_COMMAND,
    PROXY_NAME,
    TOKEN_AUDIENCE,
    TOKEN_VOLUME,
)

RESERVED = (INIT_NAME, PROXY_NAME)
RESERVED_VOLUMES = (TOKEN_VOLUME, CA_VOLUME)
CONFIG_FLAG = "--config-yaml"  # the proxy's first argument: its whole bootstrap follows


def is_ours(container: Any, *, init: bool) -> bool:
    """Whether this entry of ``spec.initContainers`` (``init``) or ``spec.containers`` is one
    that injection rendered."""
    if not isinstance(container, dict):
        return False
    name, command = container.get("name"), container.get("command")
    if name == INIT_NAME:
        return init and command == [INIT_COMMAND]
    if name == PROXY_NAME:
        args = container.get("args")
        shaped = command == [PROXY_COMMAND] and isinstance(args, list) and \
            args[:1] == [CONFIG_FLAG]
        native = container.get("restartPolicy") == "Always"
        return shaped and native == init
    return False


def reserved_but_not_ours(container: Any, *, init: bool) -> bool:
    """A container that takes one of our names without being ours: the pod must be refused,
    as injecting would either delete it or add a second container of that name."""
    return isinstance(container, dict) and container.get("name") in RESERVED and \
        not is_ours(container, init=init)


def is_our_volume(volume: Any) -> bool:
    """Whether this entry of ``spec.volumes`` is one that injection rendered."""
    if not isinstance(volume, dict):
        return False
    name = volume.get("name")
    if name == TOKEN_VOLUME:
        projected = volume.get("projected")
        sources = projected.get("sources") if isinstance(projected, dict) else None
        return isinstance(sources, list) and len(sources) == 1 and isinstance(
            sources[0], dict) and isinstance(sources[0].get("serviceAccountToken"), dict) \
            and sources[0]["serviceAccountToken"].get("audience") == TOKEN_AUDIENCE
    if name == CA_VOLUME:
        config_map = volume.get("configMap")
        return isinstance(config_map, dict) and config_map.get("name") == CA_CONFIGMAP
    return False


def reserved_volume_but_not_ours(volume: Any) -> bool:
    """A volume that takes one of our names without being ours: the pod must be refused."""
    return isinstance(volume, dict) and volume.get("name") in RESERVED_VOLUMES and \
        not is_our_volume(volume)
