"""What the demo reads once its traffic is over: each pod's proxy counters and access log, read
once they are final, and each app's own log.

Final means every access log caught up with its proxy's counters (Envoy counts a request when
it completes and writes the log out once a second) and nothing moved between two reads; after
SETTLE_SECONDS the demo reports what it has and says they were still moving. The apps' logs
(:mod:`demo_app`) say whom they answered, whom they called over how many connections and which
pod answered, and which client certificates their proxy told them of.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from injector.sandbox import stats
from injector.sandbox.demo_app import parse_call
from injector.sandbox.model import SandboxPlan
from injector.sandbox.state import StateDir
from mesh.contract import PROXY_NAME

SETTLE_SECONDS = 5.0  # Envoy writes access logs out once a second


@dataclass
class AppLog:
    """What an app logged (demo_app): requests it answered, by peer and by status; the calls it
    made, by host, with the pods that answered and how many connections it opened per host;
    the client certificates its proxy told it of; the proxy settings it found at start."""

    peers: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    answered_by: dict[str, Counter[str]] = field(default_factory=dict)  # host -> pod -> calls
    connections: Counter[str] = field(default_factory=Counter)  # host -> connections opened
    client_certs: list[str] = field(default_factory=list)
    proxy_settings: str = "?"


def app_log(text: str) -> AppLog:
    """Read an app's log: ``PEER METHOD PATH -> STATUS`` per request it answered, ``call
    HOST:PORT/PATH -> STATUS POD CONNECTION`` per call it made, ``client-cert VALUE`` per
    distinct certificate, and its start line."""
    seen = AppLog()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[3] == "->":
            seen.peers[parts[0]] += 1
            seen.statuses[parts[4]] += 1
        elif (call := parse_call(line)) is not None:
            host = call.target.partition("/")[0].partition(":")[0]
            seen.calls[host] += 1
            if call.pod != "-":
                seen.answered_by.setdefault(host, Counter())[call.pod] += 1
            seen.connections[host] = max(seen.connections[host], call.connection)
        elif len(parts) == 2 and parts[0] == "client-cert":
            seen.client_certs.append(parts[1])
        elif "proxy settings: " in line:
            seen.proxy_settings = line.rsplit("proxy settings: ", 1)[1]
    return seen


@dataclass
class Seen:
    """One pod once the run is over: what its proxy counted (Envoy's counters and access log)
    and what its app logged."""

    pod: str
    proxy: stats.Traffic
    app: AppLog


Snapshot = dict[str, tuple[dict[str, int], list[dict[str, object]]]]
_DIRECTIONS = ("inbound", "outbound")


def _fingerprint(counters: dict[str, int], entries: list[dict[str, object]]) -> tuple[int, ...]:
    names = (f"{stats.INBOUND_LISTENER}downstream_cx_total",
             f"{stats.OUTBOUND_LISTENER}downstream_cx_total")
    completed = (stats.http_counter(counters, d, "downstream_rq_completed") for d in _DIRECTIONS)
    retries = sum(v for k, v in counters.items() if k.endswith(".upstream_rq_retry"))
    return (*(counters.get(n, 0) for n in names), *completed, retries, len(entries))


def logged_all(counters: dict[str, int], entries: list[dict[str, object]]) -> bool:
    """Whether the proxy's access log holds a line for every HTTP request its counters saw, each
    way (Envoy counts a request when it completes, and writes the log out once a second)."""
    logged = Counter(str(e.get("direction")) for e in entries if e.get("protocol") != "tcp")
    return all(logged[d] == stats.http_counter(counters, d, "downstream_rq_completed")
               for d in _DIRECTIONS)


def settled(before: Snapshot, after: Snapshot) -> bool:
    """Final: nothing moved between two reads, and every access log caught up with its
    proxy's counters."""
    return all(
        _fingerprint(*before[pod]) == _fingerprint(*after[pod]) and logged_all(*after[pod])
        for pod in after
    )


def _snapshot(plan: SandboxPlan, state: StateDir, namespaces: dict[str, str]) -> Snapshot:
    out: Snapshot = {}
    for pod in plan.pods:
        log = state.log_path(pod.key, PROXY_NAME).read_text(errors="replace")
        out[pod.key] = stats.fetch(namespaces[pod.key]), stats.access_entries(log)
    return out


def observe(plan: SandboxPlan, state: StateDir,
            namespaces: dict[str, str]) -> tuple[list[Seen], bool]:
    """Each pod's proxy counters and access log, read once they are final (:func:`settled`;
    at most SETTLE_SECONDS), and each app's log; and whether they were final."""
    deadline = time.monotonic() + SETTLE_SECONDS
    before = _snapshot(plan, state, namespaces)
    while True:
        time.sleep(0.2)
        after = _snapshot(plan, state, namespaces)
        final = settled(before, after)
        if final or time.monotonic() > deadline:
            break
        before = after
    seen = []
    for pod in plan.pods:
        app = next(c for c in pod.containers if c.role == "app")
        path = state.log_path(pod.key, app.name)
        text = path.read_text(errors="replace") if path.exists() else ""
        seen.append(Seen(pod.name, stats.summarize(*after[pod.key]), app_log(text)))
    return seen, final

