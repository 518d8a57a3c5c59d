"""Running the real ``meshinject`` CLI as a user would, in a subprocess."""

from __future__ import annotations

import subprocess
import sys


def meshinject(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run the real CLI, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "injector.cli", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
