"""``meshinject proxy-config POD``: the configuration the control plane gives one pod's proxy.

Listeners, clusters, routes and endpoints exactly as the control plane computes them for that
pod (from any replica: they all compute the same), as JSON, or one kind of them. For what the
proxy runs and whether it accepted it, ``meshinject inspect POD``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

KINDS = {"listeners": "Listener", "clusters": "Cluster", "routes": "RouteConfiguration",
         "endpoints": "ClusterLoadAssignment"}
DESCRIPTION = ("Print the listeners, clusters, routes and endpoints the control plane gives "
               "one pod's proxy, as JSON.")


def run(args: argparse.Namespace) -> int:
    from injector.cluster import xds
    from mesh.errors import KubeError
    from mesh.kube.client import Kube

    try:
        kube = Kube.connect(kubeconfig=args.kubeconfig)
        found = xds.config_of(kube, namespace=args.namespace, pod=args.pod)
    except KubeError as err:
        print(f"meshinject proxy-config: {err}", file=sys.stderr)
        return 2
    if "error" in found:
        print(f"meshinject proxy-config: pod {args.namespace}/{args.pod}: {found['error']}",
              file=sys.stderr)
        return 1
    shown = found if args.kind == "all" else {KINDS[args.kind]: found.get(KINDS[args.kind], {})}
    json.dump(shown, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


def register(subparsers: Any, name: str) -> None:
    p = subparsers.add_parser(name, help="the xDS config one pod's proxy is given",
                              description=DESCRIPTION)
    p.add_argument("pod", help="the pod")
    p.add_argument("-n", "--namespace", default="default", help="its namespace (default)")
    p.add_argument("--kind", choices=["all", *KINDS], default="all",
                   help="only this kind of resource (default: all)")
    p.add_argument("--kubeconfig", metavar="FILE", help="default: $KUBECONFIG, ~/.kube/config")
    p.set_defaults(run=run)
