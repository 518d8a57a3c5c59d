"""``meshinject inspect``: the injected pods of a cluster and the state of their proxies.

Without a pod: one row per pod of every mesh-enabled namespace (or of ``-n NS``), plus pods that
opted in by label elsewhere: injected or not (MISSING when it should be and is not), proxy ready,
native or classic sidecar, capture mode, proxy restarts, and whether it was injected under the
current mesh config (STALE: restart it to re-inject). With a pod: its injected settings and its
proxy's live counters, read through the API server's pod proxy on :15090, so no port-forward.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import TextIO

from injector.cluster import xds
from injector.core.podview import Obj, PodFacts, injection_status, pod_facts
from mesh.contract import (
    INIT_NAME,
    INJECT,
    NAMESPACE_ENABLED,
    OUR_PREFIXES,
    PROMETHEUS_PATH,
    PROMETHEUS_PORT,
    PROXY_NAME,
)
from mesh.errors import KubeError
from mesh.kube.client import Kube
from mesh.settings import MeshConfig

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

# (metric, label naming the thing, what to call it) for the per-listener/cluster summary
_COUNTERS = (
    ("envoy_tcp_downstream_cx_total", "envoy_tcp_prefix", "tcp", "connections"),
    ("envoy_tcp_downstream_cx_active", "envoy_tcp_prefix", "tcp", "active"),
    ("envoy_http_downstream_rq_total", "envoy_http_conn_manager_prefix", "http", "requests"),
    ("envoy_cluster_upstream_cx_total", "envoy_cluster_name", "cluster", "connections"),
    ("envoy_cluster_upstream_rq_total", "envoy_cluster_name", "cluster", "requests"),
    ("envoy_cluster_upstream_cx_connect_fail", "envoy_cluster_name", "cluster", "connect failures"),
    ("envoy_cluster_upstream_rq_retry", "envoy_cluster_name", "cluster", "retries"),
    (
        "envoy_cluster_outlier_detection_ejections_active",
        "envoy_cluster_name",
        "cluster",
        "ejected",
    ),
)


def _gather(kube: Kube, namespace: str | None, config: MeshConfig) -> list[PodFacts]:
    labels: dict[str, dict[str, str]] = {}

    def ns_labels(ns: str) -> dict[str, str]:
        if ns not in labels:
            labels[ns] = kube.get_namespace(ns)["metadata"].get("labels") or {}
        return labels[ns]

    if namespace:
        pods = kube.list_pods(namespace)
    else:
        enabled = kube.list_namespaces(label_selector=f"{INJECT}={NAMESPACE_ENABLED}")
        pods = [p for n in enabled for p in kube.list_pods(n["metadata"]["name"])]
        seen = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods}
        pods += [
            p
            for p in kube.list_all_pods(label_selector=f"{INJECT}=true")
            if (p["metadata"]["namespace"], p["metadata"]["name"]) not in seen
        ]
    return [
        pod_facts(
            p,
            namespace=p["metadata"]["namespace"],
            namespace_labels=ns_labels(p["metadata"]["namespace"]),
            config=config,
        )
        for p in pods
    ]


def _row(f: PodFacts, sync: xds.ProxySync | None) -> list[str]:
    if not f.injected:
        return [f.namespace, f.name, f.injected_column, "-", "-", "-", "-", "-", "-", "-", "-"]
    ready = {True: "ready", False: "NOT READY", None: "?"}[f.proxy_ready]
    fresh = {True: "current", False: "STALE", None: "?"}[f.up_to_date]
    return [
        f.namespace,
        f.name,
        "yes",
        ready,
        "native" if f.native else "classic",
        f.capture,
        str(f.restarts),
        fresh,
        sync.state if sync else "NOT CONNECTED",
        sync.version if sync else "-",
        sync.mtls if sync else "-",
    ]


def show_table(kube: Kube, namespace: str | None, *, config: MeshConfig, out: TextIO) -> int:
    facts = _gather(kube, namespace, config)
    if not facts:
        where = f"namespace {namespace}" if namespace else "mesh-enabled namespaces"
        print(f"no pods in {where}", file=out)
        return 0
    synced, unanswered = xds.proxies(kube)
    header = ["NAMESPACE", "POD", "INJECTED", "PROXY", "SIDECAR", "CAPTURE", "RESTARTS", "CONFIG",
              "XDS", "VERSION", "MTLS"]
    rows = [header, *(_row(f, synced.get((f.namespace, f.name))) for f in facts)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)
    missing = [f for f in facts if f.missing]
    stale = [f for f in facts if f.up_to_date is False]
    print(
        f"\n{len(facts)} pod{'' if len(facts) == 1 else 's'}, "
        f"{sum(f.injected for f in facts)} injected, {len(missing)} "
        f"missing a proxy, {len(stale)} out of date",
        file=out,
    )
    if missing:
        print(
            "MISSING: should be injected but is not: re-create it (kubectl rollout restart); "
            "`meshinject check POD -n NS` says why",
            file=out,
        )
    if stale:
        print("STALE: injected under an older mesh config: restart to re-inject", file=out)
    nacked = [(f, synced[(f.namespace, f.name)]) for f in facts
              if (f.namespace, f.name) in synced and synced[(f.namespace, f.name)].nacks]
    for f, sync in nacked:
        print(f"NACK: {f.namespace}/{f.name} refused its config and runs its last good one: "
              f"{sync.nacks[0]}", file=out)
    for line in unanswered:
        print(line, file=out)
    return 1 if missing else 0


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if m := _SAMPLE.match(line):
            try:
                value = float(m[3])
            except ValueError:
                continue
            samples.append((m[1], dict(_LABEL.findall(m[2] or "")), value))
    return samples


def summarize_stats(text: str) -> list[str]:
    """A few lines a person can read: server health, then traffic per listener and cluster."""
    samples = parse_prometheus(text)
    plain = {name: value for name, labels, value in samples if not labels}
    lines = [
        f"  server    live {plain.get('envoy_server_live', 0):.0f}, uptime "
        f"{plain.get('envoy_server_uptime', 0):.0f} s, "
        f"{plain.get('envoy_server_memory_allocated', 0) / 2**20:.1f} MiB allocated"
    ]
    table: dict[tuple[str, str], list[str]] = defaultdict(list)
    for metric, label, kind, word in _COUNTERS:
        for name, labels, value in samples:
            if name == metric and label in labels and value:
                table[(kind, labels[label])].append(f"{word} {value:.0f}")
    for (kind, thing), parts in sorted(table.items()):
        lines.append(f"  {kind:<8}  {thing:<22}  {', '.join(parts)}")
    return lines


def _resources(resources: Obj) -> str:
    parts = [
        f"{kind} " + " ".join(f"{k}={v}" for k, v in sorted(values.items()))
        for kind, values in sorted(resources.items(), key=lambda kv: kv[0] != "requests")
    ]
    return ", ".join(parts) or "no resources"


def show_pod(kube: Kube, namespace: str, name: str, *, config: MeshConfig, out: TextIO) -> int:
    pod = kube.get_pod(namespace, name)
    ns_labels = kube.get_namespace(namespace)["metadata"].get("labels") or {}
    facts = pod_facts(pod, namespace=namespace, namespace_labels=ns_labels, config=config)
    print(f"pod {namespace}/{name}: {facts.verdict}", file=out)
    print(f"  why         {facts.decision.reason}", file=out)
    if not facts.injected:
        return 1 if facts.missing else 0
    print(f"  injection   {facts.summary}", file=out)
    status = json.dumps(injection_status(pod), separators=(",", ":"))
    print(f"  status      {status}", file=out)
    spec = pod.get("spec") or {}
    containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
    for c in containers:
        if c.get("name") == PROXY_NAME:
            print(
                f"  proxy       {c.get('image')}, {_resources(c.get('resources') or {})}", file=out
            )
        if c.get("name") == INIT_NAME:
            print(f"  capture     {' '.join(c.get('args') or [])}", file=out)
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    for key in sorted(k for k in annotations if k.startswith(OUR_PREFIXES)):
        print(f"  annotation  {key}={annotations[key]}", file=out)
    synced, unanswered = xds.proxies(kube)
    sync = synced.get((namespace, name))
    if sync is None:
        print("  xds         NOT CONNECTED to any control plane replica"
              + "".join(f"; {line}" for line in unanswered), file=out)
    else:
        print(f"  xds         {sync.state}, config {sync.version}, on {sync.replica}", file=out)
        print(f"  identity    {sync.identity or '-'}, mtls {sync.mtls}", file=out)
        print(f"  certificate {sync.certificate}", file=out)
        for kind, t in sorted(sync.types.items()):
            mark = "current" if t.get("current") else f"latest {t.get('latest', '?')}"
            print(f"    {kind:<22}  acked {t.get('acked') or '-'}, {mark}", file=out)
        for line in sync.nacks:
            print(f"    NACK {line}", file=out)
    path = PROMETHEUS_PATH.lstrip("/")
    print(f"live proxy stats (pods/{name}:{PROMETHEUS_PORT}/proxy/{path}):", file=out)
    try:
        text = kube.pod_proxy_get(namespace, name, port=PROMETHEUS_PORT, path=path)
    except KubeError as err:
        print(f"  unavailable: {err}", file=out)
        return 1
    print("\n".join(summarize_stats(text)), file=out)
    return 0
