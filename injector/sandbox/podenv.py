"""A container's environment, and the downward API's values, as the kubelet makes them. Pure.

The order is the kubelet's: the Service variables first (``default/kubernetes``'s,
``KUBERNETES_SERVICE_HOST`` and the rest, always; every Service of the pod's namespace too
unless ``enableServiceLinks`` is false), then ``envFrom``, then ``env`` in its order, each
value with ``$(VAR)`` expanded from what is defined so far (a reference to nothing stays as
written, ``$$`` is a ``$``). A key a ConfigMap or Secret lacks, or a missing ConfigMap or
Secret that is not ``optional``, is the container's ``CreateContainerConfigError``, named.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from injector.sandbox.podspec import expand
from mesh.quantity import parse_quantity

Obj = Mapping[str, Any]
Data = Mapping[str, str] | None  # a ConfigMap's or Secret's data (decoded); None: not found
_KEYED = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


@dataclass(frozen=True)
class Facts:
    """What the node knows of the pod beyond its spec: its address and the node's."""

    pod: Obj
    pod_ip: str
    host_ip: str
    node_name: str
    cpus: int = 1
    memory: int = 1 << 30


def field_text(path: str, facts: Facts) -> str | None:
    """A ``fieldRef``'s value; None for a path the downward API does not have."""
    meta, spec = facts.pod.get("metadata") or {}, facts.pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"), "spec.nodeName": facts.node_name,
        "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
        "status.hostIP": facts.host_ip, "status.hostIPs": facts.host_ip,
        "status.podIP": facts.pod_ip, "status.podIPs": facts.pod_ip,
    }
    if path in simple:
        return str(simple[path] or "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "".join(f'{k}="{v}"\n' for k, v in sorted(items.items()))
    if keyed := _KEYED.match(path):
        return str((meta.get(keyed[1]) or {}).get(keyed[2], ""))
    return None


def resource_text(ref: Obj, container: Obj, facts: Facts) -> str:
    """A ``resourceFieldRef``: the container's limit (the node's capacity when it has none) or
    request, divided by ``divisor`` and rounded up, as the kubelet does."""
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    given = (resources.get(kind) or {}).get(name)
    if given is not None:
        value = parse_quantity(str(given))
    elif kind == "limits":
        value = Fraction(facts.cpus if name == "cpu" else facts.memory)
    else:
        value = Fraction(0)
    divisor = parse_quantity(str(ref.get("divisor") or "1")) or Fraction(1)
    return str(math.ceil(value / divisor))


def _service_vars(service: Obj) -> dict[str, str]:
    meta, spec = service.get("metadata") or {}, service.get("spec") or {}
    ip = spec.get("clusterIP")
    ports = spec.get("ports") or []
    if not ip or ip == "None" or not ports:
        return {}
    prefix = str(meta.get("name", "")).upper().replace("-", "_")
    first = ports[0]
    out = {f"{prefix}_SERVICE_HOST": ip, f"{prefix}_SERVICE_PORT": str(first["port"]),
           f"{prefix}_PORT": f"{str(first.get('protocol', 'TCP')).lower()}://{ip}:{first['port']}"}
    for port in ports:
        proto = str(port.get("protocol", "TCP"))
        if port.get("name"):
            out[f"{prefix}_SERVICE_PORT_{str(port['name']).upper().replace('-', '_')}"] = str(
                port["port"])
        base = f"{prefix}_PORT_{port['port']}_{proto}"
        out.update({base: f"{proto.lower()}://{ip}:{port['port']}", f"{base}_PROTO":
                    proto.lower(), f"{base}_PORT": str(port["port"]), f"{base}_ADDR": ip})
    return out


def service_env(services: Iterable[Obj], *, namespace: str, links: bool) -> dict[str, str]:
    """The Service variables of a pod in ``namespace``: ``default/kubernetes``'s always, its
    own namespace's with ``enableServiceLinks`` (which win over the former, by name)."""
    master: dict[str, str] = {}
    own: dict[str, dict[str, str]] = {}
    for service in services:
        meta = service.get("metadata") or {}
        if meta.get("namespace") == "default" and meta.get("name") == "kubernetes":
            master = _service_vars(service)
        if links and meta.get("namespace") == namespace:
            own[str(meta.get("name"))] = _service_vars(service)
    env = {} if "kubernetes" in own else dict(master)
    for name in sorted(own):
        env.update(own[name])
    return env


def _key(data: Data, key: str) -> str | None:
    return None if data is None else data.get(key)


def container_env(container: Obj, *, facts: Facts, services: Mapping[str, str],
                  configmaps: Mapping[str, Data], secrets: Mapping[str, Data]
                  ) -> tuple[dict[str, str], list[str]]:
    """(the env, what is wrong with it): problems are the container's config errors."""
    env = dict(services)
    problems: list[str] = []
    for item in container.get("envFrom") or []:
        ref = item.get("configMapRef") or item.get("secretRef") or {}
        kind = "configmap" if "configMapRef" in item else "secret"
        data = (configmaps if kind == "configmap" else secrets).get(str(ref.get("name")))
        if data is None:
            if not ref.get("optional"):
                problems.append(f'{kind} "{ref.get("name")}" not found')
            continue
        prefix = str(item.get("prefix", ""))
        env.update({prefix + k: v for k, v in data.items() if _ENV_NAME.match(prefix + k)})
    for item in container.get("env") or []:
        name = str(item["name"])
        if "value" in item or "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        source = item["valueFrom"]
        value: str | None = None
        if "fieldRef" in source:
            value = field_text(str(source["fieldRef"].get("fieldPath")), facts)
        elif "resourceFieldRef" in source:
            value = resource_text(source["resourceFieldRef"], container, facts)
        elif "configMapKeyRef" in source or "secretKeyRef" in source:
            ref = source.get("configMapKeyRef") or source["secretKeyRef"]
            kind = "configmap" if "configMapKeyRef" in source else "secret"
            data = (configmaps if kind == "configmap" else secrets).get(str(ref.get("name")))
            value = _key(data, str(ref.get("key")))
            if value is None and not ref.get("optional"):
                missing = "not found" if data is None else f'has no key "{ref.get("key")}"'
                problems.append(f'{kind} "{ref.get("name")}" {missing} (env {name})')
                continue
            if value is None:
                continue
        env[name] = value or ""
    return env, problems


def decode_secret(data: Mapping[str, str] | None) -> dict[str, str]:
    """A Secret's ``data`` (base64) as text."""
    return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (data or {}).items()}
