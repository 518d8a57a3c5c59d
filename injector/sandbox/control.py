"""What ``sandbox up``/``down``/``status``/``logs`` and the demo do, apart from printing.

``up`` writes the plan, forks the supervisor (its own session: it outlives the CLI) and waits
until every pod is ready, failing fast, with the container's last log lines, when a container
cannot start; on a timeout it names, per pod not ready, the container holding it back and why
(its probe, where, and what the probe saw), with the end of that container's log. ``down``
works from the state directory alone: it stops the supervisor (checking the recorded start
time, so a recycled pid is never signalled), kills any container it recorded, deletes every
journaled namespace and hosts directory, and removes the directory only when nothing is left;
so it cleans up after a crashed or killed ``up`` as well as a running sandbox.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from injector.sandbox import network, nssocket
from injector.sandbox.model import NODE_ADDRESS, ContainerPlan, PodPlan, Probe, SandboxPlan
from injector.sandbox.progress import plural
from injector.sandbox.state import StateDir, same_process
from mesh.contract import (
    CONTROLPLANE_DEBUG_PORT,
    READINESS_PATH,
    READINESS_PORT,
    XDS_CONFIG_TYPES,
)
from mesh.errors import SandboxError

READINESS = (READINESS_PORT, READINESS_PATH)
MAX_SHOWN = 5  # pods explained in a timeout's message; the rest are counted
# supervisors this process forked: kept so ``down`` can reap them (the supervisor outlives a
# CLI that exits, and an unreaped child is a zombie and a ResourceWarning)
_children: dict[int, subprocess.Popen[bytes]] = {}


def tail(state: StateDir, pod: str, container: str, lines: int = 8) -> str:
    try:
        text = state.log_path(pod, container).read_text(errors="replace")
    except OSError:
        return "    (no log yet)"
    if not text.strip():
        return "    (its log is empty)"
    shown = (ln if len(ln) <= 240 else ln[:240] + " ..." for ln in text.splitlines()[-lines:])
    return "\n".join("    | " + line for line in shown)


def _problem(state: StateDir, pod: PodPlan, info: dict[str, Any]) -> str | None:
    """Why a pod will not come up, or None while it still may."""
    if str(info.get("phase", "")).startswith("Failed"):
        return f"pod {pod.key}: {info['phase'][8:]}"
    for name, c in (info.get("containers") or {}).items():
        crashed = c["state"] == "terminated" and c["exit_code"] not in (0, None)
        if crashed and (c["role"] == "init" or c["restarts"] >= 2):
            return (f"pod {pod.key}: container {name} exited with code {c['exit_code']}"
                    f" (restarts: {c['restarts']}); its log ends:\n{tail(state, pod.key, name)}")
    return None


def pod_ready(pod: PodPlan, info: dict[str, Any]) -> bool:
    if info.get("phase") != "Running":
        return False
    containers = info.get("containers") or {}
    for c in pod.containers:
        got = containers.get(c.name) or {}
        if c.role == "sidecar" and not (got.get("state") == "running" and got.get("started")):
            return False
        if c.role == "app" and got.get("state") not in ("running", "completed"):
            return False
        if c.role == "app" and got.get("state") == "running" and not _app_ready(c, info):
            return False
    return True


def _app_ready(c: ContainerPlan, info: dict[str, Any]) -> bool:
    """Its readiness probe passes or, without one, its declared ports accept connections."""
    ns, probe = info.get("netns", ""), c.readiness_probe
    if probe is not None:
        return nssocket.probe(ns, kind=probe.kind, port=probe.port, path=probe.path)
    return all(nssocket.probe(ns, kind="tcp", port=port) for port in c.ports)


def _probe_text(probe: Probe) -> str:
    """A probe as a manifest author wrote it: ``httpGet :8080/healthz``, ``tcpSocket :5432``."""
    return f"httpGet :{probe.port}{probe.path}" if probe.kind == "http" else (
        f"tcpSocket :{probe.port}")


def _holdup(c: ContainerPlan, got: dict[str, Any], ns: str) -> str | None:
    """Why this container keeps its pod from being ready now, or None when it does not."""
    state, code = got.get("state", "waiting"), got.get("exit_code")
    ended = f"exited with code {code} (restarts: {got.get('restarts', 0)})"
    if c.role == "init":
        return None if state == "completed" else {
            "running": "init container still running", "waiting": "init container not started",
        }.get(state, f"init container {ended}")
    if c.role == "sidecar" and state == "running" and not got.get("started"):
        probe = c.startup_probe
        if probe is None:  # "started" is set at once without one
            return "not started"
        _, seen = nssocket.probe_result(ns, kind=probe.kind, port=probe.port, path=probe.path)
        return f"startup probe {_probe_text(probe)} failing, last result: {seen}"
    if state == "waiting":
        return "not started yet (an earlier container of the pod is not done)"
    if state != "running":
        return None if c.role == "app" and state == "completed" else ended
    if c.role == "sidecar":
        return None
    if c.readiness_probe is not None:
        probe = c.readiness_probe
        ok, seen = nssocket.probe_result(ns, kind=probe.kind, port=probe.port, path=probe.path)
        return None if ok else f"readiness probe {_probe_text(probe)} failing, last result: {seen}"
    for port in c.ports:
        ok, seen = nssocket.probe_result(ns, kind="tcp", port=port)
        if not ok:
            return (f"containerPort {port} does not accept connections ({seen}); without a "
                    "readiness probe the sandbox waits for the declared ports")
    return None


def not_ready(state: StateDir, pod: PodPlan, info: dict[str, Any]) -> str:
    """Which container keeps a pod from being ready, why, and the end of its log."""
    containers = info.get("containers") or {}
    for c in pod.containers:
        why = _holdup(c, containers.get(c.name) or {}, info.get("netns", ""))
        if why is not None:
            return (f"pod {pod.key}: container {c.name} ({c.role}): {why}; its log ends:\n"
                    + tail(state, pod.key, c.name))
    return f"pod {pod.key}: phase {info.get('phase') or 'Pending'}"


def start(state: StateDir, plan: SandboxPlan) -> int:
    """Write the plan and fork the supervisor; returns its pid."""
    if state.exists():
        raise SandboxError(
            f"a sandbox already lives in {state.root}: run `meshinject sandbox down` first "
            "(or choose another --state-dir)"
        )
    state.create(plan)
    with open(state.root / "supervisor.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "injector.sandbox.supervisor", str(state.root)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    state.record_owner(proc.pid)
    _children[proc.pid] = proc
    return proc.pid


def wait_ready(
    state: StateDir, plan: SandboxPlan, *, supervisor: int, timeout: float = 60,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Block until every pod is ready; SandboxError (with the reason) otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        status = state.status()
        if status.get("phase") == "failed":
            raise SandboxError(f"the sandbox failed to start: {status.get('error')}")
        pods = status.get("pods") or {}
        ready = 0
        for pod in plan.pods:
            info = pods.get(pod.key) or {}
            if (why := _problem(state, pod, info)) is not None:
                raise SandboxError(why)
            ready += pod_ready(pod, info)
        if progress is not None:
            progress(ready, len(plan.pods))
        if ready == len(plan.pods) and (why := mesh_lag(state, plan, pods)) is None:
            return
        if ready == len(plan.pods) and time.monotonic() > deadline:
            raise SandboxError(f"pods ready, but the mesh did not converge in {timeout:.0f}s: "
                               f"{why}; see {state.root / 'controlplane.log'}")
        if not same_process(supervisor, None):
            raise SandboxError(f"the supervisor exited; see {state.root / 'supervisor.log'}")
        if time.monotonic() > deadline:
            late = [p for p in plan.pods if not pod_ready(p, pods.get(p.key) or {})]
            shown = [not_ready(state, p, pods.get(p.key) or {}) for p in late[:MAX_SHOWN]]
            more = len(late) - len(shown)
            raise SandboxError(
                f"{plural(len(late), 'pod')} of {len(plan.pods)} not ready after {timeout:g}s:\n"
                + "\n".join(shown) + (f"\n... and {plural(more, 'more pod')}" if more else "")
            )
        time.sleep(0.1)


def mesh_lag(state: StateDir, plan: SandboxPlan, pods: dict[str, Any]) -> str | None:
    """Why the control plane and the proxies have not caught up with the pods yet, or None
    once every Service's ready endpoints are applied and every proxy ACKed its latest config."""
    if not any(p.injected for p in plan.pods):
        return None
    owner = state.owner()
    node = network.node_name(owner[0]) if owner else ""
    try:
        _, endpoints = nssocket.http_get(node, CONTROLPLANE_DEBUG_PORT, "/debug/endpoints",
                                         host=NODE_ADDRESS, timeout=1)
        _, proxies = nssocket.http_get(node, CONTROLPLANE_DEBUG_PORT, "/debug/proxies",
                                       host=NODE_ADDRESS, timeout=1)
        applied, connected = json.loads(endpoints), json.loads(proxies)
    except (OSError, ValueError) as err:
        return f"the control plane does not answer ({err})"
    by_address = {p.address: p for p in plan.pods}
    for service in plan.services:
        want = sorted(a for a in service.endpoints
                      if a in by_address and pod_ready(by_address[a], pods.get(
                          by_address[a].key) or {}))
        if applied.get(f"{service.namespace}/{service.name}", []) != want:
            return f"Service {service.namespace}/{service.name}'s endpoints are not applied yet"
    # every type it subscribed to (the config's four, and its secrets) ACKed at the latest
    current = {(p["namespace"], p["pod"]) for p in connected
               if all(t["current"] for t in p["types"].values())
               and set(p["types"]) >= XDS_CONFIG_TYPES}
    for pod in plan.pods:
        if pod.injected and (pod.namespace, pod.name) not in current:
            return f"pod {pod.key}'s proxy has not ACKed its latest config"
    return None


def _killpg(pid: int, started: int | None) -> None:
    if same_process(pid, started):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def down(state: StateDir, *, timeout: float = 15) -> list[str]:
    """Remove everything the sandbox in ``state`` made; returns what could not be removed."""
    owner = state.owner()
    if owner is not None and owner[0] != os.getpid() and same_process(*owner):
        os.kill(owner[0], signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while same_process(*owner) and time.monotonic() < deadline:
            time.sleep(0.05)
        if same_process(*owner):
            os.kill(owner[0], signal.SIGKILL)
    if owner is not None and (child := _children.pop(owner[0], None)) is not None:
        child.wait()
    for info in (state.status().get("pods") or {}).values():
        for c in (info.get("containers") or {}).values():
            if c.get("pid"):
                _killpg(int(c["pid"]), c.get("pid_start"))
    network.teardown(state)
    left = network.leftovers(state)
    if not left:
        state.remove()
    return left


def readiness(namespace: str) -> str:
    """The proxy's readiness as ``status`` shows it: ready, not ready, or down."""
    try:
        code, _ = nssocket.http_get(namespace, READINESS[0], READINESS[1], timeout=1)
    except OSError:
        return "down"
    return "ready" if code == 200 else f"not ready ({code})"
