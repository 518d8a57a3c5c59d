"""Failure modes for real: the injector gone, a dry run, and its certificates rotated under load.

With ``failurePolicy: Fail`` a stopped injector must refuse pod creation in mesh-enabled
namespaces only, loudly, naming the webhook; a server-side dry run goes through the webhook
(``sideEffects: None``) and stores nothing; and the cert store renewing the serving certificate,
or replacing the CA, while the API server keeps creating pods must not refuse a single one.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mesh.contract import INIT_NAME, INJECT, NAMESPACE_ENABLED, PROXY_NAME
from tests.support.realcluster import NS, SECRET, LocalCluster, names, simple_pod

pytestmark = pytest.mark.cluster
ENABLED = {INJECT: NAMESPACE_ENABLED}


@pytest.fixture
def stopped_injector(cluster: LocalCluster) -> Iterator[None]:
    cluster.injector("stop")
    try:
        yield
    finally:
        cluster.injector("start")


def test_with_the_injector_stopped_labelled_namespaces_refuse_pods_naming_the_webhook(
    cluster: LocalCluster, stopped_injector: None
) -> None:
    with (
        cluster.namespace("down", labels=ENABLED) as mesh,
        cluster.namespace("down-plain") as plain,
    ):
        refused = cluster.create_pod(mesh, simple_pod("web"))
        assert refused.status_code == 500, refused.text
        message = refused.json()["message"]
        assert 'failed calling webhook "namespace.meshinject.io"' in message, message
        assert cluster.injector_url.split("/mutate")[0] in message  # and where it tried
        dry = cluster.create_pod(mesh, simple_pod("web"), dry_run=True)
        assert dry.status_code == 500 and "namespace.meshinject.io" in dry.json()["message"]
        plain_pod = cluster.create_pod(plain, simple_pod("web"))
        assert plain_pod.status_code == 201, plain_pod.text
        assert names(plain_pod.json()["spec"].get("initContainers")) == []


def test_kubectl_apply_dry_run_server_shows_the_injected_pod_and_stores_nothing(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    with cluster.namespace("dry", labels=ENABLED) as mesh:
        manifest = tmp_path / "pod.json"
        manifest.write_text(json.dumps(simple_pod("web")))
        out = cluster.kubectl("apply", "--dry-run=server", "-n", mesh, "-f", str(manifest),
                              "-o", "json")
        pod = json.loads(out.stdout)
        assert names(pod["spec"]["initContainers"]) == [INIT_NAME, PROXY_NAME]
        assert names(pod["spec"]["containers"]) == ["app"]
        gone = cluster.kubectl("get", "pod", "web", "-n", mesh, check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr


# -- rotation under load -------------------------------------------------------------------
@dataclass
class Load:
    """Pods created back to back in a labelled namespace, each answer counted."""

    created: int = 0
    handshakes: int = 0
    refused: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


def _create_pods(cluster: LocalCluster, ns: str, load: Load) -> None:
    with cluster.api() as api:
        i = 0
        while not load.done.is_set():
            i += 1
            answer = api.post(f"/api/v1/namespaces/{ns}/pods", json=simple_pod(f"p{i}"))
            if answer.status_code == 201:
                load.created += 1
            else:
                load.refused.append(answer.json().get("message", answer.text)[:300])
            time.sleep(0.02)


def _handshake_as_the_api_server_would(cluster: LocalCluster, load: Load) -> None:
    """A fresh connection each time, verified against the caBundle stored at that moment: what
    the API server does when it opens a new connection (its open ones survive a swap, so pod
    creation alone would not show a certificate it can no longer verify)."""
    while not load.done.is_set():
        try:
            ctx = ssl.create_default_context(cadata=cluster.ca_bundle().decode())
            with (
                socket.create_connection(("127.0.0.1", cluster.injector_port), timeout=5) as raw,
                ctx.wrap_socket(raw, server_hostname="127.0.0.1"),
            ):
                load.handshakes += 1
        except (OSError, ssl.SSLError) as err:
            load.refused.append(f"handshake: {err}")
        time.sleep(0.02)


def served_certificate(port: int) -> bytes:
    """The DER certificate the injector presents now (no verification: we only look)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _sign(subject_key: ec.EllipticCurvePrivateKey, *, issuer: x509.Certificate | None,
          issuer_key: ec.EllipticCurvePrivateKey, cn: str, ca: bool, days_ago: int,
          days_left: int, sans: list[x509.GeneralName] | None = None) -> bytes:
    """A certificate most of whose life is spent: what the cert store must renew."""
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder().subject_name(name)
        .issuer_name(issuer.subject if issuer else name).public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=days_ago))
        .not_valid_after(now + dt.timedelta(days=days_left))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _age_secret(cluster: LocalCluster, *, ca_too: bool) -> bytes:
    """Write into the Secret, as admin, a serving certificate (and with ``ca_too`` a CA) near
    the end of its life; the injector's cert store then renews it. Returns the DER served
    before."""
    before = served_certificate(cluster.injector_port)
    with cluster.api() as api:
        path = f"/api/v1/namespaces/{NS}/secrets/{SECRET}"
        secret = api.get(path).raise_for_status().json()
        data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
        ca_cert = x509.load_pem_x509_certificate(data["ca.crt"])
        ca_key = serialization.load_pem_private_key(data["ca.key"], password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        if ca_too:  # the same CA key, re-signed with 200 of its 3650 days left
            data["ca.crt"] = _sign(ca_key, issuer=None, issuer_key=ca_key,
                                   cn=ca_cert.subject.rfc4514_string()[3:], ca=True,
                                   days_ago=3450, days_left=200)
            ca_cert = x509.load_pem_x509_certificate(data["ca.crt"])
        served = x509.load_der_x509_certificate(before)
        sans = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        key = ec.generate_private_key(ec.SECP256R1())
        data["tls.crt"] = _sign(key, issuer=ca_cert, issuer_key=ca_key, cn="aged", ca=False,
                                days_ago=300, days_left=20, sans=list(sans))
        data["tls.key"] = _pem_key(key)
        secret["data"] = {k: base64.b64encode(v).decode() for k, v in data.items()}
        api.put(path, json=secret).raise_for_status()
    return before


@pytest.mark.parametrize("ca_too", [False, True], ids=["serving-cert", "ca"])
def test_a_certificate_renewed_while_pods_are_created_refuses_none(
    cluster: LocalCluster, ca_too: bool
) -> None:
    with cluster.namespace("rotate", labels=ENABLED) as mesh:
        load = Load()
        workers = [
            threading.Thread(target=_create_pods, args=(cluster, mesh, load)),
            threading.Thread(target=_handshake_as_the_api_server_would, args=(cluster, load)),
        ]
        for worker in workers:
            worker.start()
        try:
            time.sleep(1.0)
            before = _age_secret(cluster, ca_too=ca_too)
            deadline = time.monotonic() + 30
            while served_certificate(cluster.injector_port) == before:
                assert time.monotonic() < deadline, "the injector never served a renewed cert"
                time.sleep(0.1)
            swapped_at, handshakes_at_swap = load.created, load.handshakes
            time.sleep(2.0)  # keep creating through the caBundle and the API server's caches
        finally:
            load.done.set()
            for worker in workers:
                worker.join(timeout=30)
    assert load.refused == [], f"{len(load.refused)} refused, first: {load.refused[:1]}"
    assert swapped_at >= 20 and load.created > swapped_at, (swapped_at, load.created)
    # fresh handshakes on both sides of the swap (each reads the caBundle from the API server
    # first, so how many fit in the time depends on how busy the machine is)
    assert handshakes_at_swap >= 10 and load.handshakes - handshakes_at_swap >= 10, (
        handshakes_at_swap, load.handshakes)
    now = served_certificate(cluster.injector_port)
    bundle = x509.load_pem_x509_certificates(cluster.ca_bundle())
    x509.load_der_x509_certificate(now).verify_directly_issued_by(bundle[0])
    assert len(bundle) == (2 if ca_too else 1)  # the old CA stays trusted beside the new
