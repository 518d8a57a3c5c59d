"""The real local cluster for the ``cluster`` tests: brought up once per run, down at the end.

``scripts/cluster/cluster.py`` (what ``make cluster-up`` runs) starts it in ``.cluster-test/`` on
ports 26501-26505 and 26543, with the sandbox node (``--node sandbox``), apart from a cluster
the user keeps in ``.cluster/``; the tests get a :class:`LocalCluster` to drive it: the admin's
API client and kubectl, the injector's own credentials, its /metrics, and stopping and starting
it. Each test works in namespaces of its
own (:meth:`LocalCluster.namespace`), so the tests share one cluster without seeing each other.

The binaries come from ``build.sh``'s cache. ``make test`` starts their build in the background
before lint; the tests run last (``tests/conftest.py`` moves them), and the first one waits for
the build, so a cold build overlaps the rest of the suite. Without Go they skip, saying why.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.paths import REPO

CLUSTER_PY = REPO / "scripts" / "cluster" / "cluster.py"
BUILD_SH = REPO / "scripts" / "cluster" / "build.sh"
STATE_DIR = REPO / ".cluster-test"
PORT_BASE = 26500
BUILD_BOUND = 3000  # build.sh's own bound (MESHINJECT_BUILD_TIMEOUT)
CERT_CHECK_SECONDS = 1.0  # the rotation test waits for the injector's cert store to notice
TOKEN_REFRESH_SECONDS = 15.0  # the sandbox node renews projected tokens this soon (a test sees it)
UNSCHEDULED = "meshinject-tests-no-scheduler"  # a scheduler nobody runs: the pod stays Pending
NS, SECRET, HOOK, ACCOUNT = "meshinject-system", "meshinject-certs", "meshinject", "meshinject"

Obj = dict[str, Any]


@dataclass
class Timings:
    """What the run spent on the cluster, for the summary line ``conftest`` prints."""

    build_waited: float | None = None
    build_note: str = ""
    up: float | None = None
    down: float | None = None
    lines: list[str] = field(default_factory=list)


TIMINGS = Timings()


def why_not_buildable() -> str | None:
    """None when the binaries are cached or Go (1.24 or newer) can build them."""
    if _cached_bin() is not None:
        return None
    go = shutil.which("go")
    if go is None:
        return "Go is not on PATH: the cluster binaries cannot be built (scripts/cluster/build.sh)"
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False)
    version = out.stdout.strip().removeprefix("go").split(".")
    try:
        too_old = (int(version[0]), int(version[1])) < (1, 24)
    except (ValueError, IndexError):
        return f"cannot tell Go's version ({out.stdout.strip()!r})"
    return f"Go {out.stdout.strip()} is older than 1.24" if too_old else None


def _cached_bin() -> Path | None:
    found = subprocess.run([str(BUILD_SH), "--print-bin"], capture_output=True, text=True,
                           check=False)
    return Path(found.stdout.strip()) if found.returncode == 0 else None


def wait_for_binaries(say: Any) -> Path:
    """The bin dir, waiting for (or starting) the build; says how long it waited."""
    start = time.monotonic()
    found = _cached_bin()
    if found is None:
        say("cluster binaries: waiting for scripts/cluster/build.sh (progress every 20 s)")
        subprocess.run([str(BUILD_SH), "--background"], check=True, capture_output=True)
        # closed on leaving (its pipe left open was a ResourceWarning, an error in the suite)
        with subprocess.Popen([str(BUILD_SH), "--wait", str(BUILD_BOUND)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                say("  " + line.rstrip())
        if proc.returncode != 0:
            raise RuntimeError("the cluster binaries' build failed (log above)")
        found = _cached_bin()
        assert found is not None
    TIMINGS.build_waited = time.monotonic() - start
    stamp = (found.parent / "stamp").read_text().split()
    TIMINGS.build_note = " ".join(s for s in stamp if s.startswith(("total=", "built=")))
    return found


def _cluster_py(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, str(CLUSTER_PY), "--state-dir", str(STATE_DIR), *args],
                          capture_output=True, text=True, timeout=600, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"cluster.py {' '.join(args)} exited {proc.returncode}:\n"
                           f"{proc.stdout}{proc.stderr}")
    return proc


def session(say: Any) -> Iterator[LocalCluster]:
    """The fixture's body: up (after the build), yield, and down whatever happened."""
    wait_for_binaries(say)
    t0 = time.monotonic()
    # whatever a killed earlier run left in .cluster-test/ (processes, namespaces) goes first
    _cluster_py("down", check=False)
    try:
        out = _cluster_py("up", "--port-base", str(PORT_BASE), "--node", "sandbox",
                          "--cert-check-seconds", str(CERT_CHECK_SECONDS),
                          "--token-refresh-seconds", str(TOKEN_REFRESH_SECONDS))
        TIMINGS.up = time.monotonic() - t0
        TIMINGS.lines = [line for line in out.stdout.splitlines() if line.startswith("[")]
        yield LocalCluster.load(STATE_DIR)
    finally:
        t1 = time.monotonic()
        _cluster_py("down", check=False)
        TIMINGS.down = time.monotonic() - t1


# -- the cluster as the tests drive it -----------------------------------------------------
@dataclass
class LocalCluster:
    state: Obj
    state_dir: Path

    @classmethod
    def load(cls, state_dir: Path) -> LocalCluster:
        return cls(json.loads((state_dir / "state.json").read_text()), state_dir)

    @property
    def kubeconfig(self) -> str:
        return str(self.state["kubeconfig"])

    @property
    def injector_port(self) -> int:
        return int(self.state["ports"]["injector"])

    @property
    def injector_url(self) -> str:
        return f"https://127.0.0.1:{self.injector_port}/mutate"

    def binary(self, name: str) -> str:
        return str(Path(self.state["bin_dir"]) / name)

    # -- clients ---------------------------------------------------------------------------
    def api(self, *, timeout: float = 15) -> httpx.Client:
        """The admin (system:masters) over the API server's verified TLS."""
        pki = self.state_dir / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return httpx.Client(base_url=self.state["api_url"], verify=ctx, timeout=timeout)

    def injector_token(self) -> str:
        """The token the injector runs with (issued by TokenRequest at its start)."""
        config = yaml.safe_load(Path(self.state["injector_kubeconfig"]).read_text())
        return str(config["users"][0]["user"]["token"])

    def as_injector(self) -> httpx.Client:
        """A client holding the injector's own credentials, nothing else."""
        ctx = ssl.create_default_context(cafile=str(self.state["ca_file"]))
        headers = {"Authorization": f"Bearer {self.injector_token()}"}
        return httpx.Client(base_url=self.state["api_url"], verify=ctx, headers=headers,
                            timeout=15)

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        proc = subprocess.run([self.binary("kubectl"), *args], input=stdin, capture_output=True,
                              text=True, env=env, timeout=timeout, check=False)
        if check:
            assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}{proc.stdout}"
        return proc

    def cluster_py(self, *args: str) -> str:
        return _cluster_py(*args).stdout

    # -- the injector ----------------------------------------------------------------------
    def ca_bundle(self) -> bytes:
        with self.api() as api:
            hook = api.get("/apis/admissionregistration.k8s.io/v1/"
                           f"mutatingwebhookconfigurations/{HOOK}").raise_for_status().json()
        bundles = {h["clientConfig"].get("caBundle", "") for h in hook["webhooks"]}
        assert len(bundles) == 1, "the webhook's entries carry different caBundles"
        return base64.b64decode(bundles.pop())

    def injector_client(self) -> httpx.Client:
        """The injector as the API server reaches it: 127.0.0.1, verified by the caBundle."""
        ctx = ssl.create_default_context(cadata=self.ca_bundle().decode())
        return httpx.Client(base_url=f"https://127.0.0.1:{self.injector_port}", verify=ctx,
                            timeout=10)

    def reviews(self) -> float:
        """How many AdmissionReviews the injector has answered (its /metrics)."""
        with self.injector_client() as client:
            text = client.get("/metrics").raise_for_status().text
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            if family.name == "meshinject_requests"
            for s in family.samples
            if s.name == "meshinject_requests_total"
        )

    def injector(self, action: str) -> str:
        return self.cluster_py("injector", action)

    # -- namespaces and pods ---------------------------------------------------------------
    @contextlib.contextmanager
    def namespace(self, prefix: str, *, labels: dict[str, str] | None = None
                  ) -> Iterator[str]:
        """A namespace of the test's own, ready for pods (its ServiceAccount made); deleted
        after, without waiting (the namespace controller empties it)."""
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        body = {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": labels or {}}}
        with self.api() as api:
            api.post("/api/v1/namespaces", json=body).raise_for_status()
            deadline = time.monotonic() + 30
            while api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default").status_code != 200:
                assert time.monotonic() < deadline, f"no default ServiceAccount in {name}"
                time.sleep(0.05)
        try:
            yield name
        finally:
            with self.api() as api:
                api.delete(f"/api/v1/namespaces/{name}")

    def create_pod(self, namespace: str, pod: Obj, *, dry_run: bool = False) -> httpx.Response:
        query = "?dryRun=All" if dry_run else ""
        with self.api() as api:
            return api.post(f"/api/v1/namespaces/{namespace}/pods{query}", json=pod)


def names(containers: list[Obj] | None) -> list[str]:
    return [c["name"] for c in containers or []]


def simple_pod(name: str, *, labels: dict[str, str] | None = None, **spec: Any) -> Obj:
    """A pod for what admission does to it: its ``schedulerName`` is one nobody runs, so it is
    stored and never bound to the sandbox node (hundreds are created by some tests)."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name, **(labels or {})}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}],
                 "schedulerName": UNSCHEDULED, **spec},
    }
