"""One container of a pod on the sandbox node, as a process, across its restarts.

The process is ``ip netns exec POD [mounts] [setpriv ...] PROGRAM`` (see
:meth:`injector.sandbox.netns.Netns.argv`): its pid is the program's, it leads its own process
group, and its output goes to its log file, the one ``kubectl logs`` reads; at a restart the
log of the run before is kept as the ``--previous`` one. Exits become the kubelet's terminated
state (a signal N is exit code 128+N), restarts wait a back-off (0.5 s doubling to 10 s, reset
after 10 s of running; a kubelet starts at 10 s and caps at 5 minutes) shown as
``CrashLoopBackOff``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from injector.sandbox import netns
from injector.sandbox.podspec import Container
from injector.sandbox.podstatus import RUNNING, TERMINATED, WAITING, Run

MAX_BACKOFF = 10.0
STABLE = 10.0


def exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class ContainerProcess:
    def __init__(self, spec: Container, *, ns: netns.Netns, log_dir: Path, pod_uid: str,
                 mounts: Sequence[tuple[str, str]], writable: Sequence[str]) -> None:
        self.spec, self.ns = spec, ns
        self.run = Run(spec.name)
        self.log = log_dir / f"{spec.name}.log"
        self.previous = log_dir / f"{spec.name}.previous.log"
        self.mounts, self.writable = list(mounts), list(writable)
        self.pod_uid = pod_uid
        self.proc: subprocess.Popen[bytes] | None = None
        self.restart_at: float | None = None
        self.began = 0.0  # monotonic start of the current run
        self.env: dict[str, str] = {}
        self._failures = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def argv_for(self, command: Sequence[str]) -> list[str]:
        """``command`` as this container runs it (its namespace, mounts and user)."""
        return self.ns.argv(command, uid=self.spec.uid, gid=self.spec.gid, mounts=self.mounts,
                            writable=self.writable)

    def start(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        if self.run.restarts or self.run.last:
            with contextlib.suppress(FileNotFoundError):
                self.log.replace(self.previous)
        self.env = dict(env)
        workdir = self.spec.workdir if os.path.isdir(self.spec.workdir) else "/"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv_for(argv), env=self.env, cwd=workdir, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        run = self.run
        run.state, run.reason, run.message, run.exit_code = RUNNING, "", "", None
        run.started_at, run.finished_at = time.time(), None
        run.started = self.spec.startup is None
        run.ready = False
        run.container_id = f"sandbox://{self.pod_uid[:8]}-{self.spec.name}-{run.restarts}"
        run.image_id = f"sandbox://{argv[0]}"
        self.began = time.monotonic()
        self.restart_at = None

    def poll(self) -> int | None:
        """The exit code once the process has ended (the state noted, once)."""
        if self.proc is None:
            return None
        code = self.proc.poll()
        if code is not None and self.run.state == RUNNING:
            run = self.run
            run.state, run.exit_code, run.finished_at = TERMINATED, exit_code(code), time.time()
            run.reason = "Completed" if code == 0 else "Error"
            run.ready = run.started = False
        return None if code is None else exit_code(code)

    def schedule_restart(self, *, pod: str) -> None:
        """After an exit: wait the back-off, as ``CrashLoopBackOff`` (or at once after a clean
        exit of a container that always restarts, as a kubelet does for a first restart)."""
        if time.monotonic() - self.began > STABLE:
            self._failures = 0
        self._failures += 1
        delay = min(MAX_BACKOFF, 0.5 * 2.0 ** (self._failures - 1))
        run = self.run
        run.last = run.terminated()
        run.state, run.reason = WAITING, "CrashLoopBackOff"
        run.message = (f"back-off {delay:g}s restarting failed container={self.spec.name} "
                       f"pod={pod}")
        self.restart_at = time.monotonic() + delay

    def due(self) -> bool:
        return self.restart_at is not None and time.monotonic() >= self.restart_at

    def waiting(self, reason: str, message: str) -> None:
        self.run.state, self.run.reason, self.run.message = WAITING, reason, message

    def signal(self, sig: int) -> None:
        if self.alive and self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        self.poll()
