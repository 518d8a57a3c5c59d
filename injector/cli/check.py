"""``meshinject check``: why pods are, or are not, injected.

With ``-f`` it judges a manifest offline (``--namespace-label`` judges as the webhook would for a
namespace with those labels); without, it asks a live cluster (:mod:`injector.cluster.check`),
whose Kubernetes client is imported only then, so the offline check starts fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from injector.cli.files import read_input, source_name
from injector.cli.inject import fail
from injector.core.manifests import check_documents, load_documents
from mesh.errors import KubeError, MeshError, UsageError
from mesh.settings import load_config

DESCRIPTION = (
    "Say, per workload, whether it would be injected and why. With -f, from a manifest "
    "(--namespace-label judges as the webhook would for a namespace with those labels); without "
    "-f, from a live cluster."
)


def parse_labels(pairs: list[str]) -> dict[str, str] | None:
    """``--namespace-label k=v`` values (offline and live check share them); None when absent."""
    if not pairs:
        return None
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--namespace-label {pair!r} is invalid: expected key=value")
        labels[key] = value
    return labels


def run_offline(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        rows, ok = check_documents(
            load_documents(read_input(args.filename), source=source_name(args.filename)),
            config=config,
            namespace_labels=parse_labels(args.namespace_label), default_namespace=args.namespace,
            name=args.pod, source="stdin" if args.filename == "-" else args.filename,
        )
    except MeshError as err:
        return fail(err)
    width = max((len(row[0]) for row in rows), default=8)
    print(f"{'WORKLOAD':<{width}}  INJECT  REASON")
    for title, verdict, why in rows:
        print(f"{title:<{width}}  {verdict:<6}  {why}")
    return 0 if ok else 1


def run_live(args: argparse.Namespace) -> int:
    from injector.cluster.check import live_check
    from injector.cluster.config import cluster_config
    from mesh.kube.client import Kube

    try:
        labels = parse_labels(args.namespace_label)
        kube = Kube.connect(kubeconfig=args.kubeconfig)
        config = cluster_config(kube, path=args.config)
        return live_check(kube, pod=args.pod, namespace=args.namespace, namespace_labels=labels,
                          config=config, out=sys.stdout)
    except (KubeError, MeshError, OSError) as err:
        print(f"meshinject check: {err}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    return run_offline(args) if args.filename is not None else run_live(args)


def register(subparsers: Any, name: str) -> None:
    parser = subparsers.add_parser(name, description=DESCRIPTION)
    parser.add_argument("--config", metavar="FILE", help="mesh config YAML (default: built-in)")
    parser.add_argument("pod", nargs="?", help="only this workload (by name)")
    parser.add_argument("-f", "--filename", metavar="FILE",
                        help="manifest to check, or -; without it, check a live cluster")
    parser.add_argument("-n", "--namespace", help="namespace for workloads that name none")
    parser.add_argument("--kubeconfig", metavar="FILE", help="for a live cluster check")
    parser.add_argument("--namespace-label", action="append", default=[], metavar="KEY=VALUE",
                        help="a label of the namespace (repeat); judge as the webhook would")
    parser.set_defaults(run=run)
