"""The control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

The flags are ``smoke.sh``'s, whose reasons ``notes.md`` gives; in short: all on 127.0.0.1, RBAC
and the Node authorizer on, Services from 198.19.0.0/16 and a /24 of 198.18.0.0/16 per node,
single instances without leader election (they work at once instead of after taking a Lease),
and etcd without fsync (a throwaway store).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from localcluster import api, pki
from localcluster.journal import Journal, Proc, is_running
from localcluster.state import State

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def _dead(journal: Journal, proc: Proc) -> Callable[[], str | None]:
    """For :func:`api.wait_for`: the log tail once the process has died."""

    def check() -> str | None:
        if is_running(proc):
            return None
        tail = Path(proc.log).read_text(errors="replace").splitlines()[-15:]
        return "exited; last lines of " + proc.log + ":\n    " + "\n    ".join(tail)

    return check


def write_kubeconfigs(journal: Journal, state: State) -> None:
    p = state.pki
    for user, name in (("admin", "kubeconfig"), ("kcm", "pki/kcm.kubeconfig"),
                       ("scheduler", "pki/scheduler.kubeconfig")):
        journal.write_file(state.dir / name, pki.kubeconfig(
            server=state.api_url, ca_file=p / "ca.crt", user=user,
            cert_file=p / f"{user}.crt", key_file=p / f"{user}.key"), mode=0o600)


def start_etcd(journal: Journal, state: State) -> Proc:
    peer = f"http://127.0.0.1:{state.ports.etcd_peer}"
    client = f"http://127.0.0.1:{state.ports.etcd}"
    proc = journal.spawn("etcd", [
        state.binary("etcd"), "--name", "local", "--data-dir", str(state.dir / "etcd"),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"local={peer}", "--initial-cluster-state", "new",
        "--unsafe-no-fsync", "--log-level", "warn",
    ], log=state.logs / "etcd.log")
    return proc


def wait_etcd(journal: Journal, state: State, proc: Proc) -> float:
    return api.wait_for("etcd /health", lambda: api.plain_healthy(state.ports.etcd, "/health"),
                        timeout=30, alive=_dead(journal, proc))


EGRESS = """\
# written by scripts/cluster: the API server's way to pods and kubelets (pods/proxy,
# services/proxy, logs, exec, webhooks by Service) is the sandbox node's CONNECT proxy, which
# dials inside the node's network namespace; nothing routes 198.18.0.0/15 in the root one.
apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
  - name: cluster
    connection:
      proxyProtocol: HTTPConnect
      transport:
        uds:
          udsName: {socket}
"""


def start_apiserver(journal: Journal, state: State) -> Proc:
    p = state.pki
    egress = journal.write_file(state.dir / "egress-selector.yaml",
                                EGRESS.format(socket=state.egress_socket))
    return journal.spawn("kube-apiserver", [
        state.binary("kube-apiserver"),
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
        f"--secure-port={state.ports.apiserver}",
        # the lease reconciler refuses a loopback advertise address: no endpoints for the
        # `kubernetes` Service rather than a wrong one (notes.md)
        "--endpoint-reconciler-type=none",
        f"--etcd-servers=http://127.0.0.1:{state.ports.etcd}",
        f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
        f"--client-ca-file={p / 'ca.crt'}",
        "--authorization-mode=Node,RBAC",
        f"--service-cluster-ip-range={state.service_cidr}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={p / 'sa.pub'}",
        f"--service-account-signing-key-file={p / 'sa.key'}",
        f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={p / 'ca.crt'}",
        f"--egress-selector-config-file={egress}",
        f"--requestheader-client-ca-file={p / 'front-proxy-ca.crt'}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={p / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={p / 'front-proxy-client.key'}",
        "--allow-privileged=true",
    ], log=state.logs / "kube-apiserver.log")


def apiserver_ready(state: State) -> bool:
    return api.healthy(state.ports.apiserver, "/readyz", ctx=api.admin_context(state))


def wait_apiserver(journal: Journal, state: State, proc: Proc) -> float:
    return api.wait_for("kube-apiserver /readyz", lambda: apiserver_ready(state),
                        timeout=90, alive=_dead(journal, proc))


def start_controllers(journal: Journal, state: State) -> tuple[Proc, Proc]:
    """The controller-manager and the scheduler, started together (neither needs the other).
    The authn/authz kubeconfigs let them check who calls their own /metrics."""
    p, d = state.pki, state.dir
    kcm_cfg, sched_cfg = d / "pki" / "kcm.kubeconfig", d / "pki" / "scheduler.kubeconfig"
    kcm = journal.spawn("kube-controller-manager", [
        state.binary("kube-controller-manager"),
        f"--kubeconfig={kcm_cfg}", f"--authentication-kubeconfig={kcm_cfg}",
        f"--authorization-kubeconfig={kcm_cfg}",
        "--bind-address=127.0.0.1", f"--secure-port={state.ports.controller_manager}",
        "--leader-elect=false", "--use-service-account-credentials=true",
        f"--service-account-private-key-file={p / 'sa.key'}", f"--root-ca-file={p / 'ca.crt'}",
        f"--cluster-signing-cert-file={p / 'ca.crt'}",
        f"--cluster-signing-key-file={p / 'ca.key'}",
        f"--service-cluster-ip-range={state.service_cidr}",
        "--allocate-node-cidrs=true", f"--cluster-cidr={state.cluster_cidr}",
        "--node-cidr-mask-size=24",
    ], log=state.logs / "kube-controller-manager.log")
    sched = journal.spawn("kube-scheduler", [
        state.binary("kube-scheduler"),
        f"--kubeconfig={sched_cfg}", f"--authentication-kubeconfig={sched_cfg}",
        f"--authorization-kubeconfig={sched_cfg}",
        "--bind-address=127.0.0.1", f"--secure-port={state.ports.scheduler}",
        "--leader-elect=false",
    ], log=state.logs / "kube-scheduler.log")
    return kcm, sched


def bind_kubelet_client(state: State) -> None:
    """What the API server presents to kubelets may use their API (logs, exec)."""
    body = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "meshinject-local:apiserver-kubelet-client"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "system:kubelet-api-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                      "name": "kube-apiserver-kubelet-client"}],
    }
    try:
        api.call(state, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body)
    except api.ApiError as err:
        if err.status != 409:
            raise


def _default_sa(state: State) -> bool:
    try:
        api.call(state, "GET", "/api/v1/namespaces/default/serviceaccounts/default")
        return True
    except api.ApiError:
        return False


def wait_controllers(journal: Journal, state: State, kcm: Proc, sched: Proc) -> float:
    """/healthz is up seconds before the controllers run (they are built one by one): the
    ``default`` ServiceAccount appearing is the first sign of the controllers at work, and a
    pod cannot be created in a namespace before its ``default`` ServiceAccount exists."""
    took = api.wait_for("kube-controller-manager /healthz",
                        lambda: api.healthy(state.ports.controller_manager, "/healthz"),
                        timeout=60, alive=_dead(journal, kcm))
    took += api.wait_for("kube-controller-manager: default/default ServiceAccount made",
                         lambda: _default_sa(state), timeout=60, alive=_dead(journal, kcm))
    took += api.wait_for("kube-scheduler /readyz",
                         lambda: api.healthy(state.ports.scheduler, "/readyz"),
                         timeout=60, alive=_dead(journal, sched))
    return took
