"""The ``meshinject`` command: a thin dispatcher.

Each subcommand lives in its own module exposing ``register(subparsers, name)`` and is imported
only when it runs, so ``meshinject inject`` does not pay for uvicorn or the Kubernetes client.
``meshinject --help`` lists the commands from the one-line summaries below without importing
any of them; ``meshinject --version`` reads the installed package's metadata.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Sequence

from injector.cli.files import quiet_when_stdout_closes

DESCRIPTION = (
    "A sidecar service mesh for Kubernetes: inject mesh-init and Envoy into pods (offline or as "
    "an admission webhook), uninject them, explain why a pod is or is not injected, inspect a "
    "cluster's proxies, and run injected pods locally."
)

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("injector.cli.serve", "run the admission webhook (TLS)"),
    "inject": ("injector.cli.inject", "inject pods in a YAML manifest, offline"),
    "uninject": ("injector.cli.uninject", "remove what inject added to a YAML manifest"),
    "check": ("injector.cli.check", "explain why pods are or are not injected"),
    "inspect": ("injector.cli.inspect", "list injected pods in a cluster and their proxies"),
    "proxy-config": ("injector.cli.proxyconfig", "the xDS config one pod's proxy is given"),
    "sandbox": ("injector.cli.sandbox", "run injected pods locally in network namespaces"),
    "demo": ("injector.cli.demo", "run the built-in three-service demo in the sandbox"),
}


def version() -> str:
    try:
        return importlib.metadata.version("meshinject")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


class _CommandListFormatter(argparse.HelpFormatter):
    """argparse indents the command list two columns deeper than it measures, so the longest
    name ("proxy-config") would wrap its summary onto a line of its own; measure it right."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            longest = max(len(name) for name in action.choices)
            self._action_max_length = max(self._action_max_length,
                                          longest + self._current_indent + 4)


def top_parser() -> argparse.ArgumentParser:
    """``meshinject`` without a command: the list of commands, ``--help``, ``--version``."""
    parser = argparse.ArgumentParser(prog="meshinject", description=DESCRIPTION,
                                     formatter_class=_CommandListFormatter)
    parser.add_argument("--version", action="version", version=f"meshinject {version()}",
                        help="print meshinject's version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def command_parser(name: str) -> argparse.ArgumentParser:
    """The full parser of one command (its module imported now)."""
    module = importlib.import_module(SUBCOMMANDS[name][0])
    parser = argparse.ArgumentParser(prog="meshinject", description=DESCRIPTION)
    module.register(parser.add_subparsers(dest="command", required=True), name)
    return parser


@quiet_when_stdout_closes
def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        wanted = next((a for a in args if not a.startswith("-")), None)
        if wanted not in SUBCOMMANDS:
            top = top_parser()
            if wanted is not None:
                top.error(f"unknown command {wanted!r} (commands: {', '.join(SUBCOMMANDS)})")
            top.parse_args(args)  # --help and --version exit 0 here, a bad flag exits 2
            top.print_help(sys.stderr)  # no command at all: a usage error
            return 2
        namespace = command_parser(wanted).parse_args(args)
    except SystemExit as done:  # argparse's way out: --help (0) or a usage error (2)
        return done.code if isinstance(done.code, int) else int(done.code is not None)
    code: int = namespace.run(namespace)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
