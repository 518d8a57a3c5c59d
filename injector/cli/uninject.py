"""``meshinject uninject -f FILE|-``: take out of a manifest what ``meshinject inject`` put in.

The exact inverse of ``inject`` for what it produced (:func:`~injector.core.manifests.
uninject_documents`): pod templates lose mesh-init, mesh-proxy and the status annotation, and
nothing else; other documents pass through. As with ``inject``, nothing reaches stdout unless
every document could be read.
"""

from __future__ import annotations

import argparse
from typing import Any

from injector.cli.files import read_input, source_name, write_documents
from injector.cli.inject import fail
from injector.core.manifests import load_documents, uninject_documents
from mesh.errors import MeshError

SUMMARY = "remove what inject added to a YAML manifest"
DESCRIPTION = (
    "Remove mesh-init, mesh-proxy and the status annotation from every pod template of a "
    "multi-document YAML manifest (or List) and write the result to stdout: the exact inverse "
    "of inject. Containers are recognised by meshinject's names and rendered shape, never by "
    "the status annotation alone; other documents pass through untouched."
)


def run(args: argparse.Namespace) -> int:
    try:
        docs, notes = uninject_documents(load_documents(
            read_input(args.filename), source=source_name(args.filename)))
    except MeshError as err:
        return fail(err)
    return write_documents(docs, notes)


def register(subparsers: Any, name: str) -> None:
    parser = subparsers.add_parser(name, help=SUMMARY, description=DESCRIPTION)
    parser.add_argument("-f", "--filename", required=True, metavar="FILE",
                        help="injected manifest, or - for stdin")
    parser.set_defaults(run=run)
