"""The injector's RBAC from ``manifests/``, enforced by the real authorizer on its own token.

The injector runs with nothing but a token the API server issued for its ServiceAccount; with it,
it created its certificate Secret and patched its webhook's caBundle (the cluster would not be
up otherwise). Here the same token is refused everything else: other namespaces' Secrets, other
Secrets of its own namespace, other webhook configurations, pods, ConfigMaps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.realcluster import ACCOUNT, HOOK, NS, SECRET, LocalCluster

pytestmark = pytest.mark.cluster
HOOKS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
LABEL_PATCH = {"metadata": {"labels": {"rbac-test": "touched"}}}
MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture(scope="module")
def injector(cluster: LocalCluster) -> Iterator[httpx.Client]:
    with cluster.as_injector() as client:
        yield client


@pytest.fixture(scope="module")
def other_webhook(cluster: LocalCluster) -> Iterator[str]:
    body = {"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration", "metadata": {"name": "someone-elses"},
            "webhooks": []}
    with cluster.api() as api:
        api.post(HOOKS, json=body).raise_for_status()
        try:
            yield "someone-elses"
        finally:
            api.delete(f"{HOOKS}/someone-elses")


def test_the_injector_runs_with_its_service_account_token_and_nothing_else(
    cluster: LocalCluster,
) -> None:
    config = yaml.safe_load(Path(cluster.state["injector_kubeconfig"]).read_text())
    assert list(config["users"][0]["user"]) == ["token"]
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
              "spec": {"token": cluster.injector_token()}}
    with cluster.api() as api:
        status = api.post("/apis/authentication.k8s.io/v1/tokenreviews",
                          json=review).raise_for_status().json()["status"]
    assert status["authenticated"] is True
    assert status["user"]["username"] == f"system:serviceaccount:{NS}:{ACCOUNT}"


def test_every_call_the_cert_store_makes_is_allowed(injector: httpx.Client) -> None:
    """get, create and update of its Secret, get and patch of its webhook: dry runs, which the
    authorizer judges like the real thing (the injector made these calls for real when it
    started, and when the rotation tests made it renew)."""
    secret_path = f"/api/v1/namespaces/{NS}/secrets/{SECRET}"
    secret = injector.get(secret_path)
    assert secret.status_code == 200, secret.text
    updated = injector.put(f"{secret_path}?dryRun=All", json=secret.json())
    assert updated.status_code == 200, updated.text
    fresh = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "fresh"}}
    created = injector.post(f"/api/v1/namespaces/{NS}/secrets?dryRun=All", json=fresh)
    assert created.status_code == 201, created.text  # create cannot be limited by name
    assert injector.get(f"{HOOKS}/{HOOK}").status_code == 200
    touched = injector.patch(f"{HOOKS}/{HOOK}?dryRun=All", json=LABEL_PATCH, headers=MERGE)
    assert touched.status_code == 200, touched.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/namespaces/kube-system/secrets"),
        ("GET", "/api/v1/namespaces/default/secrets/anything"),
        ("GET", f"/api/v1/namespaces/{NS}/secrets"),  # list: not even its own namespace's
        ("GET", f"/api/v1/namespaces/{NS}/secrets/someone-elses"),
        ("POST", "/api/v1/namespaces/default/secrets"),
        ("GET", f"/api/v1/namespaces/{NS}/configmaps/meshinject-config"),
        ("GET", "/api/v1/pods"),
        ("GET", HOOKS),
        ("DELETE", f"{HOOKS}/{HOOK}"),
    ],
)
def test_anything_else_is_refused(injector: httpx.Client, method: str, path: str) -> None:
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}
    answer = injector.request(method, path + "?dryRun=All" * (method != "GET"),
                              json=body if method == "POST" else None)
    assert answer.status_code == 403, (method, path, answer.text)
    assert f"system:serviceaccount:{NS}:{ACCOUNT}" in answer.json()["message"]


def test_another_webhook_configuration_can_be_neither_read_nor_patched(
    injector: httpx.Client, other_webhook: str
) -> None:
    assert injector.get(f"{HOOKS}/{other_webhook}").status_code == 403
    patched = injector.patch(f"{HOOKS}/{other_webhook}", json=LABEL_PATCH, headers=MERGE)
    assert patched.status_code == 403, patched.text
    assert "cannot patch resource" in patched.json()["message"]
