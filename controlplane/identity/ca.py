"""The mesh's certificate authority: what signs, what every proxy trusts, and what it issues.

Pure: bytes in and out. Where the keys live is the store's business (the Secret
``meshinject-ca`` in a cluster, a directory in the sandbox and the tests); both hand this module
the same files:

- ``ca.crt`` and ``ca.key``: the signer. Made on first start as a self-signed mesh root; or an
  intermediate under a root of the user's own (then ``roots.pem`` must hold that root).
- ``roots.pem`` (optional): the roots every proxy trusts. Defaults to ``ca.crt`` when that is
  self-signed. During a root rotation it holds the old root and the new one, so certificates
  of either are accepted while proxies move from one to the other.
- cert-manager's layout works too: ``tls.crt``/``tls.key`` sign and ``ca.crt`` is the root.

The signer issues each workload's SVID (``spiffe://<trust domain>/ns/<ns>/sa/<sa>``) and the
control plane's serving certificate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from mesh.contract import CONTROLPLANE_SERVICE
from mesh.errors import SettingsError
from mesh.pki import certs

SVID_LIFETIME = dt.timedelta(hours=24)


@dataclass(frozen=True)
class MeshCA:
    """``signer`` signs; ``anchors`` (PEM, one or more roots) is what every proxy trusts;
    ``chain`` is appended to every issued certificate (the signer's own certificate when it is
    an intermediate), so a peer holding only the roots can build the path."""

    signer: certs.CertPair
    anchors: bytes
    chain: bytes = b""

    @classmethod
    def create(cls, *, trust_domain: str, days: int = 3650) -> MeshCA:
        root = certs.generate_ca(f"meshinject mesh root ({trust_domain})", days=days)
        return cls(root, root.cert_pem)

    @classmethod
    def from_files(cls, files: Mapping[str, bytes], *, where: str) -> MeshCA:
        """The CA from a store's files (see the module docstring); SettingsError naming
        ``where`` and the file when they do not fit together."""
        if "tls.crt" in files and "tls.key" in files:  # cert-manager's Secret
            signer_crt, signer_key, roots = files["tls.crt"], files["tls.key"], files.get("ca.crt")
        else:
            missing = [name for name in ("ca.crt", "ca.key") if not files.get(name)]
            if missing:
                raise SettingsError(f"{where}: no {' or '.join(missing)}")
            signer_crt, signer_key, roots = files["ca.crt"], files["ca.key"], files.get(
                "roots.pem")
        try:
            cert = x509.load_pem_x509_certificates(signer_crt)
            anchors = x509.load_pem_x509_certificates(roots) if roots else []
            key = serialization.load_pem_private_key(signer_key, password=None)
        except ValueError as err:
            raise SettingsError(f"{where}: cannot read the CA's PEM files: {err}") from err
        leaf, intermediates = cert[0], cert[1:]
        if key.public_key() != leaf.public_key():
            raise SettingsError(f"{where}: the signer's key does not match its certificate")
        self_signed = leaf.issuer == leaf.subject
        if not anchors:
            if not self_signed:
                raise SettingsError(f"{where}: the signer is an intermediate: give its root "
                                    "too (roots.pem, or ca.crt beside tls.crt)")
            anchors = [leaf]
        top = intermediates[-1] if intermediates else leaf
        if not any(_issued_by(top, root) for root in anchors):
            raise SettingsError(f"{where}: no trusted root signed the signer "
                                f"({top.subject.rfc4514_string()})")
        pem = serialization.Encoding.PEM
        chain = b"" if self_signed else b"".join(c.public_bytes(pem) for c in cert)
        return cls(certs.CertPair(leaf.public_bytes(pem), signer_key),
                   b"".join(a.public_bytes(pem) for a in anchors), chain)

    def files(self) -> dict[str, bytes]:
        """What a store keeps, in the layout :meth:`from_files` reads."""
        out = {"ca.crt": self.chain or self.signer.cert_pem, "ca.key": self.signer.key_pem}
        if self.anchors != self.signer.cert_pem:
            out["roots.pem"] = self.anchors
        return out

    def bundle(self) -> bytes:
        """The roots every proxy trusts."""
        return self.anchors

    def issue(self, spiffe_id: str, *, lifetime: dt.timedelta = SVID_LIFETIME,
              now: dt.datetime | None = None) -> certs.CertPair:
        """A workload's SVID, with the chain up to (not including) the roots."""
        return certs.issue_svid(self.signer, spiffe_id=spiffe_id, lifetime=lifetime,
                                chain=self.chain, now=now)

    def serving(self, *, namespace: str, extra_names: tuple[str, ...] = (),
                ips: tuple[str, ...] = (), days: int = 30) -> certs.CertPair:
        """The control plane's certificate: every name its Service is reached by."""
        service = CONTROLPLANE_SERVICE
        names = [f"{service}.{namespace}.svc", service, f"{service}.{namespace}",
                 f"{service}.{namespace}.svc.cluster.local", *extra_names]
        pair = certs.generate_serving_cert(self.signer, dns_names=names, ip_addresses=ips,
                                           days=days)
        return certs.CertPair(pair.cert_pem + self.chain, pair.key_pem)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
