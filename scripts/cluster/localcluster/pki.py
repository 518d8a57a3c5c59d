"""The cluster's certificates and kubeconfigs (EC P-256: made in milliseconds, taken by all).

One CA signs the serving and client certificates; the front proxy has a CA of its own (a
certificate from it can claim to be any user, so kubeadm keeps it apart, and so do we). Users are
a certificate's CN, groups its O: ``system:masters`` bypasses RBAC (the admin only), and the
bootstrap ClusterRoleBindings name ``system:kube-controller-manager`` and
``system:kube-scheduler`` exactly. A node agent gets ``system:node:<node>`` in ``system:nodes``
from :func:`issue_client` (the Node authorizer then lets it act for that node alone).
The reasons for each flag and name: ``scripts/cluster/notes.md``.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from localcluster.journal import Journal

DAYS = 365  # a dev cluster may be kept for a while; nothing here is trusted outside it
SERVICE_IP = "198.19.0.1"  # the first address of the Service range: the `kubernetes` Service


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )


@dataclass(frozen=True)
class Issuer:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _builder(subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey
             ) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=DAYS))
    )


def _write_pair(journal: Journal, where: Path, name: str, cert: x509.Certificate,
                key: ec.EllipticCurvePrivateKey) -> None:
    journal.write_file(where / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM))
    journal.write_file(where / f"{name}.key", _pem_key(key), mode=0o600)


def make_ca(journal: Journal, where: Path, name: str, cn: str) -> Issuer:
    key = _key()
    cert = (
        _builder(_name(cn), _name(cn), key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(journal, where, name, cert, key)
    return Issuer(cert, key)


def load_ca(where: Path, name: str) -> Issuer:
    cert = x509.load_pem_x509_certificate((where / f"{name}.crt").read_bytes())
    key = serialization.load_pem_private_key((where / f"{name}.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return Issuer(cert, key)


def _leaf(issuer: Issuer, subject: x509.Name, *, eku: x509.ObjectIdentifier,
          sans: list[x509.GeneralName]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    builder = (
        _builder(subject, issuer.cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer.key, hashes.SHA256()), key


def issue_serving(journal: Journal, where: Path, name: str, issuer: Issuer, *, cn: str,
                  dns: list[str], ips: list[str]) -> None:
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    sans += [x509.DNSName(d) for d in dns]
    cert, key = _leaf(issuer, _name(cn), eku=ExtendedKeyUsageOID.SERVER_AUTH, sans=sans)
    _write_pair(journal, where, name, cert, key)


def issue_client(journal: Journal, where: Path, name: str, issuer: Issuer, *, cn: str,
                 orgs: tuple[str, ...] = ()) -> None:
    """A client certificate: user ``cn``, groups ``orgs``."""
    cert, key = _leaf(issuer, _name(cn, orgs), eku=ExtendedKeyUsageOID.CLIENT_AUTH, sans=[])
    _write_pair(journal, where, name, cert, key)


def make_all(journal: Journal, where: Path) -> Issuer:
    """Every certificate the control plane needs; returns the cluster CA (for node agents)."""
    ca = make_ca(journal, where, "ca", "meshinject-local-ca")
    issue_serving(
        journal, where, "apiserver", ca, cn="kube-apiserver",
        ips=["127.0.0.1", SERVICE_IP],
        dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local"],
    )
    issue_client(journal, where, "admin", ca, cn="admin", orgs=("system:masters",))
    issue_client(journal, where, "kcm", ca, cn="system:kube-controller-manager")
    issue_client(journal, where, "scheduler", ca, cn="system:kube-scheduler")
    # what the API server presents to kubelets (logs, exec): a node agent serving the kubelet
    # API verifies it against ca.crt; bound to system:kubelet-api-admin after start
    issue_client(journal, where, "apiserver-kubelet-client", ca,
                 cn="kube-apiserver-kubelet-client")
    front = make_ca(journal, where, "front-proxy-ca", "meshinject-local-front-proxy-ca")
    issue_client(journal, where, "front-proxy-client", front, cn="front-proxy-client")
    sa = _key()  # the service-account token signer: private to sign, public to verify
    journal.write_file(where / "sa.key", _pem_key(sa), mode=0o600)
    journal.write_file(where / "sa.pub", sa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return ca


def kubeconfig(*, server: str, ca_file: Path, user: str, cert_file: Path | None = None,
               key_file: Path | None = None, token: str | None = None) -> str:
    """A kubeconfig with everything embedded, so the file stands alone (JSON is YAML)."""
    import json

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    creds: dict[str, str] = {"token": token} if token else {
        "client-certificate-data": b64(cert_file) if cert_file else "",
        "client-key-data": b64(key_file) if key_file else "",
    }
    return json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "meshinject-local",
                      "cluster": {"server": server, "certificate-authority-data": b64(ca_file)}}],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": "meshinject-local",
                      "context": {"cluster": "meshinject-local", "user": user}}],
        "current-context": "meshinject-local",
    }, indent=2) + "\n"
