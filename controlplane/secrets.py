"""Each proxy's certificate and the mesh's trust bundle, over SDS on its ADS stream.

A proxy proves who it is with its pod's token when its stream opens (``identity/``); only then
does it get a certificate, an X.509 SVID for its service account
(``spiffe://<domain>/ns/<ns>/sa/<sa>``), 24 hours by default, renewed at half its life. Envoy
applies a new secret to new handshakes only, so a renewal drops no connection.

The key is made here, in memory, for that one stream: a sidecar of Envoy alone has no agent to
make a key and a signing request. It travels only on the stream's TLS, to the proxy whose token
was verified, and is never stored; a control plane that could be made to hand out keys could
as well sign certificates, so this puts nothing at risk the CA does not already hold.

A root rotation goes in three steps, each waiting until every connected proxy has accepted the
last (or ``step_timeout`` passed, and at least ``settle``, for the other replicas' proxies), so
no two proxies ever disagree on whom to trust:

1. trust old and new roots together;
2. re-issue every certificate from the new signer;
3. trust what the new CA says (the new root, or both for as long as its roots say so).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from controlplane.cache.snapshot import EMPTY, Resource, ResourceSet
from controlplane.identity.ca import SVID_LIFETIME, MeshCA
from controlplane.runtime import Runtime, Subscriber
from controlplane.translate.proxy import SECRET
from mesh.envoy import tls
from mesh.pki import spiffe

log = logging.getLogger("meshinject.secrets")


def union(*bundles: bytes) -> bytes:
    """The roots of several bundles, each once, in order."""
    seen: dict[bytes, None] = {}
    for bundle in bundles:
        for cert in x509.load_pem_x509_certificates(bundle) if bundle else []:
            seen.setdefault(cert.public_bytes(serialization.Encoding.PEM))
    return b"".join(seen)


class SecretIssuer:
    def __init__(self, ca: MeshCA, runtime: Runtime, *,
                 lifetime: dt.timedelta = SVID_LIFETIME, step_timeout: float = 10.0,
                 settle: float = 2.0, clock: Callable[[], float] = time.time) -> None:
        self.ca = ca
        self.runtime = runtime
        self.lifetime = lifetime
        self.step_timeout = step_timeout
        self.settle = settle
        self.clock = clock
        self.bundle = ca.bundle()
        self.issued = 0
        self.rotations = 0
        runtime.on_assign = self.first_issue

    def spiffe_id(self, subscriber: Subscriber) -> str:
        return spiffe.spiffe_id(self.runtime.trust_domain, subscriber.workload[0],
                                subscriber.service_account)

    def refusal(self, subscriber: Subscriber) -> str:
        """Why this proxy may not have a certificate now ("" when it may): the registry must
        show the pod its token names, that very pod (uid), running as that service account."""
        workload = self.runtime.state.workloads.get(subscriber.workload)
        namespace, pod = subscriber.workload
        if workload is None:
            return f"pod {namespace}/{pod} is not known (yet)"
        if subscriber.pod_uid and workload.uid and workload.uid != subscriber.pod_uid:
            return f"pod {namespace}/{pod} is not the pod its token was made for"
        if workload.service_account != subscriber.service_account:
            return (f"pod {namespace}/{pod} runs as {workload.service_account}, its token is "
                    f"for {subscriber.service_account}")
        return ""

    def first_issue(self, subscriber: Subscriber) -> None:
        """A proxy's first certificate, as soon as it may have one; the bundle alone until."""
        if subscriber.expires_at:
            return
        subscriber.identity_problem = self.refusal(subscriber)
        if not subscriber.identity_problem:
            self.issue(subscriber)
        elif subscriber.secrets is EMPTY:
            self._publish(subscriber)

    def issue(self, subscriber: Subscriber) -> None:
        """A new certificate (and the current bundle) for one proxy."""
        now = self.clock()
        pair = self.ca.issue(self.spiffe_id(subscriber), lifetime=self.lifetime,
                             now=dt.datetime.fromtimestamp(now, dt.UTC))
        svid = tls.svid_secret(cert_chain=pair.cert_pem, private_key=pair.key_pem)
        self._publish(subscriber, Resource.of(svid["name"], svid))
        seconds = self.lifetime.total_seconds()
        subscriber.expires_at = now + seconds
        subscriber.renew_at = now + seconds / 2
        self.issued += 1

    def _publish(self, subscriber: Subscriber, svid: Resource | None = None) -> None:
        own = svid or next((r for r in subscriber.secrets.items.values()
                            if "tls_certificate" in r.body), None)
        bundle = tls.bundle_secret(self.bundle)
        resources = [Resource.of(bundle["name"], bundle), *([own] if own else [])]
        previous = None if subscriber.secrets is EMPTY else subscriber.secrets
        subscriber.secrets = ResourceSet.build(resources, previous=previous)

    async def keep_fresh(self, *, interval: float = 1.0) -> None:
        """Renew every certificate at half its life (forever; a task of the program)."""
        while True:
            now = self.clock()
            for subscriber in list(self.runtime.subscribers):
                if subscriber.renew_at and subscriber.renew_at <= now:
                    subscriber.identity_problem = self.refusal(subscriber)
                    if subscriber.identity_problem:  # its pod is gone: let the old one expire
                        subscriber.renew_at = 0.0
                        continue
                    self.issue(subscriber)
                    subscriber.wake()
            await asyncio.sleep(interval)

    # -- root rotation --------------------------------------------------------------------
    async def rotate(self, new: MeshCA) -> None:
        """Move every proxy to ``new`` without a moment in which two disagree."""
        self.rotations += 1
        log.info("rotating the mesh CA: step 1, trusting old and new roots")
        await self._set_bundle(union(self.bundle, new.bundle()))
        log.info("step 2: re-issuing %d certificates from the new signer",
                 len(self.runtime.subscribers))
        self.ca = new
        for subscriber in list(self.runtime.subscribers):
            if subscriber.expires_at and not self.refusal(subscriber):
                self.issue(subscriber)
                subscriber.wake()
        await self._all_accepted()
        log.info("step 3: trusting the new CA's roots")
        await self._set_bundle(new.bundle())

    async def _set_bundle(self, bundle: bytes) -> None:
        if bundle == self.bundle:
            return
        self.bundle = bundle
        for subscriber in list(self.runtime.subscribers):
            self._publish(subscriber)
            subscriber.wake()
        await self._all_accepted()

    async def _all_accepted(self) -> None:
        """Until every connected proxy ACKed its current secrets (or the step's timeout), and
        at least ``settle``: another replica's proxies, which this one cannot see, move on the
        same change at about the same time."""
        await asyncio.sleep(self.settle)
        deadline = time.monotonic() + self.step_timeout
        while time.monotonic() < deadline:
            # a proxy that gets config and asked for secrets: the rest have nothing to accept
            behind = [s for s in self.runtime.subscribers if s.view is not None
                      and SECRET in s.acked and s.acked[SECRET] != s.secrets.version]
            if not behind:
                return
            await asyncio.sleep(0.05)
        log.warning("%d proxies did not accept their new secrets within %.0f s; going on",
                    len(behind), self.step_timeout)
