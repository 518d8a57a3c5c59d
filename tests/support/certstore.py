"""The cert store's world in the fake API server: its names, a webhook to patch, options."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from injector.webhook.certstore import CertStoreOptions
from tests.support.fakeserver import Running

NS, SECRET, HOOK, SVC = "meshinject-system", "meshinject-certs", "meshinject", "meshinject"


def seed_webhook(fake: Running) -> None:
    """The MutatingWebhookConfiguration the cert store patches, as manifests/ installs it."""

    def entry(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "clientConfig": {"service": {"namespace": NS, "name": SVC, "path": "/mutate"}},
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
        }

    fake.api.put(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": HOOK},
            "webhooks": [entry("namespace.meshinject.io"), entry("object.meshinject.io")],
        }
    )


def store_options(fake: Running, cert_dir: Path, **extra: Any) -> CertStoreOptions:
    return CertStoreOptions(
        namespace=NS,
        secret_name=SECRET,
        webhook_name=HOOK,
        service_name=SVC,
        cert_dir=cert_dir,
        kubeconfig=fake.kubeconfig,
        **extra,
    )


def ca_bundles(fake: Running) -> list[bytes]:
    config = fake.api.get("mutatingwebhookconfigurations", "", HOOK)
    assert config is not None
    return [base64.b64decode(h["clientConfig"].get("caBundle", "")) for h in config["webhooks"]]
