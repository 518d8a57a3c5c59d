"""The CLI's two ends: reading what a command was given with ``-f FILE`` (``-`` for stdin), with
errors that name it, and writing to a stdout whose reader may go away (``| head``)."""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, Protocol

from injector.core.manifests import dump_documents
from mesh.errors import ManifestError


def source_name(path: str) -> str:
    """How an error names what ``-f`` read: the path, or ``stdin`` for ``-``."""
    return "stdin" if path == "-" else path


def read_input(path: str) -> str:
    """The text of ``path``, or of stdin for ``-``; ManifestError naming the file otherwise."""
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"cannot read {path}: {err}") from err


class Main(Protocol):
    """A command line's entry point: ``main(argv)``, argv defaulting to ``sys.argv[1:]``."""

    def __call__(self, argv: Sequence[str] | None = None) -> int: ...


def quiet_when_stdout_closes(main: Main) -> Main:
    """``main``, stopping quietly when whoever reads stdout goes away (``meshinject ... | head``)
    as Unix tools do: no traceback, exit status 141 (128 + SIGPIPE, what a shell reports for a
    program SIGPIPE ended). Python ignores SIGPIPE, so the write raises BrokenPipeError instead;
    it may come from any command, from argparse's help, or from the last flush of buffered
    output, which is why stdout is flushed here, also when argparse exits.
    """

    @functools.wraps(main)
    def run(argv: Sequence[str] | None = None) -> int:
        try:
            try:
                code = main(argv)
            finally:
                sys.stdout.flush()
        except BrokenPipeError:
            # the interpreter flushes stdout once more on its way out: point it at /dev/null
            # so that flush cannot fail (and print "Exception ignored ...") as well
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return 128 + signal.SIGPIPE
        return code

    return run


def write_documents(docs: list[Any], notes: Sequence[str]) -> int:
    """A rewritten manifest on stdout, what was said about it on stderr; exit code 0."""
    for note in notes:
        print(note, file=sys.stderr)
    sys.stdout.write(dump_documents(docs))
    return 0
