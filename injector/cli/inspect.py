"""``meshinject inspect``: the injected pods of a cluster and the state of their proxies.

Without a pod: one row per pod of every mesh-enabled namespace (or of ``-n NS``). With a pod: its
injected settings and its proxy's live counters. The views are :mod:`injector.cluster.inspect`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from injector.cluster.config import cluster_config
from injector.cluster.inspect import show_pod, show_table
from mesh.errors import KubeError, SettingsError
from mesh.kube.client import Kube

SUMMARY = "list injected pods in a cluster and their proxies"


def register(subparsers: Any, name: str) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=SUMMARY,
        description=SUMMARY[0].upper() + SUMMARY[1:] + ".",
    )
    p.add_argument("pod", nargs="?", help="show this pod's injected settings and live stats")
    where = p.add_mutually_exclusive_group()
    where.add_argument("-n", "--namespace", help="only this namespace")
    where.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="every mesh-enabled namespace (the default without -n)",
    )
    p.add_argument("--kubeconfig", metavar="FILE", help="default: $KUBECONFIG, ~/.kube/config")
    p.add_argument(
        "--config",
        metavar="FILE",
        help="mesh config to compare with (default: the installed ConfigMap)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        kube = Kube.connect(kubeconfig=args.kubeconfig)
        config = cluster_config(kube, path=args.config)
        if args.pod:
            return show_pod(
                kube, args.namespace or "default", args.pod, config=config, out=sys.stdout
            )
        return show_table(kube, args.namespace, config=config, out=sys.stdout)
    except (KubeError, SettingsError, OSError) as err:
        print(f"meshinject inspect: {err}", file=sys.stderr)
        return 2
