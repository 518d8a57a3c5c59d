"""A pod's status as a kubelet reports it, from what the node knows of its containers. Pure.

The node keeps one :class:`Run` per container (its state, restarts, what its probes said); this
module turns those into the ``status`` the API server stores: the phase (``Pending`` until the
init containers are done and an app container started, ``Running``, ``Succeeded``/``Failed``
when the app containers are done for good), the conditions (``PodReadyToStartContainers``,
``Initialized``, ``ContainersReady``, ``Ready`` from the readiness probes and readiness gates;
a condition keeps its ``lastTransitionTime`` until its status changes), and each container's
``state``, ``lastState``, ``ready``, ``started`` and ``restartCount``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from injector.sandbox.podspec import APP, INIT, SIDECAR, Container, PodView

Obj = dict[str, Any]
WAITING, RUNNING, TERMINATED = "waiting", "running", "terminated"


def stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@dataclass
class Run:
    """One container as the node sees it; the worker mutates it, this module only reads it."""

    name: str
    state: str = WAITING
    reason: str = "PodInitializing"
    message: str = ""
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    restarts: int = 0
    ready: bool = False
    started: bool = False
    container_id: str = ""
    image_id: str = ""
    last: Obj | None = None  # lastState.terminated

    def terminated(self) -> Obj:
        reason = self.reason or ("Completed" if self.exit_code == 0 else "Error")
        out: Obj = {"exitCode": self.exit_code if self.exit_code is not None else 137,
                    "reason": reason, "startedAt": stamp(self.started_at or 0),
                    "finishedAt": stamp(self.finished_at or 0), "containerID": self.container_id}
        if self.message:
            out["message"] = self.message
        return out

    @property
    def succeeded(self) -> bool:
        return self.state == TERMINATED and self.exit_code == 0


def container_status(c: Container, run: Run) -> Obj:
    if run.state == RUNNING:
        state: Obj = {"running": {"startedAt": stamp(run.started_at or 0)}}
    elif run.state == TERMINATED:
        state = {"terminated": run.terminated()}
    else:
        state = {"waiting": {"reason": run.reason, **({"message": run.message}
                                                     if run.message else {})}}
    out: Obj = {"name": c.name, "image": c.image, "imageID": run.image_id, "state": state,
                "lastState": {"terminated": run.last} if run.last else {},
                "ready": run.ready if c.role != INIT else run.succeeded,
                "restartCount": run.restarts, "started": run.state == RUNNING and run.started}
    if run.container_id:
        out["containerID"] = run.container_id
    return out


def phase(pod: PodView, runs: Mapping[str, Run], *, init_failed: bool) -> str:
    """The kubelet's phase: Pending, Running, Succeeded or Failed."""
    if init_failed:
        return "Failed"
    if not all(runs[c.name].succeeded for c in pod.by_role(INIT)):
        return "Pending"
    apps = [runs[c.name] for c in pod.by_role(APP)]
    if any(r.state == RUNNING for r in apps):
        return "Running"
    if apps and all(r.state == TERMINATED for r in apps):
        if pod.restart_policy == "Always":
            return "Running"
        if all(r.exit_code == 0 for r in apps):
            return "Succeeded"
        return "Failed" if pod.restart_policy == "Never" else "Running"
    return "Running" if any(r.restarts or r.last for r in apps) else "Pending"


def _condition(kind: str, ok: bool, *, previous: Mapping[str, Obj], now: str,
               reason: str = "", message: str = "") -> Obj:
    status = "True" if ok else "False"
    before = previous.get(kind) or {}
    since = before.get("lastTransitionTime") if before.get("status") == status else None
    out: Obj = {"type": kind, "status": status, "lastProbeTime": None,
                "lastTransitionTime": since or now}
    if not ok and reason:
        out.update(reason=reason, message=message)
    return out


def _names(containers: Sequence[Container]) -> str:
    return "[" + " ".join(c.name for c in containers) + "]"


def conditions(pod: PodView, runs: Mapping[str, Run], *, sandbox_ready: bool,
               previous: Sequence[Obj], gates: Mapping[str, bool], now: str) -> list[Obj]:
    """The pod's conditions, PodScheduled kept as the scheduler wrote it."""
    before = {str(c.get("type")): c for c in previous}
    pending = [c for c in pod.by_role(INIT) if not runs[c.name].succeeded]
    pending += [c for c in pod.by_role(SIDECAR) if not runs[c.name].started]
    unready = [c for c in pod.by_role(SIDECAR, APP) if not runs[c.name].ready]
    closed = [g for g, ok in gates.items() if not ok]
    out = [c for c in previous if c.get("type") == "PodScheduled"]
    out += [
        _condition("PodReadyToStartContainers", sandbox_ready, previous=before, now=now),
        _condition("Initialized", not pending, previous=before, now=now,
                   reason="ContainersNotInitialized",
                   message=f"containers with incomplete status: {_names(pending)}"),
        _condition("ContainersReady", not unready, previous=before, now=now,
                   reason="ContainersNotReady",
                   message=f"containers with unready status: {_names(unready)}"),
        _condition("Ready", not unready and not closed, previous=before, now=now,
                   reason="ContainersNotReady" if unready else "ReadinessGatesNotReady",
                   message=(f"containers with unready status: {_names(unready)}" if unready
                            else f"the status of pod readiness gates are not true: {closed}")),
    ]
    return out


def status(pod: PodView, runs: Mapping[str, Run], *, pod_ip: str, host_ip: str,
           start_time: float, sandbox_ready: bool, init_failed: bool, now: float) -> Obj:
    """The whole ``status`` to write (a merge patch replaces each list in it whole)."""
    stored = pod.pod.get("status") or {}
    gates = {g: any(c.get("type") == g and c.get("status") == "True"
                    for c in stored.get("conditions") or []) for g in pod.readiness_gates}
    out: Obj = {
        "phase": phase(pod, runs, init_failed=init_failed),
        "conditions": conditions(pod, runs, sandbox_ready=sandbox_ready,
                                 previous=stored.get("conditions") or [], gates=gates,
                                 now=stamp(now)),
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "startTime": stamp(start_time),
        "initContainerStatuses": [container_status(c, runs[c.name])
                                  for c in pod.by_role(INIT, SIDECAR)],
        "containerStatuses": [container_status(c, runs[c.name]) for c in pod.by_role(APP)],
    }
    if pod_ip:
        out.update(podIP=pod_ip, podIPs=[{"ip": pod_ip}])
    for gate in pod.readiness_gates:  # the gates' own conditions are someone else's to write
        out["conditions"] += [c for c in stored.get("conditions") or [] if c.get("type") == gate]
    return out
