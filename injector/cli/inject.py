"""``meshinject inject -f FILE|-``: inject every pod template of a manifest, offline.

Namespace labels are ignored (piping a manifest through ``inject`` is the opt-in) but opt-outs
and hard skips are honoured, with the reason on stderr. Nothing reaches stdout unless every
document succeeded: a half-injected manifest piped into ``kubectl apply`` would be worse than none.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from injector.cli.files import read_input, source_name, write_documents
from injector.core.manifests import inject_documents, load_documents
from mesh.errors import MeshError, SettingsError
from mesh.settings import load_config

DESCRIPTION = (
    "Inject every pod template in a multi-document YAML manifest (or List) and write the result "
    "to stdout; other documents pass through untouched, skip reasons go to stderr. Namespace "
    "labels are ignored; opt-outs and hard skips are honoured."
)


def fail(err: MeshError) -> int:
    """Print an offline command's error; 2 for a bad mesh config, 1 for a bad manifest."""
    print(f"meshinject: error: {err}", file=sys.stderr)
    return 2 if isinstance(err, SettingsError) else 1


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        docs = load_documents(read_input(args.filename), source=source_name(args.filename))
        docs, notes = inject_documents(docs, config=config)
    except MeshError as err:
        return fail(err)
    return write_documents(docs, notes)


def register(subparsers: Any, name: str) -> None:
    parser = subparsers.add_parser(name, description=DESCRIPTION)
    parser.add_argument("--config", metavar="FILE", help="mesh config YAML (default: built-in)")
    parser.add_argument("-f", "--filename", required=True, metavar="FILE",
                        help="manifest to inject, or - for stdin")
    parser.set_defaults(run=run)
