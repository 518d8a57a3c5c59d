"""issue_svid: an X.509 SVID as the SPIFFE profile and both ends of mutual TLS want it."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from mesh.pki import certs
from mesh.pki.spiffe import namespace_prefix, spiffe_id

ID = "spiffe://cluster.local/ns/shop/sa/frontend"
DAY = dt.timedelta(hours=24)


def test_an_svid_names_the_workload_by_one_uri_san_and_nothing_else() -> None:
    ca = certs.generate_ca("mesh root")
    pair = certs.issue_svid(ca, spiffe_id=ID, lifetime=DAY)
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and list(san.value) == [x509.UniformResourceIdentifier(ID)]
    assert certs.uri_sans(pair.cert_pem) == [ID]
    assert cert.subject == x509.Name([])
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))


def test_an_svid_lives_as_long_as_asked_from_a_moment_just_before_now() -> None:
    ca = certs.generate_ca("mesh root")
    now = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    pair = certs.issue_svid(ca, spiffe_id=ID, lifetime=dt.timedelta(hours=1.5), now=now)
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    assert cert.not_valid_after_utc == now + dt.timedelta(hours=1.5)
    assert cert.not_valid_before_utc == now - dt.timedelta(minutes=5)


def test_spiffe_ids_have_the_designs_shape() -> None:
    assert spiffe_id("cluster.local", "shop", "frontend") == ID
    assert ID.startswith(namespace_prefix("cluster.local", "shop"))
    assert not spiffe_id("td", "shop-admin", "x").startswith(namespace_prefix("td", "shop"))


def test_two_svids_of_one_root_complete_a_mutual_tls_handshake(tmp_path: Path) -> None:
    """OpenSSL as both ends: each presents its SVID and verifies the other's against the root
    (no host name: mesh peers are checked by SPIFFE ID, not by DNS name)."""
    ca = certs.generate_ca("mesh root")
    root = tmp_path / "root.pem"
    root.write_bytes(ca.cert_pem)

    def context(side: ssl._SSLMethod, who: str) -> ssl.SSLContext:
        pair = certs.issue_svid(ca, spiffe_id=spiffe_id("cluster.local", "shop", who),
                                lifetime=DAY)
        (tmp_path / f"{who}.pem").write_bytes(pair.cert_pem + pair.key_pem)
        ctx = ssl.SSLContext(side)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(root)
        ctx.load_cert_chain(tmp_path / f"{who}.pem")
        return ctx

    server_ctx = context(ssl.PROTOCOL_TLS_SERVER, "web")
    client_ctx = context(ssl.PROTOCOL_TLS_CLIENT, "frontend")
    seen: dict[str, object] = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                seen["client"] = tls.getpeercert()

        thread = threading.Thread(target=serve)
        thread.start()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                client_ctx.wrap_socket(raw) as tls:
            seen["server"] = tls.getpeercert()
        thread.join(timeout=10)
    assert seen["client"]["subjectAltName"] == (  # type: ignore[index]
        ("URI", "spiffe://cluster.local/ns/shop/sa/frontend"),)
    assert seen["server"]["subjectAltName"] == (  # type: ignore[index]
        ("URI", "spiffe://cluster.local/ns/shop/sa/web"),)
