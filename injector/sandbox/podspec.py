"""A Pod as the node runs it, read from the object the API server stored. Pure.

The kubelet's reading of a pod spec, reduced to what the sandbox node does: the containers in
the order it starts them (init containers one at a time, native sidecars, which are init
containers with ``restartPolicy: Always``, then the app containers), each with its probes,
its preStop hook, the volumes it mounts and where, and the user it runs as. What the node
cannot do is said once, in :func:`unsupported`, so the pod gets a clear reason instead of a
half-run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command and args; ``$$`` is a literal ``$``."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR.sub(sub, text)


Obj = Mapping[str, Any]
INIT, SIDECAR, APP = "init", "sidecar", "app"
DEFAULT_GRACE = 30


@dataclass(frozen=True)
class Probe:
    """A probe or a lifecycle handler: httpGet, tcpSocket, exec, grpc or sleep."""

    kind: str
    port: int = 0
    path: str = "/"
    host: str = ""  # empty: the pod's IP, as the kubelet dials it
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    seconds: float = 0.0  # sleep
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass(frozen=True)
class Mount:
    volume: str
    path: str
    read_only: bool = False
    sub_path: str = ""


@dataclass(frozen=True)
class Container:
    name: str
    role: str
    image: str
    spec: Obj = field(repr=False)
    uid: int | None = None
    gid: int | None = None
    workdir: str = "/"
    startup: Probe | None = None
    readiness: Probe | None = None
    liveness: Probe | None = None
    pre_stop: Probe | None = None
    mounts: tuple[Mount, ...] = ()


@dataclass(frozen=True)
class PodView:
    namespace: str
    name: str
    uid: str
    service_account: str
    restart_policy: str
    grace_seconds: int
    containers: tuple[Container, ...]
    volumes: tuple[Obj, ...]
    enable_service_links: bool
    readiness_gates: tuple[str, ...]
    pod: Obj = field(repr=False)

    def by_role(self, *roles: str) -> list[Container]:
        return [c for c in self.containers if c.role in roles]


def _port(value: Any, ports: Mapping[str, int]) -> int:
    if isinstance(value, str) and not value.isdigit():
        return ports.get(value, 0)
    return int(value or 0)


def handler(spec: Obj | None, ports: Mapping[str, int]) -> Probe | None:
    """A probe's or hook's action (without its timing)."""
    if not spec:
        return None
    if "httpGet" in spec:
        get = spec["httpGet"]
        headers = tuple((str(h["name"]), str(h.get("value", "")))
                        for h in get.get("httpHeaders") or [])
        return Probe("http", port=_port(get.get("port"), ports), path=str(get.get("path", "/")),
                     host=str(get.get("host", "")), scheme=str(get.get("scheme", "HTTP")),
                     headers=headers)
    if "tcpSocket" in spec:
        tcp = spec["tcpSocket"]
        return Probe("tcp", port=_port(tcp.get("port"), ports), host=str(tcp.get("host", "")))
    if "exec" in spec:
        return Probe("exec", command=tuple(str(c) for c in spec["exec"].get("command") or []))
    if "grpc" in spec:
        return Probe("grpc", port=int(spec["grpc"].get("port", 0)))
    if "sleep" in spec:
        return Probe("sleep", seconds=float(spec["sleep"].get("seconds", 0)))
    return None


def probe(spec: Obj | None, ports: Mapping[str, int]) -> Probe | None:
    """A probe with the kubelet's defaults for its timing."""
    action = handler(spec, ports)
    if action is None or spec is None:
        return None
    return Probe(
        action.kind, port=action.port, path=action.path, host=action.host,
        scheme=action.scheme, headers=action.headers, command=action.command,
        initial_delay=float(spec.get("initialDelaySeconds", 0)),
        period=float(spec.get("periodSeconds", 10)),
        timeout=float(spec.get("timeoutSeconds", 1)),
        success_threshold=int(spec.get("successThreshold", 1)),
        failure_threshold=int(spec.get("failureThreshold", 3)),
    )


def _container(spec: Obj, role: str, security: Obj) -> Container:
    ports = {str(p["name"]): int(p["containerPort"]) for p in spec.get("ports") or []
             if "name" in p}
    sc = {**security, **(spec.get("securityContext") or {})}
    lifecycle = spec.get("lifecycle") or {}
    mounts = tuple(Mount(str(m["name"]), str(m["mountPath"]), bool(m.get("readOnly", False)),
                         str(m.get("subPath") or m.get("subPathExpr") or ""))
                   for m in spec.get("volumeMounts") or [])
    uid, gid = sc.get("runAsUser"), sc.get("runAsGroup")
    return Container(
        name=str(spec["name"]), role=role, image=str(spec.get("image", "")), spec=spec,
        uid=None if uid is None else int(uid), gid=None if gid is None else int(gid),
        workdir=str(spec.get("workingDir") or "/"),
        startup=probe(spec.get("startupProbe"), ports),
        readiness=probe(spec.get("readinessProbe"), ports),
        liveness=probe(spec.get("livenessProbe"), ports),
        pre_stop=handler(lifecycle.get("preStop"), ports), mounts=mounts,
    )


def view(pod: Obj) -> PodView:
    """The node's reading of a stored Pod."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    security = {k: v for k, v in (spec.get("securityContext") or {}).items()
                if k in ("runAsUser", "runAsGroup")}
    containers = [
        _container(c, SIDECAR if c.get("restartPolicy") == "Always" else INIT, security)
        for c in spec.get("initContainers") or []
    ] + [_container(c, APP, security) for c in spec.get("containers") or []]
    grace = spec.get("terminationGracePeriodSeconds")
    return PodView(
        namespace=str(meta.get("namespace", "")), name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        service_account=str(spec.get("serviceAccountName") or "default"),
        restart_policy=str(spec.get("restartPolicy") or "Always"),
        grace_seconds=DEFAULT_GRACE if grace is None else int(grace),
        containers=tuple(containers), volumes=tuple(spec.get("volumes") or []),
        enable_service_links=spec.get("enableServiceLinks", True) is not False,
        readiness_gates=tuple(str(g.get("conditionType")) for g in
                              spec.get("readinessGates") or []),
        pod=pod,
    )


SUPPORTED_VOLUMES = ("emptyDir", "configMap", "secret", "downwardAPI", "projected")
SUPPORTED_SOURCES = ("serviceAccountToken", "configMap", "secret", "downwardAPI")


def unsupported(pod: PodView) -> list[str]:
    """What this pod asks of a node that the sandbox node cannot give, one line each."""
    spec = pod.pod.get("spec") or {}
    found = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            found.append(f"{key}: the sandbox node runs every pod in a namespace of its own")
    for volume in pod.volumes:
        kind = next((k for k in volume if k != "name"), "?")
        if kind not in SUPPORTED_VOLUMES:
            found.append(f"volume {volume.get('name')!r}: {kind} volumes are not supported by "
                         f"the sandbox node (it has {', '.join(SUPPORTED_VOLUMES)})")
        for source in (volume.get("projected") or {}).get("sources") or []:
            other = [k for k in source if k not in SUPPORTED_SOURCES]
            if other:
                found.append(f"volume {volume.get('name')!r}: projected {other[0]} is not "
                             "supported by the sandbox node")
    for c in pod.containers:
        for mount in c.mounts:
            if mount.sub_path:
                found.append(f"container {c.name}: volumeMount {mount.path} uses subPath, which "
                             "the sandbox node does not support")
    return found


def references(pod: PodView) -> tuple[set[str], set[str]]:
    """The ConfigMaps and Secrets the pod's env needs (volumes are read where they are made)."""
    configmaps: set[str] = set()
    secrets: set[str] = set()
    for c in pod.containers:
        for item in c.spec.get("env") or []:
            source = item.get("valueFrom") or {}
            if "configMapKeyRef" in source:
                configmaps.add(str(source["configMapKeyRef"]["name"]))
            if "secretKeyRef" in source:
                secrets.add(str(source["secretKeyRef"]["name"]))
        for item in c.spec.get("envFrom") or []:
            if "configMapRef" in item:
                configmaps.add(str(item["configMapRef"]["name"]))
            if "secretRef" in item:
                secrets.add(str(item["secretRef"]["name"]))
    return configmaps, secrets

