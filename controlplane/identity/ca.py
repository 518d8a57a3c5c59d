"""The mesh's root of trust, and the certificates it signs: pure, bytes in and out.

The root signs the control plane's serving certificate (proxies verify the xDS server against
it, from the ``meshinject-ca-root`` ConfigMap every meshed namespace gets). Where the root lives
is the store's business (a Secret in a cluster, a directory in the sandbox); this module only
issues.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.contract import CONTROLPLANE_SERVICE
from mesh.pki import certs


@dataclass(frozen=True)
class MeshCA:
    root: certs.CertPair

    @classmethod
    def create(cls, *, trust_domain: str, days: int = 3650) -> MeshCA:
        return cls(certs.generate_ca(f"meshinject mesh root ({trust_domain})", days=days))

    def bundle(self) -> bytes:
        """What every proxy trusts."""
        return self.root.cert_pem

    def serving(self, *, namespace: str, extra_names: tuple[str, ...] = (),
                ips: tuple[str, ...] = (), days: int = 30) -> certs.CertPair:
        """The control plane's certificate: every name its Service is reached by."""
        service = CONTROLPLANE_SERVICE
        names = [f"{service}.{namespace}.svc", service, f"{service}.{namespace}",
                 f"{service}.{namespace}.svc.cluster.local", *extra_names]
        return certs.generate_serving_cert(self.root, dns_names=names, ip_addresses=ips,
                                           days=days)
