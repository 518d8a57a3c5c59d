"""Serving certificates with no manual step: a Secret as the store, the API server as the lock.

Every replica runs the same code; none is a leader. The Secret has a fixed name, so creating it
is the election: the first ``POST`` wins, the others get 409 and read the winner's. Renewal is a
``PUT`` carrying the ``resourceVersion`` read; the loser of that race (409) adopts the winner's.
The CA lives ten years, the serving certificate one, reissued by the same CA when a third of its
life is left (so the caBundle stays); an old CA is replaced and the bundle carries both until the
old one expires, so replicas still serving the old chain stay trusted meanwhile. Each replica
makes sure the caBundle holds the Secret's CA, then copies tls.crt/tls.key into ``--cert-dir``
when the Secret's differ (key first, each by atomic rename); the server's reloading SSL context
picks them up without a restart.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from mesh.errors import Conflict, KubeError, NotFound
from mesh.kube.client import Kube
from mesh.pki import certs

log = logging.getLogger("meshinject.certstore")

Obj = dict[str, Any]
SECRET_KEYS = ("ca.crt", "ca.key", "tls.crt", "tls.key")


@dataclass(frozen=True)
class CertStoreOptions:
    """Where the certificates live and who trusts them (``meshinject serve`` flags)."""

    namespace: str
    secret_name: str
    webhook_name: str
    service_name: str
    cert_dir: str | Path
    kubeconfig: str | None = None
    ca_days: int = 3650
    cert_days: int = 365
    renew_fraction: float = 1 / 3
    check_seconds: float = 60.0
    # names beyond the Service's: where a webhook is registered by ``clientConfig.url`` (a
    # local cluster calls https://127.0.0.1:PORT/mutate), the certificate must name that host
    extra_sans: tuple[str, ...] = ()
    kube: Kube | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Bundle:
    """The Secret's contents; ``resource_version`` is what a renewal must match."""

    ca_crt: bytes
    ca_key: bytes
    tls_crt: bytes
    tls_key: bytes
    ca_previous: bytes = b""
    resource_version: str = ""
    # a Secret's type is immutable: one made by hand as Opaque is renewed as Opaque
    secret_type: str = "kubernetes.io/tls"

    def ca_bundle(self, *, now: datetime | None = None) -> bytes:
        """What the API server must trust: the CA, plus the previous one until it expires."""
        if self.ca_previous and certs.days_left(self.ca_previous, now=now) > 0:
            return self.ca_crt + self.ca_previous
        return self.ca_crt


def dns_names(opts: CertStoreOptions) -> list[str]:
    """Every name the API server may use for the Service (it uses ``svc.ns.svc``), then the
    extra DNS names."""
    svc, ns = opts.service_name, opts.namespace
    names = [svc, f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local"]
    return names + [n for n in opts.extra_sans if not _is_ip(n) and n not in names]


def ip_addresses(opts: CertStoreOptions) -> list[str]:
    """The extra names that are IP addresses (they go in as IP SANs: a client connecting to
    https://127.0.0.1 checks an IP entry, never a DNS one)."""
    return [str(ipaddress.ip_address(n)) for n in opts.extra_sans if _is_ip(n)]


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


# -- the Secret <-> Bundle ------------------------------------------------------------------
class BadSecret(KubeError):
    """The Secret exists but cannot be used (keys missing, not PEM); it is reissued in place,
    keeping its type (the API server refuses to change it)."""

    def __init__(self, message: str, *, resource_version: str, secret_type: str) -> None:
        super().__init__(message)
        self.resource_version = resource_version
        self.secret_type = secret_type


def _from_secret(secret: Obj) -> Bundle:
    data = secret.get("data") or {}
    meta = secret.get("metadata", {})
    version = str(meta.get("resourceVersion", ""))
    kind = str(secret.get("type") or "Opaque")
    missing = [k for k in SECRET_KEYS if not data.get(k)]
    if missing:
        raise BadSecret(
            f"secret {meta.get('name')} lacks {', '.join(missing)}",
            resource_version=version, secret_type=kind,
        )

    def raw(key: str) -> bytes:
        return base64.b64decode(data.get(key) or "")

    try:
        for key in ("ca.crt", "tls.crt"):
            x509.load_pem_x509_certificate(raw(key))
    except ValueError as err:
        raise BadSecret(
            f"secret {meta.get('name')}: {key} is not a PEM certificate ({err})",
            resource_version=version, secret_type=kind,
        ) from err
    ca_crt, ca_key, tls_crt, tls_key = (raw(k) for k in SECRET_KEYS)
    return Bundle(ca_crt, ca_key, tls_crt, tls_key, raw("ca-previous.crt"), version, kind)


def _to_secret(opts: CertStoreOptions, bundle: Bundle) -> Obj:
    pems = (bundle.ca_crt, bundle.ca_key, bundle.tls_crt, bundle.tls_key)
    data = dict(zip(SECRET_KEYS, pems, strict=True))
    if bundle.ca_previous:
        data["ca-previous.crt"] = bundle.ca_previous
    labels = {"app.kubernetes.io/name": "meshinject", "app.kubernetes.io/component": "certs"}
    metadata: Obj = {"name": opts.secret_name, "namespace": opts.namespace, "labels": labels}
    if bundle.resource_version:  # a PUT must name the version it replaces
        metadata["resourceVersion"] = bundle.resource_version
    encoded = {k: base64.b64encode(v).decode() for k, v in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": bundle.secret_type,
        "metadata": metadata,
        "data": encoded,
    }


# -- issuing and judging certificates -------------------------------------------------------
def _issue(opts: CertStoreOptions, *, ca: certs.CertPair | None, previous: bytes) -> Bundle:
    ca = ca or certs.generate_ca(f"meshinject-ca.{opts.namespace}", days=opts.ca_days)
    serving = certs.generate_serving_cert(
        ca, dns_names=dns_names(opts), ip_addresses=ip_addresses(opts), days=opts.cert_days
    )
    return Bundle(ca.cert_pem, ca.key_pem, serving.cert_pem, serving.key_pem, previous)


def _nearly_expired(pem: bytes, *, fraction: float, now: datetime | None) -> bool:
    cert = x509.load_pem_x509_certificate(pem)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    return certs.days_left(pem, now=now) < lifetime.total_seconds() / 86400 * fraction


def _serving_fits(opts: CertStoreOptions, bundle: Bundle) -> bool:
    """The serving cert was signed by this CA and names this Service and the extra names (a
    renamed Service, a new ``--extra-san`` or a hand-edited Secret gets a fresh certificate
    rather than a webhook nobody can call)."""
    cert = x509.load_pem_x509_certificate(bundle.tls_crt)
    ca = x509.load_pem_x509_certificate(bundle.ca_crt)
    try:
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    ips = {str(a) for a in sans.get_values_for_type(x509.IPAddress)}
    has_dns = set(dns_names(opts)) <= set(sans.get_values_for_type(x509.DNSName))
    return has_dns and set(ip_addresses(opts)) <= ips


def renewal(
    opts: CertStoreOptions, bundle: Bundle, *, now: datetime | None = None
) -> Bundle | None:
    """The bundle that should replace ``bundle``, or None while it is good."""
    frac = opts.renew_fraction
    if _nearly_expired(bundle.ca_crt, fraction=frac, now=now):
        log.info("CA of secret %s/%s is nearly expired: new CA", opts.namespace, opts.secret_name)
        fresh = _issue(opts, ca=None, previous=bundle.ca_crt)
    elif _nearly_expired(bundle.tls_crt, fraction=frac, now=now) or not _serving_fits(opts, bundle):
        log.info("reissuing the serving certificate in %s/%s", opts.namespace, opts.secret_name)
        fresh = _issue(
            opts, ca=certs.CertPair(bundle.ca_crt, bundle.ca_key), previous=bundle.ca_previous
        )
    else:
        return None
    return replace(fresh, resource_version=bundle.resource_version, secret_type=bundle.secret_type)


# -- the API-facing steps -------------------------------------------------------------------
def find_or_create(kube: Kube, opts: CertStoreOptions) -> Bundle:
    """Read the Secret; if absent create it. Losing the create race (409) means reading the
    winner's, so every replica ends up with the same CA."""
    try:
        return _from_secret(kube.get_secret(opts.namespace, opts.secret_name))
    except NotFound:
        pass
    except BadSecret as err:
        log.warning("%s: replacing it with a fresh CA and certificate", err)
        fresh = replace(
            _issue(opts, ca=None, previous=b""),
            resource_version=err.resource_version, secret_type=err.secret_type,
        )
        return renew_to(kube, opts, fresh)
    fresh = _issue(opts, ca=None, previous=b"")
    try:
        created = kube.create_secret(opts.namespace, _to_secret(opts, fresh))
        log.info("created certificate secret %s/%s", opts.namespace, opts.secret_name)
        return _from_secret(created)
    except Conflict:
        log.info("another replica created %s/%s first: using it", opts.namespace, opts.secret_name)
        return _from_secret(kube.get_secret(opts.namespace, opts.secret_name))


def renew_if_due(
    kube: Kube, opts: CertStoreOptions, bundle: Bundle, *, now: datetime | None = None
) -> Bundle:
    fresh = renewal(opts, bundle, now=now)
    return bundle if fresh is None else renew_to(kube, opts, fresh)


def renew_to(kube: Kube, opts: CertStoreOptions, fresh: Bundle) -> Bundle:
    """PUT ``fresh`` over the version it was derived from; on 409 adopt the winner's."""
    try:
        stored = kube.replace_secret(opts.namespace, opts.secret_name, _to_secret(opts, fresh))
        return _from_secret(stored)
    except Conflict:
        log.info("another replica renewed %s/%s first: using it", opts.namespace, opts.secret_name)
        return _from_secret(kube.get_secret(opts.namespace, opts.secret_name))


def ensure_ca_bundle(kube: Kube, webhook_name: str, ca_bundle: bytes, *, attempts: int = 5) -> int:
    """Set caBundle on every webhook of the configuration that lacks it; returns how many were
    changed (0: nothing written). The patch pins the resourceVersion read, so a concurrent edit
    makes it fail with 409 and we read again instead of overwriting."""
    want = base64.b64encode(ca_bundle).decode()
    for _ in range(attempts):
        try:
            config = kube.get_webhook_config(webhook_name)
        except NotFound:
            # not applied yet (or renamed): serving is still right, the next tick patches it
            log.warning("mutatingwebhookconfiguration %s not found: caBundle not set", webhook_name)
            return 0
        ops: list[Obj] = []
        for index, hook in enumerate(config.get("webhooks") or []):
            if (hook.get("clientConfig") or {}).get("caBundle") != want:
                path = f"/webhooks/{index}/clientConfig/caBundle"
                ops.append({"op": "add", "path": path, "value": want})
        if not ops:
            return 0
        version = config.get("metadata", {}).get("resourceVersion", "")
        pin = {"op": "replace", "path": "/metadata/resourceVersion", "value": version}
        try:
            kube.json_patch_webhook_config(webhook_name, [pin, *ops])
        except Conflict:
            continue
        log.info("patched caBundle of %d webhook(s) in %s", len(ops), webhook_name)
        return len(ops)
    raise KubeError(f"mutatingwebhookconfiguration {webhook_name}: caBundle kept conflicting")


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _holds(path: Path, data: bytes) -> bool:
    return path.exists() and path.read_bytes() == data


def write_files(cert_dir: str | Path, bundle: Bundle) -> bool:
    """Copy the serving pair (and CA) into ``cert_dir`` if they differ; True when written."""
    where = Path(cert_dir)
    where.mkdir(parents=True, exist_ok=True)
    crt, key = where / "tls.crt", where / "tls.key"
    if _holds(crt, bundle.tls_crt) and _holds(key, bundle.tls_key):
        return False
    _write_atomic(key, bundle.tls_key, mode=0o600)
    _write_atomic(where / "ca.crt", bundle.ca_crt, mode=0o644)
    _write_atomic(crt, bundle.tls_crt, mode=0o644)
    return True


# -- what cmd_serve calls -------------------------------------------------------------------
def sync_once(
    opts: CertStoreOptions, *, kube: Kube | None = None, now: datetime | None = None
) -> Bundle:
    """One full pass: find or create, renew if due, caBundle, files. Idempotent.

    The caBundle before the files: the files are what the server serves, so a certificate of a
    new CA must not be served before the API server trusts that CA (a connection it opened in
    between would fail its handshake, and with failurePolicy Fail refuse a pod). A replica that
    follows a Secret another renewed keeps the same order."""
    api = kube or opts.kube or Kube.connect(kubeconfig=opts.kubeconfig)
    bundle = renew_if_due(api, opts, find_or_create(api, opts), now=now)
    ensure_ca_bundle(api, opts.webhook_name, bundle.ca_bundle(now=now))
    if write_files(opts.cert_dir, bundle):
        log.info("serving certificate written to %s", opts.cert_dir)
    return bundle


def bootstrap(opts: CertStoreOptions) -> Bundle:
    """At start-up, before the server listens: fails loudly (the pod restarts) if it cannot."""
    return sync_once(opts)


def keep_renewed(opts: CertStoreOptions, stop: threading.Event) -> None:
    """Every ``check_seconds`` until ``stop`` is set; an API error is logged and retried on the
    next tick (the certificate in hand is good for months, so there is no hurry)."""
    api = opts.kube or Kube.connect(kubeconfig=opts.kubeconfig)
    while not stop.wait(opts.check_seconds):
        try:
            sync_once(opts, kube=api, now=datetime.now(UTC))
        except KubeError as err:
            log.warning("certificate check failed, will retry: %s", err)
        except Exception:  # this thread must outlive any one bad tick
            log.exception("certificate check crashed, will retry")
