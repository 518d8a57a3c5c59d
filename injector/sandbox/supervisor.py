"""The sandbox's kubelet: one process that starts every pod's containers and keeps them running.

It outlives ``sandbox up`` (which forks it and waits for the pods to be ready), so a pod keeps
running and restarting after the CLI returns. Per pod, in order, as the kubelet does: init
containers one at a time to completion, native sidecars (``restartPolicy: Always``) started and
waited for until their startup probe passes, then the app containers. A container that exits is
restarted per the pod's restartPolicy (sidecars always), with exponential back-off, and counted.
On SIGTERM (``sandbox down``) it stops every container, deletes the network and exits.

Run as ``python -m injector.sandbox.supervisor STATE_DIR``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from injector.sandbox import apiserver, control, netns, network, nssocket
from injector.sandbox.model import PodPlan
from injector.sandbox.plane import ControlPlane
from injector.sandbox.progress import plural
from injector.sandbox.runtime import Container
from injector.sandbox.state import StateDir
from mesh.envoy import bootstrap
from mesh.settings import MeshConfig

STARTUP_TIMEOUT = 30.0
TICK = 0.1
READINESS_EVERY = 0.25  # how often pods are probed and their endpoints published


class Supervisor:
    def __init__(self, state: StateDir, *, owner: int) -> None:
        self.state = state
        self.plan = state.plan()
        self.owner = owner
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.phase = "starting"
        self.error = ""
        self.pods: dict[str, list[Container]] = {}
        self.pod_phase: dict[str, str] = {p.key: "Pending" for p in self.plan.pods}
        self.keys = apiserver.Keys(state)
        self.control_plane: ControlPlane | None = None
        self.ready: dict[str, bool] = {}  # pod key -> Ready, as the EndpointSlices show it
        self.applied: tuple[int, int] | None = None  # the applied objects' file, as published

    # --- status ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "phase": self.phase, "error": self.error, "owner": self.owner,
                "control_plane": self.control_plane.status() if self.control_plane else None,
                "pods": {
                    key: {"phase": self.pod_phase[key], "netns": containers[0].ns.name,
                          "containers": {c.plan.name: c.status() for c in containers}}
                    for key, containers in self.pods.items()
                },
            }

    def publish(self) -> None:
        self.state.write_status(self.snapshot())

    def publish_registry(self, status: dict[str, Any]) -> None:
        """Tell the control plane which pods are Ready (their endpoints) and what was applied,
        when either changed."""
        pods = status.get("pods") or {}
        ready = {p.key: control.pod_ready(p, pods.get(p.key) or {}) for p in self.plan.pods}
        try:
            info = apiserver.applied_path(self.state).stat()
            applied: tuple[int, int] | None = (info.st_ino, info.st_mtime_ns)
        except FileNotFoundError:
            applied = None
        if ready != self.ready or applied != self.applied:
            self.ready, self.applied = ready, applied
            apiserver.publish(self.state, self.plan, ready)

    # --- pods -----------------------------------------------------------------------------
    def _wait_exit(self, container: Container) -> int | None:
        while not self.stopping.is_set():
            code = container.poll()
            if code is not None:
                return code
            time.sleep(TICK / 2)
        return None

    def _start_pod(self, pod: PodPlan, ns: str) -> None:
        try:
            self._run_pod(pod, ns)
        except Exception as err:  # a failed pod must not take the supervisor down
            with self.lock:
                self.pod_phase[pod.key] = f"Failed: {err}"
        self.publish()

    def _run_pod(self, pod: PodPlan, ns: str) -> None:
        containers = self.pods[pod.key]
        for container in containers:
            if self.stopping.is_set():
                return
            if container.plan.role == "init":
                if not self._run_init(container, pod):
                    return
                continue
            container.start()
            container.managed = True
            self.publish()
            if container.plan.role == "sidecar" and container.plan.startup_probe is not None:
                self._wait_started(container, ns)
        with self.lock:
            self.pod_phase[pod.key] = "Running"
        print(f"{time.strftime('%T')} pod {pod.key}: all containers started", flush=True)

    def _run_init(self, container: Container, pod: PodPlan) -> bool:
        """Run an init container to completion, restarting it on failure unless the pod's
        policy is Never; False when the pod must go no further (failed, or stopping)."""
        while True:
            container.start()
            self.publish()
            code = self._wait_exit(container)
            if code is None or code == 0:
                return True
            if pod.restart_policy == "Never":
                with self.lock:
                    self.pod_phase[pod.key] = (
                        f"Failed: init container {container.plan.name} exited {code}"
                    )
                return False
            if self.stopping.wait(container.backoff()):
                return False
            container.restarts += 1

    def _wait_started(self, container: Container, ns: str) -> None:
        probe = container.plan.startup_probe
        assert probe is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self.stopping.is_set() and time.monotonic() < deadline:
            if nssocket.probe(ns, kind=probe.kind, port=probe.port, path=probe.path):
                container.started = True
                return
            time.sleep(0.05)

    def _start_control_plane(self) -> None:
        """The mesh's control plane on the node, with the registry it reads, before any pod."""
        if not any(p.injected for p in self.plan.pods):
            return
        self.keys.ensure()
        apiserver.publish(self.state, self.plan, {})
        self.control_plane = ControlPlane(self.state, netns.Netns(network.node_name(self.owner)))
        begun = time.monotonic()
        self.control_plane.start()
        self.control_plane.wait_ready()
        print(f"{time.strftime('%T')} control plane ready in {time.monotonic() - begun:.2f}s",
              flush=True)

    # --- the loop -------------------------------------------------------------------------
    def _tick(self, pods: dict[str, PodPlan]) -> bool:
        """Restart what exited; True when something changed."""
        changed = False
        for key, containers in self.pods.items():
            policy = pods[key].restart_policy
            for container in containers:
                if container.managed:
                    changed |= container.supervise(policy=policy)
        return changed

    def _stop_all(self) -> None:
        everything = [c for containers in self.pods.values() for c in containers]
        for container in reversed(everything):
            container.terminate()
        deadline = time.monotonic() + 3
        for container in everything:
            container.wait_or_kill(deadline)

    def run(self) -> int:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.stopping.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        code = 0
        try:
            begun = time.monotonic()
            names = network.build(self.state, self.plan, owner=self.owner)
            took = time.monotonic() - begun
            print(f"{time.strftime('%T')} network for {plural(len(names), 'pod')} in {took:.2f}s",
                  flush=True)
            self._start_control_plane()
            shared = bootstrap.text(bootstrap.shared(MeshConfig.model_validate(
                self.plan.mesh_config)))
            for pod in self.plan.pods:
                ns = netns.Netns(names[pod.key])
                apiserver.write_volumes(self.state, pod, self.keys, bootstrap=shared)
                self.pods[pod.key] = [
                    Container(plan=c, pod=pod, ns=ns, log=self.state.log_path(pod.key, c.name),
                              mounts=apiserver.mounts(self.state, pod, c.mounts))
                    for c in pod.containers
                ]
                network.mount_points(self.state, [p for c in pod.containers for _, p in c.mounts])
            threads = [threading.Thread(target=self._start_pod, args=(p, names[p.key]), daemon=True)
                       for p in self.plan.pods]
            for thread in threads:
                thread.start()
            by_key = {p.key: p for p in self.plan.pods}
            ready_at = 0.0
            while not self.stopping.is_set():
                if self.phase == "starting" and not any(t.is_alive() for t in threads):
                    self.phase, ready_at = "running", 0.0
                if self.control_plane is not None:
                    self.control_plane.supervise()
                if self._tick(by_key) or time.monotonic() > ready_at:
                    status = self.snapshot()
                    self.state.write_status(status)
                    self.publish_registry(status)
                    ready_at = time.monotonic() + READINESS_EVERY
                self.stopping.wait(TICK)
        except Exception as err:
            self.phase, self.error, code = "failed", str(err), 1
            self.publish()
        finally:
            self.stopping.set()
            self._stop_all()
            if self.control_plane is not None:
                self.control_plane.stop()
            network.teardown(self.state)
            if self.phase != "failed":
                self.phase = "stopped"
            self.publish()
        return code


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    state = StateDir(Path(args[0]))
    state.record_owner(os.getpid())
    return Supervisor(state, owner=os.getpid()).run()


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    raise SystemExit(main())
