"""Fixtures for the sandbox tests: a state directory whose sandbox is gone when a test ends.

Each test gets its own state directory (so its namespaces carry its own supervisor's pid and
never meet another run's), and a finalizer runs ``down`` on it whether the test passed or not.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from injector.sandbox import control
from injector.sandbox.state import StateDir


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "setpriv", "iptables-restore"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not (Path(sys.executable).parent / "envoy").exists() and shutil.which("envoy") is None:
        return "needs envoy"
    return None


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateDir]:
    """A sandbox state directory; whatever runs in it is removed at teardown."""
    why = _why_not()
    if why:
        pytest.skip(why)
    state = StateDir(tmp_path / "state")
    yield state
    if state.root.exists():
        left = control.down(state)
        assert not left, f"the sandbox left {left}"

