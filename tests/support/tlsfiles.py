"""Certificate files as a rotation writes them, and fingerprints to tell them apart."""

from __future__ import annotations

import hashlib
import os
import ssl
from pathlib import Path

import httpx


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` in one rename, as the kubelet and the cert store do."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def fingerprint(reply: httpx.Response) -> str:
    """The SHA-256 of the certificate the server presented for ``reply``."""
    der = reply.extensions["network_stream"].get_extra_info("ssl_object").getpeercert(True)
    return hashlib.sha256(der).hexdigest()


def pem_fingerprint(pem: bytes) -> str:
    """The SHA-256 of a PEM certificate, comparable with :func:`fingerprint`."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.decode())).hexdigest()
