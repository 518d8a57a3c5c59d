"""What the demo says about the mesh, from what it measured: balancing, mutual TLS and
identities, a live config change, and (when the control plane enforces them) a policy.

Pure: each function takes measurements (apps' logs, proxies' counters, packets seen on the
wire, the control plane's ``/debug/proxies``, Envoy's own config and pids) and returns the lines
to print. A claim ("spread over both replicas", "TLS only", "no restart", "denied") is made only
when the measurements show it; otherwise the lines say what was seen instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from injector.sandbox.model import PodPlan, SandboxPlan
from injector.sandbox.wire import Flow
from mesh.contract import TRUST_DOMAIN

BALANCED_CLAIM = "one keep-alive connection, its requests spread over both replicas"
TLS_CLAIM = "mutual TLS on the wire, each side with its own service account's identity"
LIVE_CLAIM = "the same Envoy processes, none restarted"
POLICY_CLAIM = "the policy denied the caller it does not allow"


def spiffe_id(pod: PodPlan) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{pod.namespace}/sa/{pod.service_account}"


# -- balancing ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Balance:
    """A caller's calls to one Service: how many, over how many connections (its app's log),
    which replica answered each (the replies), and what each replica's proxy counted in."""

    caller: str
    service: str
    calls: int
    connections: int
    answered: Mapping[str, int]
    counted_in: Mapping[str, int]


def balance_lines(b: Balance) -> list[str]:
    replicas = sorted(b.counted_in)
    by_reply = ", ".join(f"{p} {b.answered.get(p, 0)}" for p in replicas)
    by_proxy = ", ".join(f"{p} {b.counted_in[p]}" for p in replicas)
    lines = ["\nbalancing (the frontend's app log, the replies, each replica's proxy):",
             f"  {b.caller}'s app called {b.service} {b.calls} times over "
             f"{b.connections} connection{'s' if b.connections != 1 else ''}",
             f"  the replies came from: {by_reply}",
             f"  each replica's proxy counted in: {by_proxy}"]
    spread = len(replicas) >= 2 and all(b.answered.get(p, 0) > 0 for p in replicas)
    agree = sum(b.answered.values()) == b.calls and all(
        b.answered.get(p, 0) == b.counted_in[p] for p in replicas)
    if b.connections == 1 and spread and agree:
        lines.append(f"  => {BALANCED_CLAIM}")
    else:
        why = ("it opened more than one connection" if b.connections != 1 else
               "not every replica answered" if not spread else
               "the replies and the replicas' counters disagree")
        lines.append(f"  => not shown: {why}")
    return lines


# -- mutual TLS -----------------------------------------------------------------------------
def client_cert(value: str) -> dict[str, str]:
    """An ``x-forwarded-client-cert`` element as a dict (``By``, ``Hash``, ``URI``, ...)."""
    fields = {}
    for part in value.split(";"):
        key, sep, val = part.partition("=")
        if sep:
            fields[key.strip()] = val.strip().strip('"')
    return fields


@dataclass(frozen=True)
class WireFlow:
    """One direction of a captured flow, named for the reader."""

    label: str
    flow: Flow


def tls_lines(*, caller: PodPlan, servers: Sequence[PodPlan],
              certs: Mapping[str, Sequence[str]], mesh: Sequence[WireFlow],
              outside: Sequence[WireFlow]) -> list[str]:
    """``mesh``: the flows between ``caller`` and a server; ``outside``: the node's own
    plaintext to a pod, shown for contrast (and as proof the capture sees HTTP in clear).
    ``certs``: per server pod name, the client certificates its app was told of."""
    lines = ["\nmutual TLS (a packet socket on the node's bridge while the traffic ran; the node "
             "is outside the mesh):"]
    width = max((len(f.label) for f in (*mesh, *outside)), default=0)
    lines += [f"  {f.label:<{width}}  {f.flow.describe()}" for f in mesh]
    lines += [f"  {f.label:<{width}}  {f.flow.describe()}" for f in outside]
    lines.append("  identities (the x-forwarded-client-cert header each server's app got from "
                 "its proxy):")
    proven = bool(mesh) and all(f.flow.tls for f in mesh)
    for server in servers:
        seen = [client_cert(c) for c in certs.get(server.name, ())]
        if not seen:
            lines.append(f"    {server.name:<10} none")
            proven = False
            continue
        for cert in seen:
            lines.append(f"    {server.name:<10} By={cert.get('By', '-')}  "
                         f"URI={cert.get('URI', '-')}")
        proven &= all(c.get("By") == spiffe_id(server) and c.get("URI") == spiffe_id(caller)
                      for c in seen)
    if not any(f.flow.plaintext for f in outside):
        proven = False  # the capture must be able to see HTTP in clear for its "none" to count
    lines.append(f"  => {TLS_CLAIM}" if proven else
                 "  => not shown: see the segments and identities above")
    return lines


# -- a live config change -------------------------------------------------------------------
@dataclass(frozen=True)
class ProxyView:
    """One proxy before or after: per type the version it ACKed (``/debug/proxies``), whether
    that is its latest, its Envoy's pid and restarts, and the route timeout its Envoy runs."""

    acked: Mapping[str, str]
    current: bool
    pid: int | None
    restarts: int
    timeout: str | None


def change_lines(*, field: str, old: str, new: str, took: float,
                 before: Mapping[str, ProxyView], after: Mapping[str, ProxyView],
                 route: str) -> list[str]:
    lines = [f"\na live mesh-wide change: the mesh ConfigMap's {field} {old} -> {new}",
             f"  {took:.1f}s later, per proxy: the versions it ACKed (the control plane's "
             "/debug/proxies),",
             f"  and its Envoy's timeout on route {route} (/config_dump) and pid:"]
    acked_all = True
    for pod in sorted(after):
        b, a = before.get(pod), after[pod]
        changed = [t for t in sorted(a.acked) if b and a.acked[t] != b.acked.get(t)]
        acked_all &= bool(changed) and a.current
        what = ", ".join(f"{t} {b.acked.get(t, '-')[:8]} -> {a.acked[t][:8]}" for t in changed
                         if b) or "no new version ACKed"
        lines.append(f"    {pod:<11} {what}{'' if a.current else ' (not yet current)'}")
        lines.append(f"    {'':<11} timeout {b.timeout if b else '-'} -> {a.timeout or '-'}, "
                     f"pid {b.pid if b else '-'} -> {a.pid}")
    same = all(before.get(p) is not None and v.pid is not None and v.pid == before[p].pid
               and v.restarts == before[p].restarts for p, v in after.items())
    runs_new = all(v.timeout == new for v in after.values())
    if acked_all and runs_new and same:
        lines.append(f"  => every proxy ACKed the new version and runs it: {LIVE_CLAIM}")
    else:
        lines.append("  => not shown: " + ("a proxy did not ACK a new version" if not acked_all
                                          else "an Envoy does not run the new timeout"
                                          if not runs_new else "an Envoy was restarted"))
    return lines


# -- a policy --------------------------------------------------------------------------------
def policy_lines(*, name: str, target: str, allowed: str, calls: Mapping[str, int]) -> list[str]:
    """``calls``: caller pod -> the status its call to ``target`` got once the policy was
    ACKed. Denied means 403 for the caller not allowed, 200 for the one allowed."""
    lines = [f"\nan AccessPolicy ({name}): only {allowed} may call {target}"]
    lines += [f"  {pod} -> {target}: {code}" for pod, code in sorted(calls.items())]
    denied = [p for p, code in calls.items() if code == 403]
    let = [p for p, code in calls.items() if code == 200]
    if denied and let:
        lines.append(f"  => {POLICY_CLAIM}")
    else:
        lines.append("  => not shown: no call was both denied (403) and allowed (200)")
    return lines


def answered(answers: Mapping[str, Counter[str]], service: str) -> dict[str, int]:
    """Which pods answered a caller's calls to ``service``, from its app's log."""
    return dict(answers.get(service, Counter()))


def replicas(plan: SandboxPlan, service: str) -> list[PodPlan]:
    """The pods behind a Service (its endpoints), in plan order."""
    found = next(s for s in plan.services if s.name == service)
    return [p for p in plan.pods if p.address in found.endpoints]
