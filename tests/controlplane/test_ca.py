"""The mesh CA: SVIDs with the workload's SPIFFE ID, a signer under a user's root, and the
stores' files read back into the same CA, with every misfit named."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

from controlplane.identity.ca import MeshCA
from mesh.errors import SettingsError
from mesh.pki import certs

ID = "spiffe://cluster.local/ns/shop/sa/frontend"


def _chain_verifies(leaf_and_chain: bytes, roots: bytes) -> bool:
    """What a TLS peer does: build the path from the presented chain to a trusted root."""
    from cryptography.x509.verification import PolicyBuilder, Store

    presented = x509.load_pem_x509_certificates(leaf_and_chain)
    store = Store(x509.load_pem_x509_certificates(roots))
    verifier = PolicyBuilder().store(store).build_client_verifier()
    verifier.verify(presented[0], presented[1:])
    return True


def test_an_svid_names_only_the_workloads_spiffe_id_and_serves_and_calls() -> None:
    ca = MeshCA.create(trust_domain="cluster.local")
    now = dt.datetime.now(dt.UTC)
    svid = ca.issue(ID, lifetime=dt.timedelta(hours=24), now=now)
    assert certs.uri_sans(svid.cert_pem) == [ID]
    cert = x509.load_pem_x509_certificate(svid.cert_pem)
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {x509.ExtendedKeyUsageOID.SERVER_AUTH,
                           x509.ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - now.replace(microsecond=0)
    assert lifetime == dt.timedelta(hours=24)
    assert _chain_verifies(svid.cert_pem, ca.bundle())


def test_a_signer_under_the_users_root_adds_itself_to_every_chain() -> None:
    users_root = certs.generate_ca("corp root", path_length=None)
    intermediate = _intermediate(users_root)
    ca = MeshCA.from_files({"ca.crt": intermediate.cert_pem, "ca.key": intermediate.key_pem,
                            "roots.pem": users_root.cert_pem}, where="test")
    assert ca.bundle() == users_root.cert_pem
    svid = ca.issue(ID)
    assert len(x509.load_pem_x509_certificates(svid.cert_pem)) == 2
    assert _chain_verifies(svid.cert_pem, users_root.cert_pem)
    # cert-manager's Secret layout holds the same
    same = MeshCA.from_files({"tls.crt": intermediate.cert_pem, "tls.key": intermediate.key_pem,
                              "ca.crt": users_root.cert_pem}, where="test")
    assert same.bundle() == ca.bundle() and same.chain == ca.chain


def test_during_a_rotation_both_roots_are_trusted_and_the_new_one_signs() -> None:
    old, new = MeshCA.create(trust_domain="cluster.local"), MeshCA.create(
        trust_domain="cluster.local")
    rotating = MeshCA.from_files({**new.files(), "roots.pem": new.bundle() + old.bundle()},
                                 where="test")
    assert _chain_verifies(old.issue(ID).cert_pem, rotating.bundle())
    assert _chain_verifies(rotating.issue(ID).cert_pem, rotating.bundle())
    assert MeshCA.from_files(rotating.files(), where="t") == rotating  # the store round-trips


def test_files_that_do_not_fit_together_are_refused_naming_the_store() -> None:
    one, other = certs.generate_ca("one", path_length=None), certs.generate_ca("other")
    below_one = _intermediate(one)
    cases = {
        "no ca.key": {"ca.crt": one.cert_pem},
        "does not match": {"ca.crt": one.cert_pem, "ca.key": other.key_pem},
        "give its root": {"ca.crt": below_one.cert_pem, "ca.key": below_one.key_pem},
        "no trusted root signed": {"ca.crt": one.cert_pem, "ca.key": one.key_pem,
                                   "roots.pem": other.cert_pem},
        "cannot read": {"ca.crt": b"not pem", "ca.key": one.key_pem},
    }
    for why, files in cases.items():
        with pytest.raises(SettingsError, match=f"secret x/meshinject-ca: .*{why}"):
            MeshCA.from_files(files, where="secret x/meshinject-ca")


def _intermediate(root: certs.CertPair) -> certs.CertPair:
    """An intermediate CA signed by ``root`` (as a user's PKI or cert-manager would make)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    root_cert = x509.load_pem_x509_certificate(root.cert_pem)
    root_key = serialization.load_pem_private_key(root.key_pem, password=None)
    assert isinstance(root_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mesh signer")]))
            .issuer_name(root_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(root_key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return certs.CertPair(cert.public_bytes(serialization.Encoding.PEM), pem)
