"""The whole chain the API server relies on: ``meshinject serve --cert-secret`` (a real process,
against the real API server) creates its certificates through the API, patches the caBundle,
and answers an AdmissionReview over TLS that verifies against that caBundle under the Service's
DNS name (the name a cluster's API server dials; the local cluster's dials 127.0.0.1, which
``tests/cluster`` covers)."""

from __future__ import annotations

import base64
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.certstore import SVC, World, serve_with_cert_secret, world
from tests.support.paths import MANIFESTS
from tests.support.realcluster import LocalCluster


@pytest.fixture
def served(cluster: LocalCluster, tmp_path: Path) -> Iterator[tuple[int, World]]:
    with world(cluster) as here:
        yield from _serve(here, tmp_path)


def _serve(here: World, tmp_path: Path) -> Iterator[tuple[int, World]]:
    here.seed_webhook()
    config = tmp_path / "mesh.yaml"
    base = yaml.safe_load((MANIFESTS / "base" / "config.yaml").read_text())
    config.write_text(base["data"]["mesh.yaml"])
    with serve_with_cert_secret(here, tmp_path, f"--config={config}",
                                "--log-level=warning") as port:
        yield port, here


def _review() -> bytes:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
    }
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "e2e-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": "CREATE",
                "object": pod,
            },
        }
    ).encode()


@pytest.mark.cluster
def test_serve_bootstraps_its_certificates_and_answers_as_the_api_server_would_call_it(
    served: tuple[int, World],
) -> None:
    port, here = served
    host = f"{SVC}.{here.namespace}.svc"
    bundles = here.ca_bundles()
    assert bundles[0] and bundles[0] == bundles[1]
    trust = ssl.create_default_context(cadata=bundles[0].decode())
    body = _review()
    request = (
        f"POST /mutate HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
        f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        trust.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(request)
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    response = json.loads(payload)["response"]
    assert response["uid"] == "e2e-1" and response["allowed"] is True
    patch = json.loads(base64.b64decode(response["patch"]))
    assert "mesh-proxy" in json.dumps(patch)
