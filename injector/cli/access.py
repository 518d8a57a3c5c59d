"""``meshinject access check|list``: what the AccessPolicies allow, as the proxies enforce it.

Argument parsing only; the answers are :mod:`injector.cluster.access`'s.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

SUMMARY = "who may reach a pod, and the AccessPolicies"
CHECK = ("Say whether a caller may reach a pod's port (one HTTP request with --method/--path, "
         "or one TCP connection without them), which AccessPolicy and rule decide, and the "
         "pod's mTLS mode. Exit 0 allowed, 1 denied, 2 on error.")
LIST = "List the AccessPolicies, their mTLS mode, their rules and the pods each selects."


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (1-65535)")
    return port


def _caller(text: str) -> tuple[str, str]:
    from injector.cluster.access import parse_caller

    try:
        return parse_caller(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def run_check(args: argparse.Namespace) -> int:
    from injector.cluster.access import check
    from mesh.errors import KubeError
    from mesh.kube.client import Kube

    try:
        kube = Kube.connect(kubeconfig=args.kubeconfig)
        return check(kube, namespace=args.namespace, pod=args.to, caller=args.caller,
                     port=args.port, method=args.method, path=args.path, out=sys.stdout)
    except KubeError as err:
        print(f"meshinject access check: {err}", file=sys.stderr)
        return 2


def run_list(args: argparse.Namespace) -> int:
    from injector.cluster.access import show_list
    from mesh.errors import KubeError
    from mesh.kube.client import Kube

    try:
        kube = Kube.connect(kubeconfig=args.kubeconfig)
        return show_list(kube, namespace=args.namespace, out=sys.stdout)
    except KubeError as err:
        print(f"meshinject access list: {err}", file=sys.stderr)
        return 2


def register(subparsers: Any, name: str) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        name, help=SUMMARY, description="Check whether a caller may reach a pod, as its proxy "
        "decides, and list the AccessPolicies and the pods each selects.")
    commands = p.add_subparsers(dest="access_command", required=True, metavar="COMMAND")
    c = commands.add_parser("check", help="may this caller reach this pod?", description=CHECK)
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--from", dest="caller", type=_caller, metavar="NS/SA",
                     help="the caller's namespace and service account (a mesh caller, over "
                          "mutual TLS)")
    who.add_argument("--plaintext", dest="caller", action="store_const", const=None,
                     help="a caller outside the mesh (plaintext, no identity)")
    c.add_argument("--to", required=True, metavar="POD", help="the pod called")
    c.add_argument("-n", "--namespace", default="default",
                   help="the pod's namespace (default: default)")
    c.add_argument("--port", required=True, type=_port,
                   help="the port the pod listens on (its container port)")
    c.add_argument("--method", type=str.upper,
                   help="an HTTP request with this method (default GET when --path is given)")
    c.add_argument("--path", help="an HTTP request for this path (default / when --method is "
                                  "given)")
    c.add_argument("--kubeconfig", metavar="FILE", help="default: $KUBECONFIG, ~/.kube/config")
    c.set_defaults(run=run_check)
    ls = commands.add_parser("list", help="the policies and the pods they select",
                             description=LIST)
    ls.add_argument("-n", "--namespace", help="only this namespace (default: all)")
    ls.add_argument("--kubeconfig", metavar="FILE", help="default: $KUBECONFIG, ~/.kube/config")
    ls.set_defaults(run=run_list)
