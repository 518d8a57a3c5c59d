"""The hook for node agents: the one place ``up`` starts them (after the control plane and the
injector) and, through the journal, the place ``down`` stops them (first, newest first).

A node agent is a :class:`NodeAgent`; add one to :data:`AGENTS` and ``up --node NAME[=N]``
starts it. Its ``start`` gets the journal and the :class:`~localcluster.state.State`, which hold
what a node needs:

- the API server: ``state.api_url``, its CA ``state.pki / "ca.crt"``, the admin kubeconfig
  ``state.kubeconfig`` (for a start; a kubelet-like agent should authenticate as its node:
  :func:`node_credentials` issues ``CN=system:node:<node>, O=system:nodes`` from the cluster
  CA, which the Node authorizer and the NodeRestriction admission plugin then scope to that
  node);
- for serving the kubelet API (``kubectl logs``/``exec``): the API server presents
  ``pki/apiserver-kubelet-client.crt``, signed by ``pki/ca.crt`` and bound to
  ``system:kubelet-api-admin``; a node verifies callers against ``pki/ca.crt`` and may serve
  with a certificate from ``pki.issue_serving``;
- addresses: ``state.sandbox_pod_cidr`` (198.18.0.0/24) is the sandbox node's pod subnet (register
  the Node with that ``spec.podCIDR``; the allocator then counts it as taken); other agents take
  /24s from 198.18.1.0 up (:func:`pod_cidr`); Services are ``state.service_cidr``
  (198.19.0.0/16). Nothing outside 198.18.0.0/15 and loopback, and no rules in the machine's
  root network namespace.

Every process goes through ``journal.spawn`` (so ``down`` stops it by PID); anything made outside
the state directory (a network namespace, a veth) is announced first with
``journal.write("undo", argv=[...])``, the command ``down`` runs to remove it.
"""

from __future__ import annotations

import functools
import ipaddress
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from localcluster import api, pki
from localcluster.journal import Journal, Proc
from localcluster.state import HERE, State


@dataclass(frozen=True)
class NodeAgent:
    name: str
    summary: str
    start: Callable[[Journal, State, int], list[Proc]]  # (journal, state, node count)
    ready: Callable[[State, int], bool]


def node_credentials(journal: Journal, state: State, node: str) -> tuple[Path, Path]:
    """A client certificate for ``system:node:<node>`` (group system:nodes): cert and key."""
    issuer = pki.load_ca(state.pki, "ca")
    pki.issue_client(journal, state.pki, f"node-{node}", issuer, cn=f"system:node:{node}",
                     orgs=("system:nodes",))
    return state.pki / f"node-{node}.crt", state.pki / f"node-{node}.key"


def pod_cidr(index: int) -> str:
    """The /24 of the index-th node of an agent other than the sandbox (198.18.1.0/24, ...)."""
    if not 0 <= index < 255:
        raise ValueError(f"node index {index}: only 255 /24s after the sandbox's")
    return f"198.18.{index + 1}.0/24"


# -- kwok: fake nodes for scale tests ------------------------------------------------------
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


def kwok_node_name(index: int) -> str:
    return f"kwok-node-{index}"


def _start_kwok(journal: Journal, state: State, count: int) -> list[Proc]:
    """kwok manages only Nodes with its annotation (``--manage-all-nodes`` would take over the
    sandbox's node too); a taint of the same key keeps pods without a toleration off them. The
    Nodes are registered with their podCIDR preset, clear of the sandbox's /24; kwok gives pod
    IPs from it and renews each node's Lease as a kubelet does."""
    proc = journal.spawn("kwok", [
        state.binary("kwok"), f"--kubeconfig={state.kubeconfig}",
        "-c", str(HERE / "kwok-stages.yaml"),
        f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
        "--cidr=198.18.255.0/24", "--node-ip=198.18.255.254",
        "--node-lease-duration-seconds=40",
    ], log=state.logs / "kwok.log")
    for i in range(count):
        name = kwok_node_name(i)
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {KWOK_ANNOTATION: "fake"},
                         "labels": {"type": "kwok", "kubernetes.io/hostname": name}},
            "spec": {"podCIDR": pod_cidr(i), "podCIDRs": [pod_cidr(i)],
                     "taints": [{"key": KWOK_ANNOTATION, "value": "fake",
                                 "effect": "NoSchedule"}]},
        }
        try:
            api.call(state, "POST", "/api/v1/nodes", node)
        except api.ApiError as err:
            if err.status != 409:
                raise
    return [proc]


def _kwok_ready(state: State, count: int) -> bool:
    nodes = api.call(state, "GET", "/api/v1/nodes?labelSelector=type%3Dkwok")["items"]
    return sum(map(_ready, nodes)) >= count


# -- the sandbox: the node that runs pods for real ------------------------------------------
SANDBOX_NODE = "sandbox"
RELAY_PORT = 6443  # injector/sandbox/nodeobjects.py: the relay to the API server in the node ns


def sandbox_dir(state: State) -> Path:
    return state.dir / f"node-{SANDBOX_NODE}"


def _start_sandbox(journal: Journal, state: State, count: int) -> list[Proc]:
    """``python -m injector.sandbox.node run``: one node, the sandbox's pods in network
    namespaces of their own (injector/sandbox/node.py says what it does). Its credentials: the
    node's (``system:node:sandbox``), kube-proxy's (``system:kube-proxy``, which reaches the API
    server through the node's relay on 127.0.0.1:6443 inside the node namespace), and the
    kubelet API's serving certificate for the node's address. The admin kubeconfig is for the
    ``kubernetes`` Service's endpoint alone (the API server's job, off here). ``down`` stops it
    by PID, then runs its ``cleanup``, which removes whatever namespaces it left."""
    if count != 1:
        raise ValueError("--node sandbox: the sandbox is one node")
    issuer = pki.load_ca(state.pki, "ca")
    node_credentials(journal, state, SANDBOX_NODE)
    node_ip = str(ipaddress.ip_network(state.sandbox_pod_cidr).network_address + 1)
    pki.issue_serving(journal, state.pki, f"kubelet-{SANDBOX_NODE}", issuer,
                      cn=f"system:node:{SANDBOX_NODE}", dns=[SANDBOX_NODE], ips=[node_ip])
    pki.issue_client(journal, state.pki, "kube-proxy", issuer, cn="system:kube-proxy")
    kubeconfigs = {}
    for user, server, name in (
        (f"node-{SANDBOX_NODE}", state.api_url, f"node-{SANDBOX_NODE}"),
        ("kube-proxy", f"https://127.0.0.1:{RELAY_PORT}", "kube-proxy"),
    ):
        kubeconfigs[name] = journal.write_file(state.pki / f"{name}.kubeconfig", pki.kubeconfig(
            server=server, ca_file=state.pki / "ca.crt", user=user,
            cert_file=state.pki / f"{user}.crt", key_file=state.pki / f"{user}.key"), mode=0o600)
    where = sandbox_dir(state)
    journal.make_dir(where)
    python = sys.executable  # the venv's: it has meshinject (cluster.py up runs in it)
    journal.write("undo", argv=[python, "-m", "injector.sandbox.node", "cleanup",
                                "--state-dir", str(where)])
    argv = [
        python, "-m", "injector.sandbox.node", "run", f"--name={SANDBOX_NODE}",
        f"--state-dir={where}", f"--kubeconfig={kubeconfigs[f'node-{SANDBOX_NODE}']}",
        f"--admin-kubeconfig={state.kubeconfig}", f"--api-port={state.ports.apiserver}",
        f"--pod-cidr={state.sandbox_pod_cidr}", f"--cluster-cidr={state.cluster_cidr}",
        f"--serving-cert={state.pki / f'kubelet-{SANDBOX_NODE}.crt'}",
        f"--serving-key={state.pki / f'kubelet-{SANDBOX_NODE}.key'}",
        f"--client-ca={state.pki / 'ca.crt'}", f"--kube-proxy={state.binary('kube-proxy')}",
        f"--kube-proxy-kubeconfig={kubeconfigs['kube-proxy']}",
        f"--egress-socket={state.egress_socket}",
    ]
    if state.token_refresh_seconds:
        argv.append(f"--token-refresh-seconds={state.token_refresh_seconds:g}")
    return [journal.spawn("sandbox", argv, log=state.logs / "sandbox-node.log")]


def _ready(node: dict[str, object]) -> bool:
    status = node.get("status") or {}
    assert isinstance(status, dict)
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions") or [])


def _sandbox_ready(state: State, count: int) -> bool:
    try:
        return _ready(api.call(state, "GET", f"/api/v1/nodes/{SANDBOX_NODE}"))
    except api.ApiError:
        return False


AGENTS: dict[str, NodeAgent] = {
    "kwok": NodeAgent("kwok", "kwok: fake nodes whose pods go Running at once",
                      _start_kwok, _kwok_ready),
    "sandbox": NodeAgent("sandbox", "the sandbox: a node that runs pods in network namespaces",
                         _start_sandbox, _sandbox_ready),
}


def parse(spec: str) -> tuple[NodeAgent, int]:
    """``NAME`` or ``NAME=COUNT``."""
    name, _, count = spec.partition("=")
    if name not in AGENTS:
        raise ValueError(f"--node {spec}: unknown node agent {name!r} (known: {', '.join(AGENTS)})")
    try:
        n = int(count or "1")
    except ValueError:
        raise ValueError(f"--node {spec}: {count!r} is not a node count") from None
    if not 1 <= n <= 64:
        raise ValueError(f"--node {spec}: between 1 and 64 nodes")
    return AGENTS[name], n


def start_all(journal: Journal, state: State, specs: list[str],
              say: Callable[[str], None]) -> None:
    for spec in specs:
        agent, count = parse(spec)
        t0 = time.monotonic()
        procs = agent.start(journal, state, count)
        api.wait_for(f"{agent.name}: {count} node(s) Ready",
                     functools.partial(agent.ready, state, count), timeout=60)
        pids = ", ".join(str(p.pid) for p in procs)
        say(f"{agent.name:<24} {count} node(s) Ready in {time.monotonic() - t0:4.1f} s "
            f"(pid {pids})")
