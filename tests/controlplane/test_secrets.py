"""Secrets: a certificate only for the pod a token names, renewed at half life, and a root
rotation in steps that never leave two proxies disagreeing on whom to trust."""

from __future__ import annotations

import asyncio
import datetime as dt

from controlplane.identity.ca import MeshCA
from controlplane.model.state import Change
from controlplane.model.values import Workload
from controlplane.runtime import Runtime, Subscriber
from controlplane.secrets import SecretIssuer, union
from controlplane.translate.proxy import SECRET
from mesh.contract import SVID_SECRET, TRUST_BUNDLE_SECRET
from mesh.pki import certs

WEB = Workload("shop", "web-1", uid="u1", ip="198.18.0.9", service_account="web")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def world(*workloads: Workload) -> tuple[Runtime, SecretIssuer, Clock]:
    rt = Runtime()
    rt.submit_all([Change("workload", w.key, w) for w in workloads])
    rt.flush()
    clock = Clock()
    issuer = SecretIssuer(MeshCA.create(trust_domain="cluster.local"), rt,
                          lifetime=dt.timedelta(hours=24), settle=0, step_timeout=1,
                          clock=clock)
    return rt, issuer, clock


def connect(rt: Runtime, *, pod: str = "web-1", account: str = "web", uid: str = "u1"
            ) -> Subscriber:
    sub = Subscriber(workload=("shop", pod), wake=lambda: None, service_account=account,
                     pod_uid=uid)
    rt.attach(sub)
    return sub


def svid(sub: Subscriber) -> bytes:
    chain = sub.secrets.items[SVID_SECRET].body["tls_certificate"]["certificate_chain"]
    return str(chain["inline_string"]).encode()


def test_the_pod_its_token_names_gets_a_certificate_for_its_service_account() -> None:
    rt, _, _ = world(WEB)
    sub = connect(rt)
    assert certs.uri_sans(svid(sub)) == ["spiffe://cluster.local/ns/shop/sa/web"]
    assert set(sub.secrets.items) == {SVID_SECRET, TRUST_BUNDLE_SECRET}
    assert sub.identity_problem == ""


def test_no_certificate_for_another_accounts_token_a_replaced_pod_or_an_unknown_one() -> None:
    rt, _, _ = world(WEB)
    cases = {"runs as web, its token is for admin": dict(account="admin"),
             "is not the pod its token was made for": dict(uid="u-old"),
             "is not known": dict(pod="web-2")}
    for why, claims in cases.items():
        sub = connect(rt, **claims)  # type: ignore[arg-type]
        assert set(sub.secrets.items) == {TRUST_BUNDLE_SECRET}, why  # the roots alone
        assert why in sub.identity_problem


def test_a_pod_the_registry_learns_of_later_gets_its_certificate_then() -> None:
    rt, _, _ = world()
    sub = connect(rt)
    assert SVID_SECRET not in sub.secrets.items
    rt.submit(Change("workload", WEB.key, WEB))
    rt.flush()
    assert SVID_SECRET in sub.secrets.items


def test_a_certificate_is_renewed_at_half_life_and_not_for_a_deleted_pod() -> None:
    rt, issuer, clock = world(WEB)
    sub = connect(rt)
    first = svid(sub)
    assert sub.renew_at - clock.now == 12 * 3600
    clock.now += 12 * 3600 - 1

    async def one_round() -> None:
        task = asyncio.create_task(issuer.keep_fresh(interval=0.01))
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(one_round())
    assert svid(sub) == first  # not yet
    clock.now += 2
    asyncio.run(one_round())
    assert svid(sub) != first
    renewed = svid(sub)
    rt.submit(Change("workload", WEB.key, None))
    rt.flush()
    clock.now += 12 * 3600 + 1
    asyncio.run(one_round())
    assert svid(sub) == renewed and "not known" in sub.identity_problem


def test_a_rotation_trusts_both_roots_before_any_new_certificate_then_only_the_new() -> None:
    rt, issuer, _ = world(WEB)
    sub = connect(rt)
    old = issuer.ca
    new = MeshCA.create(trust_domain="cluster.local")
    seen: list[tuple[bytes, bytes]] = []  # (bundle, certificate) each time the proxy is woken

    def wake() -> None:
        bundle = sub.secrets.items[TRUST_BUNDLE_SECRET].body["validation_context"][
            "trusted_ca"]["inline_string"].encode()
        seen.append((bundle, svid(sub)))
        sub.acked[SECRET] = sub.secrets.version  # the proxy accepts at once

    sub.wake = wake
    sub.acked[SECRET] = sub.secrets.version
    asyncio.run(issuer.rotate(new))
    both = union(old.bundle(), new.bundle())
    issuers = [certs.issuer_of(cert) for _, cert in seen]
    assert [bundle for bundle, _ in seen] == [both, both, new.bundle()]
    assert issuers == [certs.subject_of(old.signer.cert_pem)] + [
        certs.subject_of(new.signer.cert_pem)] * 2
