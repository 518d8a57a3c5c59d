"""Certificates with no manual step, against the real API server through the real client.

Each test has a namespace and a webhook configuration of its own (:mod:`tests.support.certstore`),
so the real server does what the cert store relies on: 409 for a second create of the Secret,
409 for a write carrying a stale resourceVersion (a PUT, and a JSON patch that pins it), and 404
for a configuration not applied yet. The races are held at the client's door so that both
replicas reach the server before either goes through.
"""

from __future__ import annotations

import base64
import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from injector.webhook import certstore
from injector.webhook.certstore import CertStoreOptions
from mesh.pki import certs
from tests.support.certstore import HOOKS, SECRET, SVC, World, count, hold, world
from tests.support.realcluster import LocalCluster

on_cluster = pytest.mark.cluster


def _future(days: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(days=days)


@pytest.fixture
def here(cluster: LocalCluster) -> Iterator[World]:
    with world(cluster) as w:
        yield w


@on_cluster
def test_the_first_start_creates_the_secret_writes_files_and_patches_every_webhook(
    here: World, tmp_path: Path
) -> None:
    here.seed_webhook()
    bundle = certstore.bootstrap(here.options(tmp_path / "certs"))
    secret = here.secret()
    assert secret is not None and secret["type"] == "kubernetes.io/tls"
    assert set(secret["data"]) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    assert (tmp_path / "certs" / "tls.crt").read_bytes() == bundle.tls_crt
    assert (tmp_path / "certs" / "tls.key").stat().st_mode & 0o777 == 0o600
    assert here.ca_bundles() == [bundle.ca_crt, bundle.ca_crt]
    served = x509.load_pem_x509_certificate(bundle.tls_crt)
    served.verify_directly_issued_by(x509.load_pem_x509_certificate(bundle.ca_crt))
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{SVC}.{here.namespace}.svc" in names.get_values_for_type(x509.DNSName)


@on_cluster
def test_a_second_replica_reuses_the_secret_and_writes_nothing(
    here: World, tmp_path: Path
) -> None:
    here.seed_webhook()
    first = certstore.bootstrap(here.options(tmp_path / "a"))
    versions = here.versions()
    second = certstore.bootstrap(here.options(tmp_path / "b"))
    assert second.tls_crt == first.tls_crt and second.ca_crt == first.ca_crt
    assert here.versions() == versions  # neither the Secret nor the webhook was written
    assert (tmp_path / "b" / "tls.key").read_bytes() == first.tls_key


@on_cluster
def test_two_replicas_starting_at_once_end_with_one_secret(here: World, tmp_path: Path) -> None:
    here.seed_webhook()
    both_posting = threading.Barrier(2, timeout=10)
    kubes = {n: here.kube() for n in ("a", "b")}
    outcomes = [hold(k, "create_secret", both_posting) for k in kubes.values()]
    results: dict[str, certstore.Bundle] = {}

    def start(name: str) -> None:
        results[name] = certstore.bootstrap(here.options(tmp_path / name, kube=kubes[name]))

    threads = [threading.Thread(target=start, args=(n,)) for n in kubes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    # both decided to create; the server took one and answered 409 AlreadyExists to the other
    assert sorted(o for log in outcomes for o in log) == ["Conflict", "ok"]
    assert results["a"].tls_crt == results["b"].tls_crt
    stored = here.secret()
    assert stored is not None
    assert base64.b64decode(stored["data"]["tls.crt"]) == results["a"].tls_crt
    assert (tmp_path / "a" / "tls.crt").read_bytes() == (tmp_path / "b" / "tls.crt").read_bytes()
    assert here.ca_bundles() == [results["a"].ca_crt] * 2


@on_cluster
def test_a_serving_cert_near_expiry_is_reissued_by_the_same_ca(
    here: World, tmp_path: Path
) -> None:
    here.seed_webhook()
    opts = here.options(tmp_path / "certs")
    old = certstore.bootstrap(opts)
    hook_version = here.versions()[1]
    assert certstore.sync_once(opts, now=_future(200)).tls_crt == old.tls_crt  # 165 days left: fine
    renewed = certstore.sync_once(opts, now=_future(250))  # 115 days of 365 left: renew
    assert renewed.tls_crt != old.tls_crt and renewed.ca_crt == old.ca_crt
    assert (tmp_path / "certs" / "tls.crt").read_bytes() == renewed.tls_crt
    assert here.versions()[1] == hook_version  # same CA: the caBundle is left alone
    assert certs.days_left(renewed.tls_crt) > 364


@on_cluster
def test_two_replicas_renewing_at_once_agree_on_the_winner(here: World, tmp_path: Path) -> None:
    here.seed_webhook()
    certstore.bootstrap(here.options(tmp_path / "a"))
    both_putting = threading.Barrier(2, timeout=10)
    kubes = {n: here.kube() for n in ("a", "b")}
    outcomes = [hold(k, "replace_secret", both_putting) for k in kubes.values()]
    results: dict[str, certstore.Bundle] = {}

    def renew(name: str) -> None:
        opts = here.options(tmp_path / name, kube=kubes[name])
        results[name] = certstore.sync_once(opts, kube=kubes[name], now=_future(300))

    threads = [threading.Thread(target=renew, args=(n,)) for n in kubes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    # both PUT over the same resourceVersion: one stored, the other got 409 and adopted it
    assert sorted(o for log in outcomes for o in log) == ["Conflict", "ok"]
    assert results["a"].tls_crt == results["b"].tls_crt
    assert (tmp_path / "a" / "tls.crt").read_bytes() == (tmp_path / "b" / "tls.crt").read_bytes()


@on_cluster
def test_an_old_ca_is_replaced_and_trusted_alongside_the_new_one_meanwhile(
    here: World, tmp_path: Path
) -> None:
    here.seed_webhook()
    opts = here.options(tmp_path / "certs")
    old = certstore.bootstrap(opts)
    fresh = certstore.sync_once(opts, now=_future(2500))  # 1150 of 3650 days left
    assert fresh.ca_crt != old.ca_crt and fresh.ca_previous == old.ca_crt
    x509.load_pem_x509_certificate(fresh.tls_crt).verify_directly_issued_by(
        x509.load_pem_x509_certificate(fresh.ca_crt)
    )
    assert here.ca_bundles() == [fresh.ca_crt + old.ca_crt] * 2


@on_cluster
def test_a_new_ca_is_in_the_cabundle_before_a_certificate_it_signed_is_served(
    here: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files are what the server serves (its context reloads them): when they change to a
    certificate of a new CA, the API server must already trust that CA, or a connection it
    opens meanwhile fails its handshake and, with failurePolicy Fail, a pod is refused. The
    other replicas, following the Secret, must keep the same order."""
    here.seed_webhook()
    opts = here.options(tmp_path / "certs")
    certstore.bootstrap(opts)
    real_write = certstore.write_files
    trusted_at_write: list[bool] = []

    def write_checking_trust(cert_dir: Path, bundle: certstore.Bundle) -> bool:
        served = x509.load_pem_x509_certificate(bundle.tls_crt)
        trusted = False
        for ca in x509.load_pem_x509_certificates(here.ca_bundles()[0]):
            try:
                served.verify_directly_issued_by(ca)
                trusted = True
            except (ValueError, TypeError, InvalidSignature):
                continue
        trusted_at_write.append(trusted)
        return real_write(cert_dir, bundle)

    monkeypatch.setattr(certstore, "write_files", write_checking_trust)
    fresh = certstore.sync_once(opts, now=_future(2500))  # a new CA, written by this replica
    follower = certstore.sync_once(here.options(tmp_path / "follower"))  # and one following it
    assert follower.tls_crt == fresh.tls_crt
    assert trusted_at_write == [True, True]


@on_cluster
def test_a_secret_naming_another_service_gets_a_fresh_serving_cert(
    here: World, tmp_path: Path
) -> None:
    here.seed_webhook()
    certstore.bootstrap(here.options(tmp_path / "certs"))
    moved = certstore.sync_once(
        CertStoreOptions(
            namespace=here.namespace,
            secret_name=SECRET,
            webhook_name=here.hook,
            service_name="renamed",
            cert_dir=tmp_path / "certs",
            kubeconfig=here.cluster.kubeconfig,
        )
    )
    names = (
        x509.load_pem_x509_certificate(moved.tls_crt)
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value.get_values_for_type(x509.DNSName)
    )
    assert f"renamed.{here.namespace}.svc" in names


@on_cluster
def test_a_cabundle_patch_that_races_an_edit_is_retried(here: World, tmp_path: Path) -> None:
    here.seed_webhook()
    kube = here.kube()
    real_patch = kube.json_patch_webhook_config
    edits: list[str] = []

    def edit_first(name: str, ops: list[dict[str, object]]) -> dict[str, object]:
        if not edits:  # someone else writes between our read and our patch
            edits.append(name)
            with here.cluster.api() as api:
                api.patch(f"{HOOKS}/{name}", json={"metadata": {"labels": {"edited": "yes"}}},
                          headers={"Content-Type": "application/merge-patch+json"}
                          ).raise_for_status()
        return real_patch(name, ops)

    kube.json_patch_webhook_config = edit_first  # type: ignore[method-assign]
    patches = count(kube, "json_patch_webhook_config")
    bundle = certstore.bootstrap(here.options(tmp_path / "certs", kube=kube))
    assert patches == ["json_patch_webhook_config"] * 2  # the first got 409, the retry landed
    assert here.ca_bundles() == [bundle.ca_crt] * 2
    assert here.webhook()["metadata"]["labels"] == {"edited": "yes"}  # and the edit survived


@on_cluster
def test_keep_renewed_follows_a_secret_another_replica_renewed(
    here: World, tmp_path: Path
) -> None:
    here.seed_webhook()
    mine = here.options(tmp_path / "mine", check_seconds=0.05)
    certstore.bootstrap(mine)
    stop = threading.Event()
    thread = threading.Thread(target=certstore.keep_renewed, args=(mine, stop), daemon=True)
    thread.start()
    try:
        theirs = certstore.sync_once(here.options(tmp_path / "theirs"), now=_future(300))
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)
        while (tmp_path / "mine" / "tls.crt").read_bytes() != theirs.tls_crt:
            assert dt.datetime.now(dt.UTC) < deadline, "the renewed cert never reached mine/"
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()


@on_cluster
@pytest.mark.parametrize("kind", ["Opaque", "kubernetes.io/tls"])
def test_an_unusable_secret_is_replaced_in_place(here: World, tmp_path: Path, kind: str) -> None:
    here.seed_webhook()
    garbage = base64.b64encode(b"not a certificate").decode()
    data = {"ca.crt": garbage} | ({"tls.crt": garbage, "tls.key": garbage} if "tls" in kind else {})
    with here.cluster.api() as api:
        api.post(f"/api/v1/namespaces/{here.namespace}/secrets", json={
            "apiVersion": "v1", "kind": "Secret", "type": kind,
            "metadata": {"name": SECRET}, "data": data}).raise_for_status()
    kube = here.kube()
    puts = count(kube, "replace_secret", "create_secret")
    bundle = certstore.bootstrap(here.options(tmp_path / "certs", kube=kube))
    stored = here.secret()
    assert stored is not None and set(stored["data"]) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    assert stored["type"] == kind  # a Secret's type is immutable: it is kept
    assert puts == ["replace_secret"]
    assert here.ca_bundles() == [bundle.ca_crt] * 2


@on_cluster
def test_a_missing_webhook_configuration_does_not_stop_the_server(
    here: World, tmp_path: Path
) -> None:
    bundle = certstore.bootstrap(here.options(tmp_path / "certs"))
    assert (tmp_path / "certs" / "tls.crt").read_bytes() == bundle.tls_crt
    here.seed_webhook()  # applied later: the next pass patches it
    certstore.sync_once(here.options(tmp_path / "certs"))
    assert here.ca_bundles() == [bundle.ca_crt] * 2


def _names(pem: bytes) -> tuple[list[str], list[str]]:
    sans = (
        x509.load_pem_x509_certificate(pem)
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    return sans.get_values_for_type(x509.DNSName), [
        str(a) for a in sans.get_values_for_type(x509.IPAddress)
    ]


def _bundle(opts: CertStoreOptions) -> certstore.Bundle:
    ca = certs.generate_ca("ca")
    serving = certs.generate_serving_cert(
        ca, dns_names=certstore.dns_names(opts), ip_addresses=certstore.ip_addresses(opts)
    )
    return certstore.Bundle(ca.cert_pem, ca.key_pem, serving.cert_pem, serving.key_pem)


def test_an_extra_san_that_is_an_address_becomes_an_ip_entry_and_a_name_a_dns_one(
    tmp_path: Path,
) -> None:
    opts = CertStoreOptions(
        namespace="meshinject-system", secret_name=SECRET, webhook_name="meshinject",
        service_name=SVC, cert_dir=tmp_path, extra_sans=("127.0.0.1", "injector.local", "::1"),
    )
    assert certstore.ip_addresses(opts) == ["127.0.0.1", "::1"]
    assert certstore.dns_names(opts)[-1] == "injector.local"
    without = CertStoreOptions(
        namespace="meshinject-system", secret_name=SECRET, webhook_name="meshinject",
        service_name=SVC, cert_dir=tmp_path,
    )
    fresh = certstore.renewal(opts, _bundle(without))  # the Secret predates --extra-san
    assert fresh is not None
    dns, ips = _names(fresh.tls_crt)
    assert ips == ["127.0.0.1", "::1"] and "injector.local" in dns
    assert f"{SVC}.meshinject-system.svc" in dns
    assert certstore.renewal(opts, fresh) is None  # and then it fits: no reissue every minute
