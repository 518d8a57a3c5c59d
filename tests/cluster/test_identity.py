"""Identity on the real cluster: who gets a certificate from the control plane, and who does not.

The control plane runs in the cluster (two replicas on the sandbox node, with its own
ServiceAccount and the RBAC of ``manifests/base/controlplane.yaml``) and verifies every proxy's
token with a TokenReview through the real API server, then checks the pod it names. The probe
(:mod:`tests.support.sdsprobe`) asks a replica for a proxy's SDS secrets from inside the node's
network namespace, as a proxy there does, with tokens the API server really issued (or one it
did not). What a running proxy got is read from the proxy itself: the certificate its Envoy
presents on a mutual-TLS handshake to its pod's port.

Where each refusal comes from:

- a token signed by another key: the API server's TokenReview says not authenticated;
- another service account's token for a pod: the API server will not bind a token of one
  account to a pod running as another; a real token of account b, bound to b's pod, presented
  by a proxy claiming a's pod, passes TokenReview and is refused by the control plane's node
  check (the token's pod is not the pod the node claims); an unbound token of b is refused by
  the control plane (not bound to a pod);
- a deleted pod's bound token: TokenReview refuses it (the API server checks the bound pod
  still exists), before the control plane's own pod check.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from injector.sandbox import netns, nssocket
from mesh.contract import (
    CA_CONFIGMAP,
    CA_FILE,
    CONTROLPLANE_APP_LABEL,
    CONTROLPLANE_SERVICE,
    INJECT,
    MTLS_SNI_SUFFIX,
    NAMESPACE_ENABLED,
    TOKEN_AUDIENCE,
    XDS_PORT,
)
from mesh.pki import certs, jwt
from tests.support import meshapp, sdsprobe
from tests.support.realcluster import NS, STATE_DIR, LocalCluster

pytestmark = pytest.mark.cluster
Obj = dict[str, Any]
SERVER_NAME = f"{CONTROLPLANE_SERVICE}.{NS}.svc"
APP = ["python3", "-m", "injector.sandbox.demo_app", "backend"]


def _pod(name: str, account: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"serviceAccountName": account, "terminationGracePeriodSeconds": 2,
                     "containers": [{
                         "name": "app", "image": "example.com/ident/app:1.0",
                         "command": APP, "args": [f"--name={name}"],
                         "ports": [{"name": "http", "containerPort": 8080}],
                         "readinessProbe": {"tcpSocket": {"port": "http"},
                                            "periodSeconds": 2}}]}}


@dataclass
class World:
    cluster: LocalCluster
    ns: str
    node_ns: str
    ca: Path
    replicas: list[str]  # the control plane pods' addresses
    tmp: Path

    def pod(self, name: str) -> Obj:
        out = self.cluster.kubectl("get", "pod", name, "-n", self.ns, "-o", "json").stdout
        pod: Obj = json.loads(out)
        return pod

    def token(self, account: str, *, pod: Obj | None = None) -> str:
        """A TokenRequest for ``account`` with the proxy's audience, bound to ``pod``."""
        spec: Obj = {"audiences": [TOKEN_AUDIENCE], "expirationSeconds": 600}
        if pod is not None:
            spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1",
                                      "name": pod["metadata"]["name"],
                                      "uid": pod["metadata"]["uid"]}
        with self.cluster.api() as api:
            answer = api.post(f"/api/v1/namespaces/{self.ns}/serviceaccounts/{account}/token",
                              json={"apiVersion": "authentication.k8s.io/v1",
                                    "kind": "TokenRequest", "spec": spec})
        assert answer.status_code == 201, answer.text
        token: str = answer.json()["status"]["token"]
        return token

    def ask(self, token: str, *, pod: str, replica: str | None = None) -> Obj:
        path = self.tmp / f"token-{time.monotonic_ns()}"
        path.write_text(token)
        return sdsprobe.probe(node_ns=self.node_ns, address=f"{replica or self.replicas[0]}:"
                              f"{XDS_PORT}", server_name=SERVER_NAME, ca=self.ca, token=path,
                              namespace=self.ns, pod=pod)


def _node_namespace() -> str:
    """The sandbox node agent's network namespace (it names it after its pid)."""
    owner = json.loads((STATE_DIR / "node-sandbox" / "owner.json").read_text())
    name = f"{netns.PREFIX}{owner['pid']}-node"
    assert Path(f"/run/netns/{name}").exists(), name
    return name


@pytest.fixture(scope="module")
def world(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with cluster.namespace("ident", labels={INJECT: NAMESPACE_ENABLED}) as ns:
        for account in ("alpha", "beta"):
            cluster.kubectl("create", "serviceaccount", account, "-n", ns)
        for name, account in (("a-1", "alpha"), ("b-1", "beta"), ("a-gone", "alpha")):
            answer = cluster.create_pod(ns, _pod(name, account))
            assert answer.status_code == 201, answer.text

        def running() -> bool:
            found = meshapp.pods(cluster, ns)
            return len(found) == 3 and all(meshapp.ready(p) for p in found)

        meshapp.wait_for(f"three Ready pods in {ns}", running, timeout=180)
        config = json.loads(cluster.kubectl("get", "configmap", CA_CONFIGMAP, "-n", ns,
                                            "-o", "json").stdout)
        tmp = tmp_path_factory.mktemp("identity")
        ca = tmp / CA_FILE
        ca.write_text(config["data"][CA_FILE])
        label = "=".join(CONTROLPLANE_APP_LABEL)
        cps = json.loads(cluster.kubectl("get", "pods", "-n", NS, "-l", label,
                                         "-o", "json").stdout)["items"]
        replicas = [p["status"]["podIP"] for p in cps if meshapp.ready(p)]
        assert len(replicas) == 2, cps
        yield World(cluster, ns, _node_namespace(), ca, replicas, tmp)


def _presented_identity(world: World, pod: str) -> list[str]:
    """The URI SANs of the certificate a pod's proxy presents to a mesh client (a TLS
    handshake from the node to the pod's port, with the mesh's SNI)."""
    address = world.pod(pod)["status"]["podIP"]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we only read what it presents
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    raw = nssocket.socket_in(world.node_ns)
    raw.settimeout(10)
    try:
        raw.connect((address, 8080))
        with context.wrap_socket(raw, server_hostname=f"probe{MTLS_SNI_SUFFIX}") as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        raw.close()
        raise
    assert der is not None
    pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
    return certs.uri_sans(pem)


def test_a_pods_proxy_presents_an_svid_for_its_service_account(world: World) -> None:
    for pod, account in (("a-1", "alpha"), ("b-1", "beta")):
        assert _presented_identity(world, pod) == [
            f"spiffe://cluster.local/ns/{world.ns}/sa/{account}"]


def test_the_pods_own_token_gets_its_certificate_from_each_replica(world: World) -> None:
    token = world.token("alpha", pod=world.pod("a-1"))
    for replica in world.replicas:
        got = world.ask(token, pod="a-1", replica=replica)
        assert got["spiffe_ids"] == [f"spiffe://cluster.local/ns/{world.ns}/sa/alpha"], got
        assert got["bundle"] is True and got["status"] is None  # still open: a live stream


def test_a_token_signed_by_another_key_gets_nothing(world: World) -> None:
    real = world.token("alpha", pod=world.pod("a-1"))
    payload = real.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = jwt.mint(claims, ec.generate_private_key(ec.SECP256R1()))
    got = world.ask(forged, pod="a-1")
    assert got["spiffe_ids"] == [] and got["status"] == "UNAUTHENTICATED", got
    assert got["details"].startswith("token refused by the API server"), got


def test_the_api_server_will_not_bind_another_accounts_token_to_a_pod(world: World) -> None:
    a_pod = world.pod("a-1")
    with world.cluster.api() as api:
        answer = api.post(f"/api/v1/namespaces/{world.ns}/serviceaccounts/beta/token", json={
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [TOKEN_AUDIENCE], "boundObjectRef": {
                "kind": "Pod", "apiVersion": "v1", "name": "a-1",
                "uid": a_pod["metadata"]["uid"]}}})
    assert answer.status_code == 400, answer.text
    assert "different serviceaccount" in answer.json()["message"], answer.text


def test_another_accounts_real_token_for_this_pod_gets_nothing(world: World) -> None:
    beta = world.token("beta", pod=world.pod("b-1"))  # real, bound to b-1 (running as beta)
    got = world.ask(beta, pod="a-1")  # presented by a proxy that says it is a-1 (alpha)
    assert got["spiffe_ids"] == [] and got["status"] == "PERMISSION_DENIED", got
    assert got["details"] == (f"the token is for pod {world.ns}/b-1, the node claims "
                              f"{world.ns}/a-1"), got


def test_an_accounts_token_bound_to_no_pod_gets_nothing(world: World) -> None:
    got = world.ask(world.token("beta"), pod="a-1")
    assert got["spiffe_ids"] == [] and got["status"] == "UNAUTHENTICATED", got
    assert got["details"] == "token is not bound to a pod", got


def test_a_deleted_pods_token_gets_nothing(world: World) -> None:
    token = world.token("alpha", pod=world.pod("a-gone"))
    world.cluster.kubectl("delete", "pod", "a-gone", "-n", world.ns, "--wait=true",
                          "--timeout=60s")
    with world.cluster.api() as api:
        gone = api.get(f"/api/v1/namespaces/{world.ns}/pods/a-gone").status_code
    assert gone == 404
    for replica in world.replicas:
        got = world.ask(token, pod="a-gone", replica=replica)
        assert got["spiffe_ids"] == [] and got["status"] == "UNAUTHENTICATED", got
        assert got["details"].startswith("token refused by the API server"), got

