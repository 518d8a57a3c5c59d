"""A cert store's world of its own in the real cluster: a namespace for its Secret, and a
MutatingWebhookConfiguration of two entries for it to patch.

The installed injector keeps ``meshinject-system/meshinject-certs`` and the webhook
``meshinject``; a test of the cert store must not touch those, so each gets a fresh namespace
and a configuration named after it, whose entries no pod ever matches (an object selector on a
label nobody sets, ``failurePolicy: Ignore``): the API server stores and serves it like any
other, and it never takes part in admission.

Races are made deterministic on the client side: :func:`hold` wraps one method of a ``Kube`` so
that two threads both reach the real server's door before either goes through, and the real
server then decides who wins (201 and 409, or 200 and 409 on a stale resourceVersion).
:func:`serve_with_cert_secret` runs the real ``meshinject serve --cert-secret`` in a world.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from injector.webhook.certstore import CertStoreOptions
from mesh.kube.client import Kube
from tests.support.paths import MESHINJECT
from tests.support.realcluster import LocalCluster
from tests.support.webhook_server import assert_nothing_left, free_port, stop

SECRET, SVC = "meshinject-certs", "meshinject"
HOOKS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
Obj = dict[str, Any]


def _entry(name: str) -> Obj:
    return {
        "name": name,
        "clientConfig": {"url": "https://127.0.0.1:9/never-called"},
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Ignore",
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                   "resources": ["pods"]}],
        "objectSelector": {"matchLabels": {"certstore-test": "never-set"}},
    }


@dataclass
class World:
    cluster: LocalCluster
    namespace: str
    hook: str

    def options(self, cert_dir: Path, *, kube: Kube | None = None, **extra: Any
                ) -> CertStoreOptions:
        return CertStoreOptions(
            namespace=self.namespace, secret_name=SECRET, webhook_name=self.hook,
            service_name=SVC, cert_dir=cert_dir, kubeconfig=self.cluster.kubeconfig, kube=kube,
            **extra,
        )

    def seed_webhook(self) -> None:
        """The configuration the cert store patches, as an install would apply it."""
        body = {"apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration", "metadata": {"name": self.hook},
                "webhooks": [_entry("namespace.meshinject.io"), _entry("object.meshinject.io")]}
        with self.cluster.api() as api:
            api.post(HOOKS, json=body).raise_for_status()

    def webhook(self) -> Obj:
        with self.cluster.api() as api:
            found: Obj = api.get(f"{HOOKS}/{self.hook}").raise_for_status().json()
            return found

    def ca_bundles(self) -> list[bytes]:
        return [base64.b64decode(h["clientConfig"].get("caBundle", ""))
                for h in self.webhook()["webhooks"]]

    def secret(self) -> Obj | None:
        with self.cluster.api() as api:
            answer = api.get(f"/api/v1/namespaces/{self.namespace}/secrets/{SECRET}")
            if answer.status_code == 404:
                return None
            found: Obj = answer.raise_for_status().json()
            return found

    def versions(self) -> tuple[str, str]:
        """The resourceVersions of the Secret and the webhook configuration: unchanged means
        nothing was written to either."""
        secret = self.secret() or {"metadata": {"resourceVersion": ""}}
        return (secret["metadata"]["resourceVersion"],
                self.webhook()["metadata"]["resourceVersion"])

    def kube(self) -> Kube:
        """A client of the admin, whose calls the test may wrap (see :func:`hold`)."""
        return Kube.connect(kubeconfig=self.cluster.kubeconfig)


@contextmanager
def world(cluster: LocalCluster) -> Iterator[World]:
    with cluster.namespace("certstore") as ns:
        here = World(cluster, ns, f"certstore-{ns}")
        try:
            yield here
        finally:
            with cluster.api() as api:
                api.delete(f"{HOOKS}/{here.hook}")


@contextmanager
def serve_with_cert_secret(here: World, workdir: Path, *args: str) -> Iterator[int]:
    """A real ``meshinject serve --cert-secret`` against the real API server, as the injector's
    Deployment runs it (the admin's kubeconfig, the world's namespace and webhook), the
    certificates in ``workdir/certs``; yields its port once it listens. Stopped at the end as the
    kubelet stops it (SIGTERM): it must exit 0 and leave nothing in its temporary directory (the
    Kubernetes client writes the API server's CA there)."""
    port = free_port()
    tmp = workdir / f"tmp-{port}"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env.update(KUBECONFIG=here.cluster.kubeconfig, TMPDIR=str(tmp))
    logfile = workdir / f"serve-{port}.log"
    log = logfile.open("w")
    proc = subprocess.Popen(
        [str(MESHINJECT), "serve", "--host", "127.0.0.1", f"--port={port}",
         f"--cert-secret={here.namespace}/{SECRET}", f"--webhook-config={here.hook}",
         f"--service-name={SVC}", f"--cert-dir={workdir / 'certs'}", *args],
        env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, logfile.read_text()
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
    assert proc.returncode == 0, f"serve exited {proc.returncode} when stopped: " + (
        logfile.read_text())
    assert_nothing_left(tmp)


def hold(kube: Kube, method: str, barrier: threading.Barrier) -> list[str]:
    """Make ``kube.<method>`` wait at ``barrier`` before calling the real server; returns the
    log of outcomes ("ok" or the exception's class name), one per call."""
    real: Callable[..., Any] = getattr(kube, method)
    outcomes: list[str] = []

    def held(*args: Any, **kwargs: Any) -> Any:
        barrier.wait()
        try:
            result = real(*args, **kwargs)
        except Exception as err:
            outcomes.append(type(err).__name__)
            raise
        outcomes.append("ok")
        return result

    setattr(kube, method, held)
    return outcomes


def count(kube: Kube, *methods: str) -> list[str]:
    """Record every call of the given methods (their names, in order)."""
    calls: list[str] = []
    for method in methods:
        real: Callable[..., Any] = getattr(kube, method)

        def counted(*args: Any, _real: Callable[..., Any] = real, _name: str = method,
                    **kwargs: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kwargs)

        setattr(kube, method, counted)
    return calls
