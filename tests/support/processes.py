"""Ending a process the test run started, without a process group of its own."""

from __future__ import annotations

import subprocess
from typing import Any


def stop(proc: subprocess.Popen[Any]) -> None:
    """TERM, and KILL if it has not gone in 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
