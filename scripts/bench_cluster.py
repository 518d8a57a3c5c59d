#!/usr/bin/env python3
"""Benchmark pod creation through the real API server, with and without the webhook.

Brings up a local cluster of its own (``scripts/cluster/cluster.py up --node kwok=N`` in a
temporary state dir, on ports 26601-26605 and 26643) and takes it down at the end, whatever
happens. kwok manages N fake nodes, so every pod is scheduled and goes Running as on a real
cluster (without containers). Pods are created by POSTs to the API server, alternating between a
labelled namespace (each pod goes through the webhook) and an unlabelled one (it never does), so
both see the same load at the same moments.

A third namespace, the floor, has a webhook of its own: ``scripts/cluster/go/nullwebhook``, a
Go server that allows everything and patches nothing (built here with ``go build``; left out
with ``--no-floor`` or without Go). What it costs is what any webhook costs a pod's creation in
this API server on this machine; meshinject's figures read against it.

Prints, per namespace, the client-side latency of the POSTs (p50/p99: the difference with the
unlabelled namespace is what a webhook adds to a pod's creation, as the client sees it), pods per
second created and until all were Running; then the API server's own view,
``apiserver_admission_webhook_admission_duration_seconds`` per webhook (p50/p99 interpolated
from its buckets, whose first bound is 5 ms, and the share of calls within 5 ms), and the
injector's own review time. meshinject's webhook is called twice per pod (the ServiceAccount
plugin, rerun after the webhooks, mounts the API token into the containers it added, so
``reinvocationPolicy: IfNeeded`` calls it again): the API server's figures count calls, the
client's count pods.

    .venv/bin/python scripts/bench_cluster.py [--pods 500] [--concurrency 4] [--nodes 4]

Bounded: at most 5,000 pods, and ``--timeout`` seconds (default 300) for the whole run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_xds import percentile  # noqa: E402

CLUSTER_PY = REPO / "scripts" / "cluster" / "cluster.py"
NULL_WEBHOOK = REPO / "scripts" / "cluster" / "go" / "nullwebhook"
PORT_BASE = 26600
NULL_PORT = 26690
NAMESPACES = ("mesh", "floor", "plain")
WEBHOOK_METRIC = "apiserver_admission_webhook_admission_duration_seconds"
REVIEW_METRIC = "meshinject_review_duration_seconds"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def histogram(text: str, metric: str, **match: str) -> dict[float, float]:
    """Cumulative bucket counts (upper bound -> count) of one histogram, summed over the
    series whose labels include ``match``."""
    buckets: dict[float, float] = defaultdict(float)
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or m[1] != f"{metric}_bucket":
            continue
        labels = dict(_LABEL.findall(m[2] or ""))
        if all(labels.get(k) == v for k, v in match.items()):
            bound = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
            buckets[bound] += float(m[3])
    return dict(buckets)


def delta(after: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {b: after[b] - before.get(b, 0.0) for b in after}


def quantile(buckets: dict[float, float], q: float) -> float:
    """Prometheus' histogram_quantile: linear within the bucket holding the q-th observation."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    if total == 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = bound, count
    return lower


class Cluster:
    """The bench's own cluster: up in a temporary state dir, down at the end."""

    def __init__(self, nodes: int, timeout: float) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="meshinject-bench-"))
        self.state_dir = self.dir / "cluster"
        self.nodes, self.timeout = nodes, timeout
        self.state: dict[str, Any] = {}

    def run(self, *args: str) -> str:
        proc = subprocess.run([sys.executable, str(CLUSTER_PY), "--state-dir",
                               str(self.state_dir), *args], capture_output=True, text=True,
                              timeout=self.timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"cluster.py {' '.join(args)}:\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def __enter__(self) -> Cluster:
        try:
            out = self.run("up", "--port-base", str(PORT_BASE), "--node", f"kwok={self.nodes}")
        except BaseException:
            self.__exit__()
            raise
        print("\n".join("  " + line for line in out.splitlines() if line.startswith("[")))
        self.state = json.loads((self.state_dir / "state.json").read_text())
        return self

    def __exit__(self, *_: object) -> None:
        try:
            self.run("down")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def api(self) -> httpx.Client:
        pki = self.state_dir / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return httpx.Client(base_url=self.state["api_url"], verify=ctx, timeout=30)

    def injector_metrics(self) -> str:
        with self.api() as api:
            hook = api.get("/apis/admissionregistration.k8s.io/v1/"
                           "mutatingwebhookconfigurations/meshinject").json()
        bundle = base64.b64decode(hook["webhooks"][0]["clientConfig"]["caBundle"]).decode()
        port = self.state["ports"]["injector"]
        with httpx.Client(verify=ssl.create_default_context(cadata=bundle)) as client:
            return client.get(f"https://127.0.0.1:{port}/metrics").text


class Floor:
    """The null webhook: built, started on 127.0.0.1, registered for ``bench-floor``; stopped
    (our own child, by its PID) at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, api: httpx.Client) -> None:
        from mesh.pki import certs

        binary = self.workdir / "nullwebhook"
        env = {**os.environ, "GOTOOLCHAIN": "local", "GOWORK": "off", "CGO_ENABLED": "0",
               "GOFLAGS": "-buildvcs=false"}
        subprocess.run(["go", "build", "-trimpath", "-o", str(binary), "."], cwd=NULL_WEBHOOK,
                       env=env, check=True, timeout=300)
        ca = certs.generate_ca("bench floor CA", days=1)
        pair = certs.generate_serving_cert(ca, dns_names=["localhost"],
                                           ip_addresses=["127.0.0.1"], days=1)
        (self.workdir / "tls.crt").write_bytes(pair.cert_pem)
        (self.workdir / "tls.key").write_bytes(pair.key_pem)
        self.proc = subprocess.Popen(
            [str(binary), "-listen", f"127.0.0.1:{NULL_PORT}", "-cert",
             str(self.workdir / "tls.crt"), "-key", str(self.workdir / "tls.key")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        entry = {
            "name": "floor.bench.local", "admissionReviewVersions": ["v1"],
            "sideEffects": "None", "failurePolicy": "Fail", "timeoutSeconds": 5,
            "reinvocationPolicy": "IfNeeded", "matchPolicy": "Equivalent",
            "clientConfig": {"url": f"https://127.0.0.1:{NULL_PORT}/mutate",
                             "caBundle": base64.b64encode(ca.cert_pem).decode()},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {"bench": "floor"}},
        }
        api.post("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", json={
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration", "metadata": {"name": "bench-floor"},
            "webhooks": [entry]}).raise_for_status()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _reinvocation(api: httpx.Client, policy: str) -> None:
    path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/meshinject"
    hook = api.get(path).raise_for_status().json()
    for entry in hook["webhooks"]:
        entry["reinvocationPolicy"] = policy
    api.put(path, json=hook).raise_for_status()
    time.sleep(1)  # the API server's view of webhooks follows a watch


def _namespace(api: httpx.Client, name: str, labels: dict[str, str]) -> None:
    api.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                         "metadata": {"name": name, "labels": labels}}
             ).raise_for_status()
    deadline = time.monotonic() + 30
    while api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default").status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no default ServiceAccount in {name}")
        time.sleep(0.05)


def _pod(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"pod-{i}", "labels": {"app": "bench"}},
        "spec": {
            "nodeSelector": {"type": "kwok"},
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists",
                             "effect": "NoSchedule"}],
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                            "ports": [{"containerPort": 8080}]}],
        },
    }


def create_all(cluster: Cluster, pods: int, concurrency: int, deadline: float,
               spaces: tuple[str, ...]) -> tuple[dict[str, list[float]], list[str], float]:
    """Round robin over the namespaces, ``concurrency`` POSTs in flight; latencies per one."""
    latencies: dict[str, list[float]] = {ns: [] for ns in spaces}
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(pods))

    def worker() -> None:
        with cluster.api() as api:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                ns = spaces[i % len(spaces)]
                t0 = time.perf_counter()
                answer = api.post(f"/api/v1/namespaces/bench-{ns}/pods", json=_pod(i))
                took = time.perf_counter() - t0
                with lock:
                    if answer.status_code == 201:
                        latencies[ns].append(took)
                    else:
                        errors.append(f"{ns} pod-{i}: {answer.status_code} {answer.text[:200]}")

    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.monotonic() - start


def wait_running(cluster: Cluster, pods: int, deadline: float) -> float:
    start = time.monotonic()
    with cluster.api() as api:
        while time.monotonic() < deadline:
            running = 0
            for ns in NAMESPACES:
                found = api.get(f"/api/v1/namespaces/bench-{ns}/pods",
                                params={"fieldSelector": "status.phase=Running"}).json()
                running += len(found.get("items") or [])
            if running >= pods:
                return time.monotonic() - start
            time.sleep(0.5)
    raise RuntimeError(f"not all {pods} pods Running within the time bound")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--pods", type=int, default=500, help="pods in all, half per namespace")
    ap.add_argument("--concurrency", type=int, default=4, help="POSTs in flight")
    ap.add_argument("--nodes", type=int, default=4, help="kwok nodes (at most ~250 pods each)")
    ap.add_argument("--timeout", type=float, default=300, help="bound on the whole run (s)")
    ap.add_argument("--no-floor", action="store_true", help="no null webhook to compare with")
    ap.add_argument("--reinvocation", choices=["IfNeeded", "Never"], default="IfNeeded",
                    help="meshinject's reinvocationPolicy for the run (installed: IfNeeded); "
                    "Never shows what the second call costs")
    args = ap.parse_args()
    floor = not args.no_floor and shutil.which("go") is not None
    spaces = NAMESPACES if floor else ("mesh", "plain")
    if not 2 <= args.pods <= 5000 or not 1 <= args.concurrency <= 64:
        ap.error("--pods 2..5000, --concurrency 1..64")
    if args.pods / args.nodes > 250:
        ap.error(f"{args.nodes} nodes cannot hold {args.pods} pods (a /24 of pod IPs each)")
    deadline = time.monotonic() + args.timeout
    print(f"bench_cluster: {args.pods} pods, {args.concurrency} in flight, "
          f"{args.nodes} kwok nodes, meshinject's reinvocationPolicy {args.reinvocation}; "
          "starting a cluster")
    with Cluster(args.nodes, args.timeout) as cluster:
        null = Floor(cluster.dir)
        try:
            with cluster.api() as api:
                _namespace(api, "bench-mesh", {"meshinject.io/inject": "enabled"})
                _namespace(api, "bench-plain", {})
                if args.reinvocation != "IfNeeded":
                    _reinvocation(api, args.reinvocation)
                if floor:
                    null.start(api)
                    _namespace(api, "bench-floor", {"bench": "floor"})
                before = api.get("/metrics").text
            reviews_before = cluster.injector_metrics()
            latencies, errors, took = create_all(cluster, args.pods, args.concurrency, deadline,
                                                 spaces)
            created = sum(len(v) for v in latencies.values())
            with cluster.api() as api:
                after = api.get("/metrics").text
            reviews_after = cluster.injector_metrics()
            running = wait_running(cluster, created, deadline)
        finally:
            null.stop()
        report(args, latencies, errors, took, running, before, after, reviews_before,
               reviews_after)
    return 1 if errors else 0


def report(args: argparse.Namespace, latencies: dict[str, list[float]], errors: list[str],
           took: float, running: float, before: str, after: str, reviews_before: str,
           reviews_after: str) -> None:
    created = sum(len(v) for v in latencies.values())
    print(f"\ncreated {created} pods in {took:.1f} s: {created / took:.0f} pods/s "
          f"({args.concurrency} in flight); all Running {running:.1f} s later "
          f"({created / (took + running):.0f} pods/s from first POST to all Running)")
    if errors:
        print(f"{len(errors)} refused; first: {errors[0]}")
    print("\nPOST /pods as the client sees it (per pod):")
    names = {"mesh": "meshinject webhook", "floor": "null webhook (floor)", "plain": "no webhook"}
    plain = latencies["plain"]
    for ns, v in latencies.items():
        added = "" if ns == "plain" else (
            f"  adds p50 {(percentile(v, 0.5) - percentile(plain, 0.5)) * 1e3:+.1f} ms, "
            f"p99 {(percentile(v, 0.99) - percentile(plain, 0.99)) * 1e3:+.1f} ms")
        print(f"  {names[ns]:<21} {len(v):4d} pods  p50 {percentile(v, 0.5) * 1e3:6.1f} ms  p90 "
              f"{percentile(v, 0.9) * 1e3:6.1f} ms  p99 {percentile(v, 0.99) * 1e3:6.1f} ms{added}")
    print(f"\n{WEBHOOK_METRIC} (the API server's, per call):")
    for name, ns in (("namespace.meshinject.io", "mesh"), ("object.meshinject.io", "mesh"),
                     ("floor.bench.local", "floor")):
        h = delta(histogram(after, WEBHOOK_METRIC, name=name, type="admit"),
                  histogram(before, WEBHOOK_METRIC, name=name, type="admit"))
        calls = h.get(float("inf"), 0)
        if not calls:
            print(f"  {name:<24} no calls")
            continue
        within = h.get(0.005, 0) / calls
        per_pod = calls / max(len(latencies.get(ns, [])), 1)
        print(f"  {name:<24} {calls:4.0f} calls ({per_pod:.1f} per pod)  p50 "
              f"{quantile(h, 0.5) * 1e3:5.2f} ms  p99 {quantile(h, 0.99) * 1e3:6.2f} ms  "
              f"{within:6.1%} within 5 ms")
    print("  (p50/p99 interpolated within the buckets, bounds 5, 25, 100 ms, ...)")
    r = delta(histogram(reviews_after, REVIEW_METRIC), histogram(reviews_before, REVIEW_METRIC))
    if r:
        print(f"\n{REVIEW_METRIC} (the injector's, body in to answer built): "
              f"{r[float('inf')]:.0f} reviews, p50 {quantile(r, 0.5) * 1e3:.2f} ms, "
              f"p99 {quantile(r, 0.99) * 1e3:.2f} ms")


if __name__ == "__main__":
    sys.exit(main())
