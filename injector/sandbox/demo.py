"""``meshinject demo``: the whole mission in one command, then everything removed again.

Three small services (:mod:`injector.sandbox.demo_manifest`) are injected and run in the sandbox;
a bounded stream of requests goes from the node to the frontend's Service; then, per pod, what
its Envoy saw (requests in and out, by destination and response code, retries) and what the app
saw (its own log: plain requests from 127.0.0.6, no proxy settings), and a one-paragraph summary.
The summary says every connection went through its pod's Envoy only when the counters show it:
read once they are final (every access log caught up with its proxy's counters, and nothing
moved between two reads), each app's requests equal its proxy's inbound count and each call an
app made is in its proxy's outbound count.
Everything is torn down at the end, also on Ctrl-C, SIGTERM or any failure.
"""

from __future__ import annotations

import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from injector.sandbox import control, demo_manifest, network, nssocket, stats
from injector.sandbox.model import SandboxPlan
from injector.sandbox.plan import build_plan
from injector.sandbox.progress import Progress, bar, plural
from injector.sandbox.state import StateDir
from mesh.contract import INBOUND_SOURCE4 as INBOUND_SOURCE
from mesh.contract import PROXY_NAME, PROXY_UID
from mesh.settings import MeshConfig

WORKERS = 8
SETTLE_SECONDS = 5.0  # Envoy writes access logs out once a second


def request(node: str, address: str, *, host: str, timeout: float = 5) -> int:
    """One GET from the node namespace; the status, or 599 when no answer came."""
    try:
        code, _ = nssocket.http_get(node, 80, "/", host=address, timeout=timeout, header_host=host)
    except OSError:
        return 599
    return code


def send(node: str, address: str, *, host: str, count: int, seconds: float,
         progress: Progress) -> tuple[Counter[str], float]:
    """``count`` requests spread evenly over ``seconds`` by a few workers; codes and duration."""
    results: Counter[str] = Counter()
    lock, next_index = threading.Lock(), iter(range(count))
    start = time.monotonic()

    def work() -> None:
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            time.sleep(max(0.0, start + i * seconds / count - time.monotonic()))
            code = request(node, address, host=host)
            with lock:
                results[str(code)] += 1

    workers = [threading.Thread(target=work, daemon=True) for _ in range(WORKERS)]
    for worker in workers:
        worker.start()
    while any(w.is_alive() for w in workers):
        done = sum(results.values())
        progress.update(f"{bar(done / count)} {done}/{count}  {stats.codes(results)}")
        time.sleep(0.1)
    return results, time.monotonic() - start


@dataclass
class AppLog:
    """What an app logged (demo_app): requests it answered, by peer and by status; the calls it
    made, by host; the proxy settings it found in its environment at start."""

    peers: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    proxy_settings: str = "?"


def app_log(text: str) -> AppLog:
    """Read an app's log: ``PEER METHOD PATH -> STATUS`` per request it answered, ``call
    HOST:PORT/PATH -> STATUS`` per call it made, and its start line."""
    seen = AppLog()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[3] == "->":
            seen.peers[parts[0]] += 1
            seen.statuses[parts[4]] += 1
        elif len(parts) == 4 and parts[0] == "call" and parts[2] == "->":
            seen.calls[parts[1].partition("/")[0].partition(":")[0]] += 1
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
_COMPLETED = {d: f"http.{d}_http.downstream_rq_completed" for d in ("inbound", "outbound")}


def _fingerprint(counters: dict[str, int], entries: list[dict[str, object]]) -> tuple[int, ...]:
    names = (f"{stats.INBOUND_LISTENER}downstream_cx_total",
             f"{stats.OUTBOUND_LISTENER}downstream_cx_total", *_COMPLETED.values())
    retries = sum(v for k, v in counters.items() if k.endswith(".upstream_rq_retry"))
    return (*(counters.get(n, 0) for n in names), retries, len(entries))


def logged_all(counters: dict[str, int], entries: list[dict[str, object]]) -> bool:
    """Whether the proxy's access log holds a line for every HTTP request its counters saw, each
    way (Envoy counts a request when it completes, and writes the log out once a second)."""
    logged = Counter(str(e.get("direction")) for e in entries if e.get("protocol") != "tcp")
    return all(logged[d] == counters.get(name, 0) for d, name in _COMPLETED.items())


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


def unproxied(seen: list[Seen]) -> list[str]:
    """Why the counters do not show every connection into and out of every pod going through
    its own Envoy; empty when they do. In: every request an app answered came from its proxy's
    inbound address and was counted in by its proxy. Out: every call an app made was counted
    out by its proxy, to that host."""
    problems = []
    for s in seen:
        answered, carried = sum(s.app.peers.values()), sum(s.proxy.requests_in.values())
        if answered != carried:
            problems.append(f"{s.pod}: its app answered {answered} requests, its proxy "
                            f"counted {carried} in")
        others = sorted(set(s.app.peers) - {INBOUND_SOURCE})
        if others:
            problems.append(f"{s.pod}: its app was called from {', '.join(others)}, not only "
                            f"from its proxy ({INBOUND_SOURCE})")
        for host, calls in sorted(s.app.calls.items()):
            out = sum(s.proxy.requests_out.get(host, Counter()).values())
            if out != calls:
                problems.append(f"{s.pod}: its app called {host} {calls} times, its proxy "
                                f"counted {out} out")
    return problems


def verdict(problems: list[str], *, final: bool) -> str:
    """The summary's last words: the claim, only when the counters show it."""
    if not problems:
        return ("  Every connection into and out of every pod went through its own Envoy; the "
                "apps are plain\n  http.server programs with no mesh code or settings.")
    why = "" if final else f" (they were still moving after {SETTLE_SECONDS:g}s)"
    return ("  The counters do not show every connection going through its pod's Envoy"
            + why + ":\n" + "\n".join(f"    {p}" for p in problems))


def report(plan: SandboxPlan, seen: list[Seen]) -> dict[str, int]:
    """Per pod: what its proxy carried and what its app saw. Returns facts for the summary."""
    print("\nwhat each pod's proxy carried (Envoy's own counters and access log):")
    facts: Counter[str] = Counter()
    names = {f"{s.vip}:{p.port}": f"{s.name}.{s.namespace} ({s.vip}:{p.port})"
             for s in plan.services for p in s.ports}
    for s in seen:
        t = s.proxy
        name = f"  {s.pod:<11}"
        if t.requests_in:
            asked = sum(t.requests_in.values())
            print(f"{name} in : {asked:>4} requests  {stats.codes(t.requests_in)}")
        else:
            print(f"{name} in : {t.connections_in:>4} connections (TCP passthrough)")
        name = " " * len(name)
        for authority, got in sorted(t.requests_out.items()):
            asked, tries = sum(got.values()), t.attempts_out[authority]
            retried = f"  after {tries - asked} retries" if tries > asked else ""
            print(f"{name} out: {asked:>4} requests  {stats.codes(got)}  -> {authority}{retried}")
            facts["retries"] += tries - asked
        for upstream, count in sorted(t.tcp_out.items()):
            print(f"{name} out: {count:>4} connections  -> {names.get(upstream, upstream)}")
        if not t.requests_out and not t.tcp_out and t.connections_out:
            print(f"{name} out: {t.connections_out:>4} connections (TCP passthrough)")
    print("\nwhat the apps saw (their own logs):")
    for pod, s in zip(plan.pods, seen, strict=True):
        app = next(c for c in pod.containers if c.role == "app")
        settings = ("no proxy settings" if s.app.proxy_settings == "none"
                    else f"proxy settings: {s.app.proxy_settings}")
        print(f"  {s.pod:<11} {sum(s.app.peers.values()):>4} requests from "
              f"{', '.join(s.app.peers) or '-'} -> {stats.codes(s.app.statuses)};  "
              f"uid {app.uid}, {settings}")
        if s.pod.startswith(demo_manifest.FLAKY):
            facts["flaky_calls"] = sum(s.app.statuses.values())
            facts["flaky_failed"] = s.app.statuses["503"]
    return dict(facts)


def run(*, requests: int = 300, seconds: float = 10, state_dir: str | None = None) -> int:
    """The demo, start to finish; always tears down. Exit code 0 when every request got a 200."""
    started = time.monotonic()

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    root = Path(state_dir or tempfile.mkdtemp(prefix="meshinject-demo-", dir="/run"))
    state = StateDir(root)
    plan = build_plan(demo_manifest.documents(), config=MeshConfig(), namespace="demo")
    flaky = demo_manifest.FLAKY
    print("meshinject demo: three unmodified HTTP services, injected, in network namespaces")
    print(f"  frontend -> catalog, {flaky}; {flaky} answers 503 to every "
          f"{demo_manifest.FAIL_EVERY}th request,\n  and the frontend's pod asks its proxy to "
          "retry 5xx (proxy.meshinject.io/retries)")
    ok = False
    try:
        pid = control.start(state, plan)
        what = f"mesh-init, Envoy as uid {PROXY_UID}, app"
        boot = Progress(f"starting {plural(len(plan.pods), 'pod')} ({what})", stream=sys.stdout)
        control.wait_ready(state, plan, supervisor=pid, timeout=45,
                           progress=lambda r, t: boot.update(f"{r}/{t} ready"))
        boot.done(f"{len(plan.pods)}/{len(plan.pods)} ready")
        owner = int(state.status()["owner"])
        namespaces = {p.key: p.netns(owner) for p in plan.pods}
        entry = next(s for s in plan.services if s.name == demo_manifest.ENTRY)
        host = f"{entry.name}.{entry.namespace}"
        load = Progress(f"traffic to http://{host}/", stream=sys.stdout)
        results, _ = send(network.node_name(owner), str(entry.vip), host=host, count=requests,
                             seconds=seconds, progress=load)
        load.done(f"{requests} requests: {stats.codes(results)}")
        seen, final = observe(plan, state, namespaces)
        facts = report(plan, seen)
        problems = unproxied(seen)
        good, failed = results.get("200", 0), requests - results.get("200", 0)
        ok = results.get("599", 0) == 0 and not problems
        flaky = f"{demo_manifest.FLAKY} answered 503 to {facts.get('flaky_failed', 0)} of its " \
            f"{facts.get('flaky_calls', 0)} calls"
        if facts.get("retries"):
            print(f"\nsummary: {good}/{requests} requests succeeded although {flaky}:\n"
                  f"  the frontend's proxy retried them ({facts['retries']} retries), so the "
                  "frontend's code never saw one.")
        else:
            print(f"\nsummary: {good}/{requests} requests succeeded, {failed} failed: {flaky},\n"
                  "  and this build's proxy carries them as plain TCP (no HTTP retries).")
        print(verdict(problems, final=final))
    finally:
        cleanup = time.monotonic()
        left = control.down(state)
        signal.signal(signal.SIGTERM, previous)
        print(f"removed everything ({time.monotonic() - cleanup:.1f}s); "
              f"demo took {time.monotonic() - started:.1f}s"
              + (f"; could not remove: {', '.join(left)}" if left else ""))
    return 0 if ok else 1
