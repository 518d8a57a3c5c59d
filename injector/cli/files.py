"""Reading what a command was given with ``-f FILE`` (``-`` for stdin), with errors that name it."""

from __future__ import annotations

import sys

from mesh.errors import ManifestError


def read_input(path: str) -> str:
    """The text of ``path``, or of stdin for ``-``; ManifestError naming the file otherwise."""
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"cannot read {path}: {err}") from err
