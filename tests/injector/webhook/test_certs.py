"""The CA and serving certificates verify the way the API server verifies them."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from injector.webhook.tls import ReloadingSSLContext
from mesh.pki import certs


def test_a_serving_certificate_carries_its_names_and_chains_to_the_ca(tmp_path: Path) -> None:
    ca = certs.generate_ca("test CA")
    pair = certs.generate_serving_cert(
        ca, dns_names=["meshinject.meshinject-system.svc", "localhost"], ip_addresses=["127.0.0.1"]
    )
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "meshinject.meshinject-system.svc",
        "localhost",
    ]
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))
    assert b"BEGIN PRIVATE KEY" in pair.key_pem


def test_days_left_counts_down_from_the_requested_lifetime() -> None:
    ca = certs.generate_ca("test CA", days=10)
    assert 9.99 < certs.days_left(ca.cert_pem) <= 10
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=11)
    assert certs.days_left(ca.cert_pem, now=later) < 0
    assert certs.not_after(ca.cert_pem).tzinfo is not None


def test_a_serving_certificate_needs_a_name() -> None:
    with pytest.raises(ValueError, match="at least one DNS name or IP address"):
        certs.generate_serving_cert(certs.generate_ca("c"), dns_names=[])


def test_the_reloading_context_keeps_the_old_pair_until_the_new_one_loads(tmp_path: Path) -> None:
    ca = certs.generate_ca("test CA")
    first, second = (certs.generate_serving_cert(ca, dns_names=["localhost"]) for _ in range(2))
    crt, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    crt.write_bytes(first.cert_pem)
    key.write_bytes(first.key_pem)
    reloading = ReloadingSSLContext(crt, key)
    assert reloading.check() is False
    key.write_bytes(second.key_pem)
    assert reloading.check() is False
    assert reloading.last_error and "tls.crt" in reloading.last_error
    crt.write_bytes(second.cert_pem)
    assert reloading.check() is True
    assert (reloading.reloads, reloading.last_error) == (1, None)
    assert isinstance(reloading.context, ssl.SSLContext)
