"""The mesh's client-side TLS socket is one Envoy accepts, with and without the identities
expected behind a Service (``envoy --mode validate``: the proto's own constraints). A socket
Envoy refuses is a NACKed cluster: the proxy never gets its config.

Validate mode does not run SDS: the secrets are static ones (``tests/support/envoy.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from mesh.envoy import tls
from tests.support import envoy


def _bootstrap(socket: dict[str, Any]) -> dict[str, Any]:
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "secrets": envoy.proxy_secrets(),
            "clusters": [{"name": "mesh", "type": "STATIC",
                          "transport_socket": envoy.static_secrets(socket),
                          "load_assignment": {"cluster_name": "mesh", "endpoints": []}}],
        },
    }


@pytest.mark.parametrize("identities", [(), ("spiffe://cluster.local/ns/shop/sa/web",)],
                         ids=["no-identities", "one-identity"])
def test_envoy_accepts_the_upstream_socket(identities: tuple[str, ...]) -> None:
    socket = tls.upstream_socket(sni_name=tls.sni("web.shop.svc.cluster.local", 80),
                                 identities=identities)
    result = envoy.validate(_bootstrap(socket))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
