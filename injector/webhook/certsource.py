"""Where the webhook's serving certificate comes from: files, a throwaway CA, or the cert store.

- ``--tls-cert F --tls-key F``: files someone else keeps (a mounted Secret, cert-manager);
- ``--self-signed``: a throwaway CA and serving certificate made at start, for local runs,
  tests and benchmarks; the CA's path is printed so a client can verify like the API server;
- ``--cert-secret NS/NAME``: the cert store keeps a CA and serving certificate in a Secret,
  patches the webhook's caBundle, writes the pair into ``--cert-dir`` and renews it.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from mesh.errors import UsageError
from mesh.pki import certs


@dataclass(frozen=True)
class CertSource:
    """``meshinject serve``'s certificate flags, as values."""

    tls_cert: str | None = None
    tls_key: str | None = None
    self_signed: bool = False
    dns_names: tuple[str, ...] = ()
    cert_secret: str | None = None
    webhook_config: str = "meshinject"
    service_name: str = "meshinject"
    cert_dir: str | None = None
    extra_sans: tuple[str, ...] = ()
    cert_check_seconds: float = 60.0


def self_signed(cert_dir: Path, extra_dns: tuple[str, ...] | list[str]) -> tuple[Path, Path, Path]:
    """Write ca.crt, tls.crt and tls.key into ``cert_dir``; return their paths."""
    ca = certs.generate_ca("meshinject self-signed CA", days=30)
    pair = certs.generate_serving_cert(
        ca, dns_names=["localhost", *extra_dns], ip_addresses=["127.0.0.1"], days=30
    )
    cert_dir.mkdir(parents=True, exist_ok=True)
    paths = cert_dir / "ca.crt", cert_dir / "tls.crt", cert_dir / "tls.key"
    paths[0].write_bytes(ca.cert_pem)
    paths[1].write_bytes(pair.cert_pem)
    paths[2].touch(mode=0o600)
    paths[2].write_bytes(pair.key_pem)
    return paths


def _from_secret(source: CertSource, stop: threading.Event) -> tuple[Path, Path]:
    assert source.cert_secret is not None
    namespace, _, secret = source.cert_secret.partition("/")
    if not namespace or not secret or "/" in secret:
        raise UsageError(f"--cert-secret {source.cert_secret!r}: expected NAMESPACE/NAME")
    if not source.cert_dir:
        raise UsageError("--cert-secret needs --cert-dir, where the server reads its files")
    if source.cert_check_seconds <= 0:
        raise UsageError(f"--cert-check-seconds {source.cert_check_seconds:g}: must be above 0")
    from injector.webhook import certstore  # here: it pulls in the Kubernetes client

    opts = certstore.CertStoreOptions(
        namespace=namespace,
        secret_name=secret,
        webhook_name=source.webhook_config,
        service_name=source.service_name,
        cert_dir=source.cert_dir,
        extra_sans=source.extra_sans,
        check_seconds=source.cert_check_seconds,
    )
    certstore.bootstrap(opts)
    threading.Thread(
        target=certstore.keep_renewed, args=(opts, stop), name="cert-store", daemon=True
    ).start()
    return Path(source.cert_dir) / "tls.crt", Path(source.cert_dir) / "tls.key"


def cert_files(source: CertSource, stop: threading.Event) -> tuple[Path, Path]:
    """The serving certificate and key files, made or fetched as ``source`` says."""
    modes = [bool(source.tls_cert or source.tls_key), source.self_signed,
             bool(source.cert_secret)]
    if sum(modes) != 1:
        raise UsageError("give exactly one of --tls-cert/--tls-key, --self-signed, --cert-secret")
    if source.extra_sans and not source.cert_secret:
        raise UsageError("--extra-san goes with --cert-secret (--self-signed takes --dns-name)")
    if source.self_signed:
        where = Path(source.cert_dir or tempfile.mkdtemp(prefix="meshinject-certs-"))
        if not source.cert_dir:
            atexit.register(shutil.rmtree, where, ignore_errors=True)
        ca_file, cert_file, key_file = self_signed(where, source.dns_names)
        print(f"meshinject: CA certificate: {ca_file}", flush=True)
        return cert_file, key_file
    if source.cert_secret:
        return _from_secret(source, stop)
    if not (source.tls_cert and source.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    return Path(source.tls_cert), Path(source.tls_key)
