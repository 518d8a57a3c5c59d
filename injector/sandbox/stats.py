"""What went through one pod's proxy, from Envoy itself: admin counters and access logs.

Counters come from the admin API (``127.0.0.1:15000/stats`` inside the pod's namespace):
connections accepted by the capture listeners (15001 out, 15006 in), HTTP requests by response
code, retries. Per destination comes from the proxy's JSON access log (one line per request,
with its direction, authority and upstream attempts, or per TCP connection with its upstream
host), since one ORIGINAL_DST cluster serves every destination and so counters cannot split
them. Pure apart from :func:`fetch`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from injector.sandbox import nssocket
from mesh.contract import ADMIN_PORT, INBOUND_PORT, OUTBOUND_PORT

OUTBOUND_LISTENER = f"listener.0.0.0.0_{OUTBOUND_PORT}."
INBOUND_LISTENER = f"listener.0.0.0.0_{INBOUND_PORT}."


def parse(text: str) -> dict[str, int]:
    """Envoy's plain ``/stats``: ``name: value`` lines; histograms are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(": ")
        if name and value.strip().isdigit():
            out[name] = int(value)
    return out


def fetch(namespace: str) -> dict[str, int]:
    code, body = nssocket.http_get(namespace, ADMIN_PORT, "/stats", timeout=3)
    if code != 200:
        raise OSError(f"Envoy admin in {namespace} answered {code}")
    return parse(body)


def access_entries(log: str) -> list[dict[str, object]]:
    """The proxy's JSON access-log lines (other log lines are skipped)."""
    entries = []
    for line in log.splitlines():
        if line.startswith("{") and '"direction"' in line:
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
    return entries


@dataclass
class Traffic:
    """One pod's proxy, summed up."""

    connections_in: int = 0
    connections_out: int = 0
    requests_in: Counter[str] = field(default_factory=Counter)  # response code -> count
    requests_out: dict[str, Counter[str]] = field(default_factory=dict)  # authority -> codes
    attempts_out: Counter[str] = field(default_factory=Counter)  # authority -> upstream tries
    tcp_out: Counter[str] = field(default_factory=Counter)  # upstream host -> connections
    retries: int = 0


def summarize(counters: dict[str, int], entries: list[dict[str, object]]) -> Traffic:
    t = Traffic(
        connections_in=counters.get(INBOUND_LISTENER + "downstream_cx_total", 0),
        connections_out=counters.get(OUTBOUND_LISTENER + "downstream_cx_total", 0),
        retries=sum(v for k, v in counters.items()
                    if k.startswith("cluster.outbound") and k.endswith(".upstream_rq_retry")),
    )
    for entry in entries:
        code = str(entry.get("response_code", "?"))
        if entry.get("protocol") == "tcp":  # a connection that was not HTTP
            if entry.get("direction") == "outbound":
                t.tcp_out[str(entry.get("upstream_host") or "?")] += 1
            continue
        if entry.get("direction") == "inbound":
            t.requests_in[code] += 1
        elif entry.get("direction") == "outbound":
            authority = str(entry.get("authority") or entry.get("upstream_host") or "?")
            t.requests_out.setdefault(authority, Counter())[code] += 1
            attempts = str(entry.get("upstream_attempts"))
            t.attempts_out[authority] += int(attempts) if attempts.isdigit() else 1
    if not t.requests_in:  # no access log: fall back on the HTTP counters, by code
        # plaintext and mutual TLS (from another proxy) come in on HTTP managers of their own
        for prefix in ("http.inbound_http.downstream_rq_", "http.inbound_mtls_http.downstream_rq_"):
            for name, value in counters.items():
                tail = name[len(prefix):]
                if name.startswith(prefix) and tail.isdigit() and value:
                    t.requests_in[tail] += value
    return t


def codes(counter: Counter[str]) -> str:
    """``300 x 200, 75 x 503``: most frequent first."""
    return ", ".join(f"{n} x {code}" for code, n in counter.most_common()) or "none"
