"""X.509 helpers of the kernel that other programs' output is compared with."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mesh.pki import certs


def _cert_with_serial(serial: int) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "serial")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_a_serial_reads_in_whole_bytes_as_envoy_shows_it() -> None:
    # Envoy's /certs prints the serial byte by byte: 0x0abc is "0abc", never "abc"
    assert certs.serial_of(_cert_with_serial(0xABC)) == "0abc"
    assert certs.serial_of(_cert_with_serial(0x1ABC)) == "1abc"
