"""A long-running process the sandbox node keeps alive (its control plane, kube-proxy): started
in a process group of its own, restarted a second after it exits, stopped by its group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Protocol


class Node(Protocol):
    """Where it runs: the node's network namespace (:class:`injector.sandbox.netns.Netns`)."""

    @property
    def name(self) -> str: ...

    def argv(self, argv: list[str]) -> list[str]: ...


class RestartingProcess:
    """What both node services share; a subclass says what to run (``argv``)."""

    def __init__(self, *, node: Node, log: Path) -> None:
        self.node, self.log = node, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._restart_at: float | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        """Run ``argv()`` in the node's namespace, in a process group of its own, its output
        appended to ``log``."""
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.node.argv(self.argv()), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def supervise(self) -> None:
        """Called every few ticks: restart it (after a second) if it exited."""
        if self.proc is None or self.proc.poll() is None:
            return
        if self._restart_at is None:
            self._restart_at = time.monotonic() + 1
        elif time.monotonic() >= self._restart_at:
            self._restart_at = None
            self.restarts += 1
            self.start()

    def stop(self, *, timeout: float = 5) -> None:
        """SIGTERM to its group, SIGKILL after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
