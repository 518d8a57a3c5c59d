"""The sandbox as a node of a real cluster: a kubelet for the pods the scheduler binds to it.

``python -m injector.sandbox.node run --name NODE ...`` (``scripts/cluster``'s ``up --node
sandbox`` starts it): it registers the Node (as ``system:node:NODE``, so the Node authorizer and
NodeRestriction hold it to its own pods), renews its Lease, builds the node namespace
(:mod:`nodenet`), starts kube-proxy in it (:mod:`kubeproxy`), the relays between the API server
and the node namespace (:mod:`egress`) and the kubelet API (:mod:`kubeletapi`), keeps every
pod's hosts file current from the Services, and runs one :class:`~podworker.PodWorker` per pod
whose ``spec.nodeName`` is this node. On SIGTERM it stops the pods' processes and removes its
namespaces; ``cleanup --state-dir DIR`` removes what a killed agent left (``cluster.py down``
runs it).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from injector.sandbox import nodeobjects, services
from injector.sandbox.egress import Egress
from injector.sandbox.kubeletapi import KubeletApi
from injector.sandbox.kubeproxy import KubeProxy
from injector.sandbox.nodenet import NodeNetwork, write_in_place
from injector.sandbox.podworker import PodWorker
from injector.sandbox.state import StateDir
from mesh.errors import Conflict, KubeError, MeshError, NotFound
from mesh.kube.client import Kube
from mesh.kube.watch import list_watch

Obj = dict[str, Any]
LEASE_EVERY = 10.0
STATUS_EVERY = 60.0
MAX_PODS = 110


def _memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 1 << 30


class NodeAgent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.name: str = args.name
        self.kube = Kube.connect(kubeconfig=args.kubeconfig)
        self.admin = Kube.connect(kubeconfig=args.admin_kubeconfig)
        self.state = StateDir(Path(args.state_dir))
        self.pods_dir = self.state.root / "pods"
        self.cpus, self.memory = os.cpu_count() or 1, _memory()
        self.token_max_age: float = args.token_refresh_seconds
        self.volume_sync: float = args.volume_sync_seconds
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.workers: dict[str, PodWorker] = {}  # by pod uid
        self._services: dict[tuple[str, str], Obj] = {}
        self.network: NodeNetwork
        self.node_uid = ""
        self._lease_version = ""

    def log(self, line: str) -> None:
        print(f"{time.strftime('%T')} {line}", flush=True)

    # -- what the pod workers ask ------------------------------------------------------------
    def services(self) -> list[Obj]:
        with self.lock:
            return list(self._services.values())

    def hosts(self, namespace: str, pod_ip: str, hostname: str) -> str:
        return services.cluster_hosts(self.services(), namespace=namespace, pod_ip=pod_ip,
                                      hostname=hostname)

    def find_log(self, namespace: str, pod: str, container: str, previous: bool
                 ) -> tuple[Path, Callable[[], bool]] | None:
        with self.lock:
            worker = next((w for w in self.workers.values()
                           if w.view.namespace == namespace and w.view.name == pod), None)
        found = worker.logs(container, previous=previous) if worker else None
        if worker is None or found is None:
            return None
        path = found[0]
        return path, lambda: bool((worker.logs(container, previous=False) or (path, False))[1])

    # -- registering -------------------------------------------------------------------------
    def register(self) -> str:
        """Create the Node (or take over the one of this name); its podCIDR."""
        now = time.time()
        body = nodeobjects.node(self.name, pod_cidr=self.args.pod_cidr,
                                address=self.args.node_ip, cpus=self.cpus, memory=self.memory,
                                now=now, max_pods=MAX_PODS)
        try:
            stored = self.kube.request("POST", "/api/v1/nodes", body=body)
        except Conflict:
            stored = self.kube.request("GET", f"/api/v1/nodes/{self.name}")
            self.heartbeat(stored)
        self.node_uid = str(stored["metadata"]["uid"])
        return str((stored.get("spec") or {}).get("podCIDR") or self.args.pod_cidr)

    def heartbeat(self, stored: Obj | None = None) -> None:
        stored = stored or self.kube.request("GET", f"/api/v1/nodes/{self.name}")
        fresh = nodeobjects.node_status(address=self.args.node_ip, cpus=self.cpus,
                                        memory=self.memory, now=time.time(), max_pods=MAX_PODS)
        self.kube.request("PATCH", f"/api/v1/nodes/{self.name}/status",
                          body={"status": nodeobjects.kept_transitions(fresh, stored)},
                          content_type="application/merge-patch+json")

    def renew_lease(self) -> None:
        """Update the Lease (with the version last seen; created when missing)."""
        body = nodeobjects.lease(self.name, node_uid=self.node_uid, now=time.time())
        path = f"/apis/coordination.k8s.io/v1/namespaces/{nodeobjects.LEASE_NAMESPACE}/leases"
        try:
            if not self._lease_version:
                self._lease_version = self.kube.request("GET", f"{path}/{self.name}")[
                    "metadata"]["resourceVersion"]
            body["metadata"]["resourceVersion"] = self._lease_version
            stored = self.kube.request("PUT", f"{path}/{self.name}", body=body)
        except NotFound:
            body["metadata"].pop("resourceVersion", None)
            stored = self.kube.request("POST", path, body=body)
        except Conflict:
            self._lease_version = ""
            raise
        self._lease_version = str(stored["metadata"]["resourceVersion"])

    def publish_api_endpoint(self) -> None:
        """``default/kubernetes`` names the relay (nobody else writes it: see nodeobjects)."""
        for path, body, same in (
            ("/api/v1/namespaces/default/endpoints/kubernetes",
             nodeobjects.api_endpoints(self.network.gateway), "subsets"),
            ("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes",
             nodeobjects.api_slice(self.network.gateway), "endpoints"),
        ):
            try:
                stored = self.admin.request("GET", path)
            except NotFound:
                self.admin.request("POST", path.rsplit("/", 1)[0], body=body)
                continue
            if stored.get(same) != body[same] or stored.get("ports") != body.get("ports"):
                body["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
                self.admin.request("PUT", path, body=body)

    def _keepalive(self) -> None:
        status_at = time.monotonic() + STATUS_EVERY
        while not self.stopping.wait(LEASE_EVERY):
            try:
                self.renew_lease()
                if time.monotonic() >= status_at:
                    self.heartbeat()
                    self.publish_api_endpoint()
                    status_at = time.monotonic() + STATUS_EVERY
            except (KubeError, OSError) as err:
                self.log(f"heartbeat failed: {err}")

    # -- watching ----------------------------------------------------------------------------
    def _services_listed(self, items: list[Obj]) -> None:
        with self.lock:
            self._services = {(i["metadata"]["namespace"], i["metadata"]["name"]): i
                              for i in items}
        self._rewrite_hosts()

    def _service_event(self, kind: str, obj: Obj) -> None:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        with self.lock:
            if kind == "DELETED":
                self._services.pop(key, None)
            else:
                self._services[key] = obj
        self._rewrite_hosts()

    def _rewrite_hosts(self) -> None:
        with self.lock:
            workers = [w for w in self.workers.values() if w.ns_name]
        for w in workers:
            path = self.network.hosts_path(w.ns_name)
            if path.exists():
                write_in_place(path, self.hosts(w.view.namespace, w.pod_ip, w.view.name))

    def _pods_listed(self, items: list[Obj]) -> None:
        uids = {str(i["metadata"]["uid"]) for i in items}
        with self.lock:
            gone = [w for uid, w in self.workers.items() if uid not in uids]
        for worker in gone:
            worker.removed.set()
        for item in items:
            self._pod_event("MODIFIED", item)

    def _pod_event(self, kind: str, pod: Obj) -> None:
        uid = str(pod["metadata"]["uid"])
        with self.lock:
            self.workers = {u: w for u, w in self.workers.items() if w.thread.is_alive()
                            or not w.thread.ident}
            worker = self.workers.get(uid)
            if kind == "DELETED":
                if worker is not None:
                    worker.removed.set()
                return
            if worker is not None:
                worker.update(pod)
                return
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") and not (
                    pod["metadata"].get("deletionTimestamp")):
                return  # finished before this agent started: nothing to run
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
        self.log(f"pod {worker.key}: bound to this node")
        worker.update(pod)
        worker.start()

    def _watch(self, path: str, query: dict[str, str], on_list: Callable[[list[Obj]], None],
               on_event: Callable[[str, Obj], None]) -> None:
        kube = Kube.connect(kubeconfig=self.args.kubeconfig)  # a connection of its own
        threading.Thread(target=list_watch, args=(kube, path), daemon=True, name=f"watch{path}",
                         kwargs={"query": query, "stop": self.stopping, "on_list": on_list,
                                 "on_event": on_event}).start()

    # -- the whole ---------------------------------------------------------------------------
    def run(self) -> int:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.stopping.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.state.root.mkdir(parents=True, exist_ok=True)
        self.state.record_owner(os.getpid())
        self.network = NodeNetwork(self.state, owner=os.getpid(), pod_cidr=self.args.pod_cidr)
        egress = kubelet = proxy = None
        try:
            cidr = self.register()
            self.network = NodeNetwork(self.state, owner=os.getpid(), pod_cidr=cidr)
            self.network.build()
            node_ns = self.network.node.name
            egress = Egress(node_ns=node_ns, socket_path=Path(self.args.egress_socket),
                            relay_port=nodeobjects.RELAY_PORT, api_port=self.args.api_port)
            egress.start()
            kubelet = KubeletApi(node_ns=node_ns, address=self.network.gateway,
                                 port=nodeobjects.KUBELET_PORT, cert=Path(self.args.serving_cert),
                                 key=Path(self.args.serving_key),
                                 client_ca=Path(self.args.client_ca), finder=self.find_log)
            kubelet.start()
            self.publish_api_endpoint()
            proxy = KubeProxy(node=self.network.node, binary=self.args.kube_proxy,
                              kubeconfig=Path(self.args.kube_proxy_kubeconfig),
                              node_name=self.name, node_ip=self.network.gateway,
                              cluster_cidr=self.args.cluster_cidr,
                              log=self.state.root / "kube-proxy.log")
            proxy.start()
            self.renew_lease()
            threading.Thread(target=self._keepalive, daemon=True, name="lease").start()
            self._watch("/api/v1/services", {}, self._services_listed, self._service_event)
            self._watch("/api/v1/pods", {"fieldSelector": f"spec.nodeName={self.name}"},
                        self._pods_listed, self._pod_event)
            self.log(f"node {self.name} up: pods from {cidr} in {node_ns}, kubelet API on "
                     f"{self.network.gateway}:{nodeobjects.KUBELET_PORT}")
            while not self.stopping.wait(1):
                proxy.supervise()
            return 0
        except (MeshError, OSError) as err:
            self.log(f"node agent failed: {err}")
            return 1
        finally:
            self.stopping.set()
            self._stop_pods()
            for part in (proxy, kubelet, egress):
                if part is not None:
                    part.stop()
            self.network.teardown()
            self.log("node agent stopped")

    def _stop_pods(self) -> None:
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.shutdown.set()
        for worker in workers:
            for proc in worker.procs.values():
                proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + 3
        for worker in workers:
            worker.thread.join(max(0.1, deadline - time.monotonic()))
            for proc in worker.procs.values():
                proc.kill()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m injector.sandbox.node", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="be the node")
    run.add_argument("--name", required=True)
    run.add_argument("--state-dir", required=True)
    run.add_argument("--kubeconfig", required=True, help="the node's (system:node:NAME)")
    run.add_argument("--admin-kubeconfig", required=True,
                     help="writes the kubernetes Service's endpoint, nothing else")
    run.add_argument("--api-port", type=int, required=True, help="the API server on 127.0.0.1")
    run.add_argument("--pod-cidr", required=True)
    run.add_argument("--cluster-cidr", required=True)
    run.add_argument("--serving-cert", required=True)
    run.add_argument("--serving-key", required=True)
    run.add_argument("--client-ca", required=True)
    run.add_argument("--kube-proxy", required=True, help="the kube-proxy binary")
    run.add_argument("--kube-proxy-kubeconfig", required=True)
    run.add_argument("--egress-socket", required=True)
    run.add_argument("--token-refresh-seconds", type=float, default=0.0,
                     help="renew projected tokens this long after issue at the latest "
                          "(default: at 80%% of their lifetime only, as a kubelet)")
    run.add_argument("--volume-sync-seconds", type=float, default=10.0)
    clean = sub.add_parser("cleanup", help="remove what a killed agent left")
    clean.add_argument("--state-dir", required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "cleanup":
        removed = NodeNetwork.cleanup(StateDir(Path(args.state_dir).resolve()))
        print(f"removed {len(removed)} namespaces")
        return 0
    args.node_ip = str(ipaddress.ip_network(args.pod_cidr).network_address + 1)
    return NodeAgent(args).run()


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    raise SystemExit(main())
