"""What in a pod's own spec cannot work once it is injected: each one refused at admission,
naming the container and the value, rather than injected into a pod that then fails in a way
that is far harder to trace.

- A container named ``mesh-init`` or ``mesh-proxy`` that injection did not render: injecting
  would have to delete it or add a second container of that name; likewise a volume named
  ``meshinject-token`` or ``meshinject-ca``.
- A declared TCP ``containerPort`` the proxy listens on (15000, 15001, 15006, 15021, 15090):
  whichever of the app and Envoy binds second fails, so either the proxy crash-loops and the
  pod never gets ready, or the app does. UDP ports do not clash with Envoy's TCP listeners.
- A container running as the proxy's uid or gid (1337), set on the container or inherited from
  the pod's ``securityContext``: mesh-init's rules let that uid's and gid's traffic out
  uncaptured (it is how the proxy's own traffic avoids a loop), so the app's outbound calls
  would silently skip the mesh: no mTLS, no authorization, no retries, no metrics. That is
  refused, not warned about, for the reason the webhook fails closed: a pod that quietly
  bypasses the mesh is worse than one that is loudly refused. (A uid set only in the image,
  not in the spec, cannot be seen here.)

Only the user's containers are judged: ours are recognised by :mod:`injector.core.rendered`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from injector.core import rendered
from mesh.contract import PROXY_GID, PROXY_PORTS, PROXY_UID
from mesh.errors import SpecError

_PORTS = ", ".join(str(p) for p in sorted(PROXY_PORTS))


def problems(pod: Mapping[str, Any]) -> list[SpecError]:
    """Every clash between the pod's own containers and what injection adds, in spec order."""
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return []
    pod_security = spec.get("securityContext")
    found: list[SpecError] = []
    for key, init in (("initContainers", True), ("containers", False)):
        items = spec.get(key)
        if not isinstance(items, list):
            continue
        for index, container in enumerate(items):
            if not isinstance(container, dict) or rendered.is_ours(container, init=init):
                continue
            field = f"spec.{key}[{index}] ({container.get('name')})"
            found.extend(SpecError(field, why) for why in _container(container, init=init,
                                                                     pod_security=pod_security))
    volumes = spec.get("volumes")
    for index, volume in enumerate(volumes if isinstance(volumes, list) else []):
        if rendered.reserved_volume_but_not_ours(volume):
            found.append(SpecError(
                f"spec.volumes[{index}] ({volume['name']})",
                f"the volume name {volume['name']} is reserved for the proxy's credentials "
                "meshinject mounts, and this one is not meshinject's: rename it"))
    return found


def _container(container: Mapping[str, Any], *, init: bool, pod_security: Any) -> Iterator[str]:
    if rendered.reserved_but_not_ours(container, init=init):
        yield (f"the container name {container['name']} is reserved for the container meshinject "
               "injects, and this one is not meshinject's: rename it")
    ports = container.get("ports")
    for port in ports if isinstance(ports, list) else []:
        if not isinstance(port, dict):
            continue
        number, protocol = port.get("containerPort"), port.get("protocol") or "TCP"
        if isinstance(number, int) and number in PROXY_PORTS and protocol == "TCP":
            yield (f"containerPort {number} is {PROXY_PORTS[number]}; the proxy listens on "
                   f"{_PORTS} in every injected pod, so the app and the proxy cannot both bind "
                   "it: move the app to another port")
    for field, reserved, what in (("runAsUser", PROXY_UID, "uid"),
                                  ("runAsGroup", PROXY_GID, "gid")):
        value, source = _effective(container, pod_security, field)
        if value == reserved:
            yield (f"runs as {what} {reserved} ({source}), the proxy's {what}, whose traffic the "
                   "capture rules let out uncaptured: this container's calls would bypass the "
                   f"mesh; run it as another {what}")


def _effective(container: Mapping[str, Any], pod_security: Any, field: str) -> tuple[Any, str]:
    """The container's ``field`` as the kubelet applies it: its own, else the pod's."""
    own = container.get("securityContext")
    if isinstance(own, dict) and _is_int(own.get(field)):
        return own[field], f"securityContext.{field}"
    if isinstance(pod_security, dict) and _is_int(pod_security.get(field)):
        return pod_security[field], f"spec.securityContext.{field}"
    return None, ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
