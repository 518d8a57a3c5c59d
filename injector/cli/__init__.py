"""The ``meshinject`` command: a thin dispatcher.

Each subcommand lives in its own module exposing ``register(subparsers)`` and is imported only
when it runs, so ``meshinject inject`` does not pay for uvicorn or the Kubernetes client.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from injector.cli.files import quiet_when_stdout_closes

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("injector.cli.serve", "run the admission webhook (TLS)"),
    "inject": ("injector.cli.inject", "inject pods in a YAML manifest, offline"),
    "check": ("injector.cli.check", "explain why pods are or are not injected"),
    "inspect": ("injector.cli.inspect", "list injected pods in a cluster and their proxies"),
    "sandbox": ("injector.cli.sandbox", "run injected pods locally in network namespaces"),
    "demo": ("injector.cli.demo", "run the built-in three-service demo in the sandbox"),
}


@quiet_when_stdout_closes
def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="meshinject", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    wanted = next((a for a in args if not a.startswith("-")), None)
    if wanted not in SUBCOMMANDS:
        if wanted is not None:
            parser.error(f"unknown command {wanted!r}")
        parser.print_help()
        return 2
    module = importlib.import_module(SUBCOMMANDS[wanted][0])
    full = argparse.ArgumentParser(prog="meshinject")
    module.register(full.add_subparsers(dest="command", required=True), wanted)
    namespace = full.parse_args(args)
    code: int = namespace.run(namespace)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
