"""The cert store's world in the fake API server: its names, a webhook to patch, options, and
``meshinject serve --cert-secret`` running against it."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from injector.webhook.certstore import CertStoreOptions
from tests.support.fakeserver import Running
from tests.support.paths import MESHINJECT
from tests.support.webhook_server import assert_nothing_left, free_port, stop

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


@contextlib.contextmanager
def serve_with_cert_secret(fake: Running, workdir: Path, *args: str) -> Iterator[int]:
    """A real ``meshinject serve --cert-secret`` against the fake API server, as the injector's
    Deployment runs it: the certificates in ``workdir/certs``; yields its port once it listens.
    Stopped at the end like the kubelet stops it (SIGTERM), and checked to leave nothing in its
    temporary directory (the Kubernetes client writes the API server's CA there)."""
    port = free_port()
    tmp = workdir / f"tmp-{port}"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env.update(KUBECONFIG=fake.kubeconfig, TMPDIR=str(tmp))
    log = (workdir / f"serve-{port}.log").open("w")
    proc = subprocess.Popen(
        [str(MESHINJECT), "serve", "--host", "127.0.0.1", f"--port={port}",
         f"--cert-secret={NS}/{SECRET}", f"--webhook-config={HOOK}", f"--service-name={SVC}",
         f"--cert-dir={workdir / 'certs'}", *args],
        env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (workdir / f"serve-{port}.log").read_text()
            assert time.monotonic() < deadline, "meshinject serve not listening in 30 s"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield port
    finally:
        stop(proc)
        log.close()
    log_text = (workdir / f"serve-{port}.log").read_text()
    assert proc.returncode == 0, f"serve exited {proc.returncode} when stopped: {log_text}"
    assert_nothing_left(tmp)
