"""A one-line progress display: redrawn in place on a terminal, a plain final line otherwise.

Piped output (CI logs, the README) gets no carriage returns or escape codes, only the outcome.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, *, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.last = ""

    def update(self, text: str) -> None:
        if self.tty and text != self.last:
            elapsed = time.monotonic() - self.started
            self.stream.write(f"\r\033[K{self.label}: {text}  ({elapsed:.1f}s)")
            self.stream.flush()
        self.last = text

    def done(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        prefix = "\r\033[K" if self.tty else ""
        self.stream.write(f"{prefix}{self.label}: {text} ({elapsed:.1f}s)\n")
        self.stream.flush()


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 pod``, ``3 pods``, ``0 pods``; ``many`` for a noun that takes more than an s."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def bar(fraction: float, *, width: int = 30) -> str:
    """``[#########.....]`` for a fraction from 0 to 1."""
    filled = max(0, min(width, round(fraction * width)))
    return "[" + "#" * filled + "." * (width - filled) + "]"
