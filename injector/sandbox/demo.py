"""``meshinject demo``: the whole mission in one command, then everything removed again.

Three small services (:mod:`injector.sandbox.demo_manifest`) are injected and run in the sandbox;
a bounded stream of requests goes from the node to the frontend's Service; then, per pod, what
its Envoy saw (requests in and out, by destination and response code, retries) and what the app
saw (its own log: plain requests from 127.0.0.6, no proxy settings), and a one-paragraph summary.
Everything is torn down at the end, also on Ctrl-C, SIGTERM or any failure.
"""

from __future__ import annotations

import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType

from injector.sandbox import control, demo_manifest, network, nssocket, stats
from injector.sandbox.model import SandboxPlan
from injector.sandbox.plan import build_plan
from injector.sandbox.progress import Progress, bar, plural
from injector.sandbox.state import StateDir
from mesh.contract import PROXY_NAME, PROXY_UID
from mesh.settings import MeshConfig

WORKERS = 8


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


def app_log(state: StateDir, pod: str, container: str) -> tuple[Counter[str], Counter[str], str]:
    """From the app's own log: requests by peer address and by status, and the proxy
    settings it found in its environment at start (demo_app prints them)."""
    peers: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    proxies = "?"
    path = state.log_path(pod, container)
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        parts = line.split()
        if len(parts) == 5 and parts[3] == "->":
            peers[parts[0]] += 1
            statuses[parts[4]] += 1
        elif "proxy settings: " in line:
            proxies = line.rsplit("proxy settings: ", 1)[1]
    return peers, statuses, proxies


def _settle(plan: SandboxPlan, state: StateDir, sent: int) -> None:
    """Envoy flushes access logs each second: wait until the frontend's proxy logged them all
    (or, if it logs no HTTP at all, one flush interval and a half)."""
    begun = time.monotonic()
    entry = plan.pods[0].key
    while time.monotonic() < begun + 3:
        text = state.log_path(entry, PROXY_NAME).read_text(errors="replace")
        logged = sum(e.get("direction") == "inbound" for e in stats.access_entries(text))
        if logged >= sent or (not logged and time.monotonic() > begun + 1.5):
            return
        time.sleep(0.2)


def report(plan: SandboxPlan, state: StateDir, namespaces: dict[str, str]) -> dict[str, int]:
    """Per pod: what its proxy carried and what its app saw. Returns facts for the summary."""
    print("\nwhat each pod's proxy carried (Envoy's own counters and access log):")
    facts: Counter[str] = Counter()
    names = {f"{s.vip}:{p.port}": f"{s.name}.{s.namespace} ({s.vip}:{p.port})"
             for s in plan.services for p in s.ports}
    for pod in plan.pods:
        log = state.log_path(pod.key, PROXY_NAME).read_text(errors="replace")
        t = stats.summarize(stats.fetch(namespaces[pod.key]), stats.access_entries(log))
        name = f"  {pod.name:<11}"
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
    for pod in plan.pods:
        app = next(c for c in pod.containers if c.role == "app")
        peers, statuses, proxies = app_log(state, pod.key, app.name)
        settings = "no proxy settings" if proxies == "none" else f"proxy settings: {proxies}"
        print(f"  {pod.name:<11} {sum(peers.values()):>4} requests from "
              f"{', '.join(peers) or '-'} -> {stats.codes(statuses)};  uid {app.uid}, {settings}")
        if pod.name.startswith(demo_manifest.FLAKY):
            facts["flaky_calls"] = sum(statuses.values())
            facts["flaky_failed"] = statuses["503"]
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
        _settle(plan, state, requests)
        facts = report(plan, state, namespaces)
        good, failed = results.get("200", 0), requests - results.get("200", 0)
        ok = results.get("599", 0) == 0
        flaky = f"{demo_manifest.FLAKY} answered 503 to {facts.get('flaky_failed', 0)} of its " \
            f"{facts.get('flaky_calls', 0)} calls"
        if facts.get("retries"):
            print(f"\nsummary: {good}/{requests} requests succeeded although {flaky}:\n"
                  f"  the frontend's proxy retried them ({facts['retries']} retries), so the "
                  "frontend's code never saw one.")
        else:
            print(f"\nsummary: {good}/{requests} requests succeeded, {failed} failed: {flaky},\n"
                  "  and this build's proxy carries them as plain TCP (no HTTP retries).")
        print("  Every connection into and out of every pod went through its own Envoy; the apps "
              "are plain\n  http.server programs with no mesh code or settings.")
    finally:
        cleanup = time.monotonic()
        left = control.down(state)
        signal.signal(signal.SIGTERM, previous)
        print(f"removed everything ({time.monotonic() - cleanup:.1f}s); "
              f"demo took {time.monotonic() - started:.1f}s"
              + (f"; could not remove: {', '.join(left)}" if left else ""))
    return 0 if ok else 1
