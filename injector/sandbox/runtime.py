"""One container as a process: start it in its pod's namespace as its uid, watch it, restart it.

The process is ``ip netns exec NS [setpriv --reuid U --regid G --clear-groups --] PROGRAM ...``;
``ip`` and ``setpriv`` exec in place, so the pid we record is the program's own, and it leads its
own process group, so a stop reaches anything it forked. Its output is appended to its log file,
across restarts, as ``kubectl logs`` would show it. The env is exactly the container's (with a
PATH), never the supervisor's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from injector.sandbox import netns
from injector.sandbox.model import ContainerPlan, PodPlan
from injector.sandbox.state import start_time

MAX_BACKOFF = 10.0
STABLE = 10.0  # a container up this long has its back-off reset


@dataclass
class Container:
    plan: ContainerPlan
    pod: PodPlan
    ns: netns.Netns
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    state: str = "waiting"
    restarts: int = 0
    exit_code: int | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    mounts: list[tuple[str, str]] = field(default_factory=list)  # (host dir, container path)
    managed: bool = False  # handed to the supervisor's loop (sidecars and apps, once started)
    started: bool = False  # the startup probe passed (or there is none)
    _failures: int = field(default=0, repr=False)

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.ns.argv(self.plan.argv, uid=self.plan.uid, gid=self.plan.gid,
                             mounts=self.mounts),
                env=self.plan.env,
                cwd=self.plan.workdir if os.path.isdir(self.plan.workdir) else "/",
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.state, self.exit_code, self.started_at = "running", None, time.monotonic()
        self.restart_at = None
        self.started = self.plan.startup_probe is None

    def poll(self) -> int | None:
        if self.proc is None:
            return None
        code = self.proc.poll()
        if code is not None and self.state == "running":
            self.state = "completed" if code == 0 else "terminated"
            self.exit_code = code
        return code

    def backoff(self) -> float:
        """Kubelet-like back-off: 0.5 s doubling to 10 s, reset after a stable run."""
        if time.monotonic() - self.started_at > STABLE:
            self._failures = 0
        self._failures += 1
        return min(MAX_BACKOFF, 0.5 * 2.0 ** (self._failures - 1))

    def supervise(self, *, policy: str) -> bool:
        """Called every tick: note an exit, restart when due. True when something changed."""
        if self.state == "running":
            code = self.poll()
            if code is None:
                return False
            again = self.plan.role == "sidecar" or policy == "Always" or (
                policy == "OnFailure" and code != 0
            )
            if again:
                self.restart_at = time.monotonic() + self.backoff()
            return True
        if self.restart_at is not None and time.monotonic() >= self.restart_at:
            self.restarts += 1
            self.start()
            return True
        return False

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
        self.restart_at = None

    def wait_or_kill(self, deadline: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.poll()

    def status(self) -> dict[str, Any]:
        pid = self.proc.pid if self.proc is not None and self.state == "running" else None
        return {
            "role": self.plan.role, "state": self.state, "restarts": self.restarts,
            "exit_code": self.exit_code, "pid": pid,
            "pid_start": start_time(pid) if pid else None, "started": self.started,
            "uid": self.plan.uid,
        }
