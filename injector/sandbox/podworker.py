"""One pod on the sandbox node, from binding to deletion: what a kubelet's pod worker does.

A thread per pod. It makes the pod's network namespace and volumes (waiting, with the reason
in the pod's status, while a ConfigMap or Secret it needs is missing), runs the init containers
one at a time to completion, starts the native sidecars (each waited for until its startup
probe passes), then the app containers; restarts what exits per the restart policy; probes
(startup, then liveness and readiness) from the node; and writes the pod's status whenever it
changed. On graceful deletion (``deletionTimestamp``) it runs the app containers' preStop hooks,
sends SIGTERM, waits, then does the same for the sidecars in reverse order, and SIGKILLs what is
left when the grace period is over; then it removes the pod's namespace and asks the API server
to delete the pod for good (``gracePeriodSeconds: 0``, on the pod's uid).
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from injector.sandbox import images, netns, podenv, podspec, podstatus, probes
from injector.sandbox.nodenet import NodeNetwork
from injector.sandbox.podrun import ContainerProcess
from injector.sandbox.podspec import APP, INIT, SIDECAR
from injector.sandbox.podstatus import RUNNING, TERMINATED
from injector.sandbox.volumes import MissingSource, Volumes
from mesh.errors import Conflict, KubeError, NotFound, SandboxError
from mesh.kube.client import Kube

Obj = dict[str, Any]
TICK = 0.1
RETRY = 5.0  # a missing ConfigMap, an image it cannot run: looked at again this often


class Node(Protocol):
    """What a pod worker needs of its node."""

    name: str
    kube: Kube
    network: NodeNetwork
    pods_dir: Path
    cpus: int
    memory: int
    token_max_age: float
    volume_sync: float

    def services(self) -> list[Obj]: ...
    def hosts(self, namespace: str, pod_ip: str, hostname: str) -> str: ...
    def log(self, line: str) -> None: ...


class PodWorker:
    def __init__(self, node: Node, pod: Obj) -> None:
        self.node = node
        self.pod = pod
        self.view = podspec.view(pod)
        self.key = f"{self.view.namespace}/{self.view.name}"
        self.deleting = threading.Event()
        self.removed = threading.Event()  # gone from the API server: stop at once
        self.shutdown = threading.Event()  # the node agent stops
        self.ns_name, self.pod_ip = "", ""
        self.dir = node.pods_dir / self.view.uid
        self.procs = {c.name: ContainerProcess(
            c, ns=netns.Netns(""), log_dir=self.dir / "logs", pod_uid=self.view.uid,
            mounts=[], writable=[]) for c in self.view.containers}
        self.init_failed = False
        self.sandbox_ready = False
        self.started_at = time.time()
        self._pushed: Obj | None = None
        self._retry_at: dict[str, float] = {}
        self._probing: dict[tuple[str, str], Future[tuple[bool, str]]] = {}
        self._counts: dict[tuple[str, str], int] = {}  # + passes in a row, - failures
        self._next_probe: dict[tuple[str, str], float] = {}
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"probe-{self.key}")
        self.thread = threading.Thread(target=self._main, name=f"pod-{self.key}", daemon=True)

    # -- from the node ---------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def update(self, pod: Obj) -> None:
        self.pod = pod
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            self.deleting.set()

    def logs(self, container: str, *, previous: bool) -> tuple[Path, bool] | None:
        """(log file, running) of a container, or None for a name this pod does not have."""
        proc = self.procs.get(container)
        if proc is None:
            return None
        return (proc.previous if previous else proc.log), proc.alive

    def _stopping(self) -> bool:
        return self.shutdown.is_set() or self.removed.is_set()

    # -- the life of the pod ---------------------------------------------------------------
    def _main(self) -> None:
        try:
            problems = podspec.unsupported(self.view)
            if problems:
                for proc in self.procs.values():
                    proc.waiting("CreateContainerConfigError", "; ".join(problems))
                self._report(force=True)
                self._wait(lambda: self.deleting.is_set())
            elif self._setup():
                self._loop()
            if not self._stopping():
                self._terminate()
        except Exception as err:  # one pod's failure must not take the node down
            self.node.log(f"pod {self.key}: {type(err).__name__}: {err}")
            for proc in self.procs.values():
                proc.kill()
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
            if self.ns_name:
                self.node.network.detach(self.ns_name, self.pod_ip)
            if not self.shutdown.is_set():
                self._delete()

    def _wait(self, done: Callable[[], bool]) -> None:
        while not done() and not self._stopping():
            self.shutdown.wait(TICK)

    def _setup(self) -> bool:
        """The namespace, then the volumes (retried while a source is missing)."""
        for proc in self.procs.values():
            proc.waiting("ContainerCreating", "")
        self.ns_name, self.pod_ip = self.node.network.attach(
            self.view.uid, namespace=self.view.namespace, hostname=self.view.name)
        netns_path = self.node.network.hosts_path(self.ns_name)
        netns_path.write_text(self.node.hosts(self.view.namespace, self.pod_ip, self.view.name))
        self.sandbox_ready = True
        self.volumes = Volumes(self.node.kube, self.view, self.dir / "volumes",
                               facts=self._facts(), sync=self.node.volume_sync,
                               token_max_age=self.node.token_max_age)
        while not self.deleting.is_set() and not self._stopping():
            try:
                self.volumes.prepare()
                break
            except (MissingSource, KubeError) as err:
                for proc in self.procs.values():
                    proc.waiting("ContainerCreating", f"MountVolume.SetUp failed: {err}")
                self._report()
                self.shutdown.wait(RETRY / 2)
        else:
            return False
        pod_ns = netns.Netns(self.ns_name)
        by_name = {str(v["name"]): v for v in self.view.volumes}
        for proc in self.procs.values():
            proc.ns = pod_ns
            proc.mounts = mount_order([(str(self.volumes.host_dir(m.volume)), m.path)
                                       for m in proc.spec.mounts if m.volume in by_name])
            proc.writable = [m.path for m in proc.spec.mounts
                             if m.volume in by_name and not m.read_only
                             and "emptyDir" in by_name[m.volume]]
            proc.waiting("PodInitializing", "")
        self.node.network.mount_points([p for c in self.procs.values() for _, p in c.mounts])
        return True

    def _facts(self) -> podenv.Facts:
        return podenv.Facts(self.pod, pod_ip=self.pod_ip, host_ip=self.node.network.gateway,
                            node_name=self.node.name, cpus=self.node.cpus,
                            memory=self.node.memory)

    def _loop(self) -> None:
        while not self.deleting.is_set() and not self._stopping():
            self._advance()
            for proc in self.procs.values():
                self._supervise(proc)
                self._probe(proc)
            if self.volumes.refresh():
                self.node.log(f"pod {self.key}: volumes refreshed")
            self._report()
            if self._done():
                self._stop_sidecars()
                self._report(force=True)
                self._wait(lambda: self.deleting.is_set())
                return
            self.shutdown.wait(TICK)

    # -- starting --------------------------------------------------------------------------
    def _advance(self) -> None:
        """Start what is next: the first init container not done, sidecars up to the first
        whose startup probe has not passed, then every app container."""
        for c in self.view.containers:
            proc = self.procs[c.name]
            run = proc.run
            if c.role == INIT:
                if self.init_failed:
                    return
                if run.succeeded:
                    continue
                if run.state != RUNNING and proc.restart_at is None:
                    self._launch(proc)
                return
            if run.state != RUNNING and proc.restart_at is None and not run.last \
                    and run.state != TERMINATED:
                self._launch(proc)
            if c.role == SIDECAR and not run.started:
                return

    def _launch(self, proc: ContainerProcess) -> None:
        name = proc.spec.name
        if time.monotonic() < self._retry_at.get(name, 0):
            return
        facts = self._facts()
        configmaps, secrets = self._sources()
        services = podenv.service_env(self.node.services(), namespace=self.view.namespace,
                                      links=self.view.enable_service_links)
        env, problems = podenv.container_env(proc.spec.spec, facts=facts, services=services,
                                             configmaps=configmaps, secrets=secrets)
        env = {"PATH": images.container_path(), "HOSTNAME": self.view.name, "HOME": "/root",
               **env}
        if problems:
            proc.waiting("CreateContainerConfigError", "; ".join(problems))
            self._retry_at[name] = time.monotonic() + RETRY
            return
        try:
            argv = images.node_argv(proc.spec.spec, env=env)
        except SandboxError as err:
            again = proc.run.reason in ("ErrImagePull", "ImagePullBackOff")
            proc.waiting("ImagePullBackOff" if again else "ErrImagePull", str(err))
            self._retry_at[name] = time.monotonic() + RETRY
            return
        proc.start(argv, env)
        self.node.log(f"pod {self.key}: container {name} started (restarts {proc.run.restarts})")

    def _sources(self) -> tuple[dict[str, podenv.Data], dict[str, podenv.Data]]:
        wanted_cms, wanted_secrets = podspec.references(self.view)
        base = f"/api/v1/namespaces/{self.view.namespace}"
        configmaps: dict[str, podenv.Data] = {}
        secrets: dict[str, podenv.Data] = {}
        for name in wanted_cms:
            try:
                configmaps[name] = self.node.kube.request("GET", f"{base}/configmaps/{name}").get(
                    "data") or {}
            except NotFound:
                configmaps[name] = None
        for name in wanted_secrets:
            try:
                secrets[name] = podenv.decode_secret(self.node.kube.request(
                    "GET", f"{base}/secrets/{name}").get("data"))
            except NotFound:
                secrets[name] = None
        return configmaps, secrets

    # -- keeping them running ----------------------------------------------------------------
    def _supervise(self, proc: ContainerProcess) -> None:
        if proc.run.state == RUNNING:
            code = proc.poll()
            if code is not None:
                self._exited(proc, code)
        elif proc.due():
            proc.run.restarts += 1
            self._launch(proc)
            if proc.run.state != RUNNING:
                proc.restart_at = time.monotonic() + RETRY  # still not runnable

    def _exited(self, proc: ContainerProcess, code: int) -> None:
        """A container ended: restart it when its role and the pod's policy say so."""
        c = proc.spec
        self.node.log(f"pod {self.key}: container {c.name} exited with {code}")
        policy = self.view.restart_policy
        if c.role == INIT and code != 0 and policy == "Never":
            self.init_failed = True
        elif c.role == SIDECAR or (c.role == INIT and code != 0) or (
                c.role == APP and (policy == "Always" or (policy == "OnFailure" and code))):
            proc.schedule_restart(pod=f"{self.view.name}_{self.view.namespace}"
                                      f"({self.view.uid})")

    def _probe(self, proc: ContainerProcess) -> None:
        run, c = proc.run, proc.spec
        if run.state != RUNNING:
            return
        age = time.monotonic() - proc.began
        if not run.started and c.startup is not None:
            self._probe_once(proc, "startup", c.startup, age)
            return
        if c.readiness is None:
            run.ready = run.started
        else:
            self._probe_once(proc, "readiness", c.readiness, age)
        if c.liveness is not None:
            self._probe_once(proc, "liveness", c.liveness, age)

    def _probe_once(self, proc: ContainerProcess, kind: str, probe: podspec.Probe,
                    age: float) -> None:
        """Collect the last result of this probe, and start the next one when it is due."""
        key = (proc.spec.name, kind)
        running = self._probing.get(key)
        if running is not None:
            if not running.done():
                return
            del self._probing[key]
            self._verdict(proc, kind, probe, *running.result())
        if age < probe.initial_delay or time.monotonic() < self._next_probe.get(key, 0):
            return
        self._next_probe[key] = time.monotonic() + probe.period
        self._probing[key] = self._pool.submit(
            probes.run, probe, node_ns=self.node.network.node.name, pod_ip=self.pod_ip,
            exec_in=probes.exec_runner(proc.argv_for, proc.env))

    def _verdict(self, proc: ContainerProcess, kind: str, probe: podspec.Probe, ok: bool,
                 seen: str) -> None:
        key = (proc.spec.name, kind)
        previous = self._counts.get(key, 0)
        streak = (max(previous, 0) + 1) if ok else (min(previous, 0) - 1)
        self._counts[key] = streak
        run = proc.run
        if kind == "startup":
            if ok:
                run.started = True
            elif -streak >= probe.failure_threshold:
                self._unhealthy(proc, f"Startup probe failed: {seen}")
        elif kind == "readiness":
            if ok and streak >= probe.success_threshold:
                run.ready = True
            elif not ok and -streak >= probe.failure_threshold:
                run.ready = False
        elif not ok and -streak >= probe.failure_threshold:
            self._unhealthy(proc, f"Liveness probe failed: {seen}")

    def _unhealthy(self, proc: ContainerProcess, why: str) -> None:
        self.node.log(f"pod {self.key}: container {proc.spec.name}: {why}; restarting it")
        self._counts = {k: v for k, v in self._counts.items() if k[0] != proc.spec.name}
        proc.kill()
        self._exited(proc, proc.run.exit_code or 137)

    def _done(self) -> bool:
        """The app containers finished for good (a Job's pod)."""
        if self.init_failed:
            return True
        apps = [self.procs[c.name] for c in self.view.by_role(APP)]
        return bool(apps) and all(p.run.state == TERMINATED and p.restart_at is None
                                  for p in apps)

    def _stop_sidecars(self) -> None:
        for c in reversed(self.view.by_role(SIDECAR, INIT)):
            self.procs[c.name].restart_at = None
            self.procs[c.name].signal(signal.SIGTERM)

    # -- status ----------------------------------------------------------------------------
    def _report(self, *, force: bool = False) -> None:
        if self._stopping():
            return
        previous = (self._pushed or self.pod.get("status") or {}).get("conditions") or []
        view = dataclasses.replace(self.view, pod={**self.pod, "status": {
            **(self.pod.get("status") or {}), "conditions": previous}})
        runs = {name: p.run for name, p in self.procs.items()}
        status = podstatus.status(view, runs, pod_ip=self.pod_ip,
                                  host_ip=self.node.network.gateway, start_time=self.started_at,
                                  sandbox_ready=self.sandbox_ready,
                                  init_failed=self.init_failed, now=time.time())
        if status == self._pushed and not force:
            return
        body = {"metadata": {"uid": self.view.uid}, "status": status}
        try:
            self.node.kube.request(
                "PATCH", f"/api/v1/namespaces/{self.view.namespace}/pods/{self.view.name}/status",
                body=body, content_type="application/merge-patch+json")
            self._pushed = status
        except (NotFound, Conflict):
            self.removed.set()
        except KubeError as err:
            self.node.log(f"pod {self.key}: status not written: {err}")

    # -- the end ---------------------------------------------------------------------------
    def _terminate(self) -> None:
        """preStop, SIGTERM, wait; app containers first, then sidecars in reverse order;
        SIGKILL for whatever is left at the end of the grace period."""
        meta = self.pod.get("metadata") or {}
        grace = meta.get("deletionGracePeriodSeconds", self.view.grace_seconds)
        deadline = time.monotonic() + max(0, int(grace))
        self.node.log(f"pod {self.key}: terminating, grace {grace} s")
        for proc in self.procs.values():
            proc.restart_at = None
        groups = [self.view.by_role(APP), list(reversed(self.view.by_role(SIDECAR, INIT)))]
        for group in groups:
            threads = [threading.Thread(target=self._stop_one, args=(self.procs[c.name],
                                                                      deadline), daemon=True)
                       for c in group if self.procs[c.name].alive]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()) + 5)
        for proc in self.procs.values():
            if proc.alive:
                self.node.log(f"pod {self.key}: container {proc.spec.name} killed at the end "
                              "of the grace period")
                proc.kill()
            proc.poll()
            proc.run.ready = False
        self._report(force=True)

    def _stop_one(self, proc: ContainerProcess, deadline: float) -> None:
        hook = proc.spec.pre_stop
        if hook is not None:
            left = max(0.0, deadline - time.monotonic())
            _, seen = probes.run(dataclasses.replace(hook, timeout=left),
                                  node_ns=self.node.network.node.name, pod_ip=self.pod_ip,
                                  exec_in=probes.exec_runner(proc.argv_for, proc.env))
            self.node.log(f"pod {self.key}: container {proc.spec.name} preStop: {seen}")
        proc.signal(signal.SIGTERM)
        while proc.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.poll()

    def _delete(self) -> None:
        """Once everything has stopped: the pod's final deletion (a kubelet's last word)."""
        if self.removed.is_set():
            return
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": self.view.uid}}
        try:
            self.node.kube.request(
                "DELETE", f"/api/v1/namespaces/{self.view.namespace}/pods/{self.view.name}",
                body=body)
        except (NotFound, Conflict):
            pass
        except KubeError as err:
            self.node.log(f"pod {self.key}: final deletion failed: {err}")



# where the node runs every program from (this checkout, its venv): a pod's volume mounted
# over a parent of them (an emptyDir on /tmp, with the checkout under /tmp) must not hide them
PROGRAM_ROOTS = (str(Path(__file__).resolve().parents[2]), sys.prefix)


def mount_order(mounts: list[tuple[str, str]], *, keep: tuple[str, ...] = PROGRAM_ROOTS
                ) -> list[tuple[str, str]]:
    """Parents before children (a mount inside another volume lands in it), and last any
    mount that would hide where other volumes come from (an emptyDir on ``/tmp`` while the
    node's state is under ``/tmp``); each path of ``keep`` a mount would hide is bound into
    that mount's source first, so it stays where it was."""
    sources = [source for source, _ in mounts]

    def under(path: str, parent: str) -> bool:
        return path == parent or path.startswith(parent.rstrip("/") + "/")

    def hides(path: str) -> bool:
        return any(under(s, path) for s in sources)

    ordered = sorted(mounts, key=lambda m: (hides(m[1]), m[1].count("/"), m[1]))
    # a kept path is bound into the source of the mount that covers it, before that mount
    # (mounts are recursive binds, so it comes along): once /tmp is covered, /tmp/x names
    # the volume's directory, no longer the checkout
    out: list[tuple[str, str]] = []
    for source, path in ordered:
        covered = [k for k in keep if under(k, path)]
        out += [(k, source.rstrip("/") + k[len(path.rstrip("/")):]) for k in covered
                if not any(under(k, other) for other in covered if other != k)]
        out.append((source, path))
    return out
