"""``meshinject demo``: the built-in three-service demo, injected and run in the sandbox."""

from __future__ import annotations

import argparse
from typing import Any

from injector.cli.sandbox import guard, need_root


def run(args: argparse.Namespace) -> int:
    from injector.sandbox import demo, demo_manifest

    if args.print_manifest:
        print(demo_manifest.MANIFEST, end="")
        return 0
    need_root()
    return demo.run(requests=args.requests, seconds=args.seconds, state_dir=args.state_dir)


DESCRIPTION = (
    "Inject three small HTTP services that know nothing of a mesh, run them on this machine "
    "in network namespaces (mesh-init's rules, Envoy as uid 1337, the app as uid 1000), send "
    "traffic through them and show what each proxy carried; then remove everything. Needs root."
)


def register(subparsers: Any, name: str) -> None:
    p = subparsers.add_parser(name, help="run the built-in three-service demo",
                              description=DESCRIPTION)
    p.add_argument("--requests", type=int, default=300, help="requests to send (default 300)")
    p.add_argument("--seconds", type=float, default=10, help="spread over this long (10)")
    p.add_argument("--state-dir", default=None, help="state directory (default: a fresh one)")
    p.add_argument("--print-manifest", action="store_true",
                   help="print the demo's manifest (to pipe into sandbox up -f -) and exit")
    p.set_defaults(run=guard(run))
