"""Certificates with no manual step, against the fake API server through the real client."""

from __future__ import annotations

import base64
import datetime as dt
import threading
from pathlib import Path

from cryptography import x509

from injector.webhook import certstore
from injector.webhook.certstore import CertStoreOptions
from mesh.pki import certs
from tests.support.certstore import HOOK, NS, SECRET, SVC, ca_bundles, seed_webhook, store_options
from tests.support.fakeserver import Running


def _future(days: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(days=days)


def test_the_first_start_creates_the_secret_writes_files_and_patches_every_webhook(
    fake: Running, tmp_path: Path
) -> None:
    seed_webhook(fake)
    bundle = certstore.bootstrap(store_options(fake, tmp_path / "certs"))
    secret = fake.api.get("secrets", NS, SECRET)
    assert secret is not None and secret["type"] == "kubernetes.io/tls"
    assert set(secret["data"]) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    assert (tmp_path / "certs" / "tls.crt").read_bytes() == bundle.tls_crt
    assert (tmp_path / "certs" / "tls.key").stat().st_mode & 0o777 == 0o600
    assert ca_bundles(fake) == [bundle.ca_crt, bundle.ca_crt]
    served = x509.load_pem_x509_certificate(bundle.tls_crt)
    served.verify_directly_issued_by(x509.load_pem_x509_certificate(bundle.ca_crt))
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{SVC}.{NS}.svc" in names.get_values_for_type(x509.DNSName)


def test_a_second_replica_reuses_the_secret_and_writes_nothing(
    fake: Running, tmp_path: Path
) -> None:
    seed_webhook(fake)
    first = certstore.bootstrap(store_options(fake, tmp_path / "a"))
    writes = fake.api.count("PATCH", "") + fake.api.count("POST", "") + fake.api.count("PUT", "")
    second = certstore.bootstrap(store_options(fake, tmp_path / "b"))
    assert second.tls_crt == first.tls_crt and second.ca_crt == first.ca_crt
    after = fake.api.count("PATCH", "") + fake.api.count("POST", "") + fake.api.count("PUT", "")
    assert after == writes
    assert (tmp_path / "b" / "tls.key").read_bytes() == first.tls_key


def test_two_replicas_starting_at_once_end_with_one_secret(fake: Running, tmp_path: Path) -> None:
    seed_webhook(fake)
    both_posting = threading.Barrier(2, timeout=10)

    def hold_creates(method: str, path: str) -> None:
        if method == "POST" and path.endswith("/secrets"):
            both_posting.wait()  # neither create lands before both replicas decided to create

    fake.api.hooks.append(hold_creates)
    results: dict[str, certstore.Bundle] = {}

    def start(name: str) -> None:
        results[name] = certstore.bootstrap(store_options(fake, tmp_path / name))

    threads = [threading.Thread(target=start, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert fake.api.count("POST", "/secrets") == 2
    assert results["a"].tls_crt == results["b"].tls_crt
    stored = fake.api.get("secrets", NS, SECRET)
    assert stored is not None
    assert base64.b64decode(stored["data"]["tls.crt"]) == results["a"].tls_crt
    assert (tmp_path / "a" / "tls.crt").read_bytes() == (tmp_path / "b" / "tls.crt").read_bytes()
    assert ca_bundles(fake) == [results["a"].ca_crt] * 2


def test_a_serving_cert_near_expiry_is_reissued_by_the_same_ca(
    fake: Running, tmp_path: Path
) -> None:
    seed_webhook(fake)
    opts = store_options(fake, tmp_path / "certs")
    old = certstore.bootstrap(opts)
    patches = fake.api.count("PATCH", "")
    assert certstore.sync_once(opts, now=_future(200)).tls_crt == old.tls_crt  # 165 days left: fine
    renewed = certstore.sync_once(opts, now=_future(250))  # 115 days of 365 left: renew
    assert renewed.tls_crt != old.tls_crt and renewed.ca_crt == old.ca_crt
    assert (tmp_path / "certs" / "tls.crt").read_bytes() == renewed.tls_crt
    assert fake.api.count("PATCH", "") == patches  # same CA: the caBundle is left alone
    assert certs.days_left(renewed.tls_crt) > 364


def test_two_replicas_renewing_at_once_agree_on_the_winner(fake: Running, tmp_path: Path) -> None:
    seed_webhook(fake)
    certstore.bootstrap(store_options(fake, tmp_path / "a"))
    both_putting = threading.Barrier(2, timeout=10)

    def hold_puts(method: str, path: str) -> None:
        if method == "PUT":
            both_putting.wait()

    fake.api.hooks.append(hold_puts)
    results: dict[str, certstore.Bundle] = {}

    def renew(name: str) -> None:
        results[name] = certstore.sync_once(store_options(fake, tmp_path / name), now=_future(300))

    threads = [threading.Thread(target=renew, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert fake.api.count("PUT", "/secrets/") == 2  # both tried; one got 409 and adopted
    assert results["a"].tls_crt == results["b"].tls_crt
    assert (tmp_path / "a" / "tls.crt").read_bytes() == (tmp_path / "b" / "tls.crt").read_bytes()


def test_an_old_ca_is_replaced_and_trusted_alongside_the_new_one_meanwhile(
    fake: Running, tmp_path: Path
) -> None:
    seed_webhook(fake)
    opts = store_options(fake, tmp_path / "certs")
    old = certstore.bootstrap(opts)
    fresh = certstore.sync_once(opts, now=_future(2500))  # 1150 of 3650 days left
    assert fresh.ca_crt != old.ca_crt and fresh.ca_previous == old.ca_crt
    x509.load_pem_x509_certificate(fresh.tls_crt).verify_directly_issued_by(
        x509.load_pem_x509_certificate(fresh.ca_crt)
    )
    assert ca_bundles(fake) == [fresh.ca_crt + old.ca_crt] * 2


def test_a_secret_naming_another_service_gets_a_fresh_serving_cert(
    fake: Running, tmp_path: Path
) -> None:
    seed_webhook(fake)
    certstore.bootstrap(store_options(fake, tmp_path / "certs"))
    moved = certstore.sync_once(
        CertStoreOptions(
            namespace=NS,
            secret_name=SECRET,
            webhook_name=HOOK,
            service_name="renamed",
            cert_dir=tmp_path / "certs",
            kubeconfig=fake.kubeconfig,
        )
    )
    names = (
        x509.load_pem_x509_certificate(moved.tls_crt)
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value.get_values_for_type(x509.DNSName)
    )
    assert f"renamed.{NS}.svc" in names


def test_a_cabundle_patch_that_races_an_edit_is_retried(fake: Running, tmp_path: Path) -> None:
    seed_webhook(fake)
    edits = []

    def edit_once(method: str, path: str) -> None:
        if method == "PATCH" and not edits:
            edits.append(path)
            config = fake.api.get("mutatingwebhookconfigurations", "", HOOK)
            assert config is not None
            fake.api.put(config)  # someone else wrote: our pinned resourceVersion is now stale

    fake.api.hooks.append(edit_once)
    bundle = certstore.bootstrap(store_options(fake, tmp_path / "certs"))
    assert fake.api.count("PATCH", "mutatingwebhookconfigurations") == 2
    assert ca_bundles(fake) == [bundle.ca_crt] * 2


def test_keep_renewed_follows_a_secret_another_replica_renewed(
    fake: Running, tmp_path: Path
) -> None:
    seed_webhook(fake)
    mine = store_options(fake, tmp_path / "mine", check_seconds=0.05)
    certstore.bootstrap(mine)
    stop = threading.Event()
    thread = threading.Thread(target=certstore.keep_renewed, args=(mine, stop), daemon=True)
    thread.start()
    try:
        theirs = certstore.sync_once(store_options(fake, tmp_path / "theirs"), now=_future(300))
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)
        while (tmp_path / "mine" / "tls.crt").read_bytes() != theirs.tls_crt:
            assert dt.datetime.now(dt.UTC) < deadline, "the renewed cert never reached mine/"
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()


def test_an_unusable_secret_is_replaced_in_place(fake: Running, tmp_path: Path) -> None:
    seed_webhook(fake)
    fake.api.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": NS},
            "data": {"ca.crt": base64.b64encode(b"not a certificate").decode()},
        }
    )
    bundle = certstore.bootstrap(store_options(fake, tmp_path / "certs"))
    stored = fake.api.get("secrets", NS, SECRET)
    assert stored is not None and set(stored["data"]) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    assert fake.api.count("PUT", f"/secrets/{SECRET}") == 1
    assert ca_bundles(fake) == [bundle.ca_crt] * 2


def test_a_missing_webhook_configuration_does_not_stop_the_server(
    fake: Running, tmp_path: Path
) -> None:
    bundle = certstore.bootstrap(store_options(fake, tmp_path / "certs"))
    assert (tmp_path / "certs" / "tls.crt").read_bytes() == bundle.tls_crt
    seed_webhook(fake)  # applied later: the next pass patches it
    certstore.sync_once(store_options(fake, tmp_path / "certs"))
    assert ca_bundles(fake) == [bundle.ca_crt] * 2


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
        namespace=NS, secret_name=SECRET, webhook_name=HOOK, service_name=SVC,
        cert_dir=tmp_path, extra_sans=("127.0.0.1", "injector.local", "::1"),
    )
    assert certstore.ip_addresses(opts) == ["127.0.0.1", "::1"]
    assert certstore.dns_names(opts)[-1] == "injector.local"
    without = CertStoreOptions(
        namespace=NS, secret_name=SECRET, webhook_name=HOOK, service_name=SVC, cert_dir=tmp_path
    )
    fresh = certstore.renewal(opts, _bundle(without))  # the Secret predates --extra-san
    assert fresh is not None
    dns, ips = _names(fresh.tls_crt)
    assert ips == ["127.0.0.1", "::1"] and "injector.local" in dns
    assert f"{SVC}.{NS}.svc" in dns
    assert certstore.renewal(opts, fresh) is None  # and then it fits: no reissue every minute
