#!/usr/bin/env python3
"""Load through the data plane: N requests at a steady rate through two sidecars, then again
while the server pod's proxy restarts the way the kubelet restarts a native sidecar.

Why: a mesh that adds a few microseconds but drops one request in a hundred thousand, or many
whenever a proxy restarts, costs more than it gives. The pods are the harness of
scripts/bench_proxy.py: a client and a server network namespace (198.18.11.0/24), each
injected by the real pure core; ``mesh-init`` runs the injected args, ``mesh-proxy`` (Envoy)
runs the injected args as uid/gid 1337, and the app is an Envoy answering 1 KB. ``hey`` runs in
the client pod as root (so it is captured) and sends ``--requests`` GETs at ``--rate`` per
second over ``--connections`` keep-alive connections; every answer is counted by status, every
failure by its error.

Phase 2 restarts the server's proxy at ``--restart-at`` of the run, as the kubelet does for a
restartable init container: the spec's preStop hook if it has one, SIGTERM, wait for the exit,
start it again with the same args, until ready. Requests arriving while no proxy listens find
the inbound port closed; the client proxy retries connect failures (the mesh default: 2 retries,
25 ms backoff), as far as its retry budget lets it (at least 3 retries in flight at once), so
the loss the design allows is what arrives in the gap less those retries, and with a draining
preStop, nothing in flight. The script prints both.

As root:

    .venv/bin/python scripts/load_dataplane.py [--requests 1000000] [--rate 2000]
        [--connections 20] [--phase steady|restart|both]

Prints figures; asserts nothing. Everything it creates is deleted at the end, even on failure.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from injector.sandbox import netns
from mesh.overrides.values import parse_duration_ms
from mesh.settings import MeshConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_proxy import INIT, app_bootstrap, cleanup, envoy_binary, envoy_pid, injected_containers

CLIENT_IP, SERVER_IP, PORT = "198.18.11.1", "198.18.11.2", 8080
COUNTERS = ("downstream_cx_total", "upstream_cx_total", "upstream_cx_connect_fail",
            "upstream_rq_retry", "upstream_rq_5xx", "ejections_enforced_total",
            "downstream_rq_total", "downstream_rq_5xx", "downstream_cx_drain_close")


class Proxy:
    """One pod's mesh-proxy, started from its container spec, restartable like the kubelet."""

    def __init__(self, ns: netns.Netns, spec: dict[str, Any], logdir: Path) -> None:
        self.ns, self.spec, self.logdir = ns, spec, logdir
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start Envoy; seconds until its admin says LIVE."""
        began = time.monotonic()
        self.starts += 1
        self.proc = self.ns.spawn([envoy_binary(), *self.spec["args"]], uid=1337, gid=1337,
                                  log_path=str(self.logdir / f"{self.ns.name}-{self.starts}.log"))
        while self.admin("/ready").strip() != "LIVE":
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited {self.proc.returncode}")
            if time.monotonic() - began > 30:
                raise RuntimeError("envoy not ready in 30 s")
            time.sleep(0.01)
        return time.monotonic() - began

    def stop(self) -> tuple[float, float]:
        """preStop (if the spec has one), then SIGTERM: (preStop seconds, exit seconds)."""
        began = time.monotonic()
        hook = self.spec.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
        if hook:
            self.ns.run(hook, uid=1337, gid=1337, timeout=120, check=False)
        drained = time.monotonic()
        assert self.proc is not None
        netns.stop(self.proc, timeout=30)
        return drained - began, time.monotonic() - drained

    def admin(self, path: str) -> str:
        cmd = ["curl", "-s", "--max-time", "2", f"http://127.0.0.1:15000{path}"]
        return self.ns.run(cmd, check=False).stdout

    def counters(self) -> dict[str, int]:
        totals = dict.fromkeys(COUNTERS, 0)
        for line in self.admin("/stats?usedonly").splitlines():
            name, _, value = line.partition(": ")
            if "admin" in name or name.startswith("listener."):  # per listener: counted twice
                continue
            leaf = name.rsplit(".", 1)[-1]
            if leaf in totals and value.strip().isdigit():
                totals[leaf] += int(value)
        return totals


def hey(client: netns.Netns, args: argparse.Namespace, out: Path) -> subprocess.Popen[bytes]:
    per_worker = args.rate / args.connections
    cmd = ["hey", "-n", str(args.requests), "-c", str(args.connections), "-q", f"{per_worker:g}",
           "-t", "10", f"http://{SERVER_IP}:{PORT}/"]
    return subprocess.Popen(client.argv(cmd), stdout=out.open("wb"), stderr=subprocess.STDOUT)


def outcomes(report: str) -> dict[str, int]:
    """hey's status code distribution and error distribution, as counts."""
    found: dict[str, int] = {}
    for code, count in re.findall(r"^\s+\[(\d{3})\]\s+(\d+) responses", report, re.M):
        found[code] = int(count)
    errors = report.partition("Error distribution:")[2]
    for count, what in re.findall(r"^\s+\[(\d+)\]\s+(.*)$", errors, re.M):
        kind = re.sub(r".*: ", "", what.strip())  # "Get "http://...": EOF" -> "EOF"
        found[kind] = found.get(kind, 0) + int(count)
    return found


def run_phase(name: str, client: netns.Netns, server_proxy: Proxy, client_proxy: Proxy,
              args: argparse.Namespace, workdir: Path) -> None:
    before = {"client": client_proxy.counters(), "server": server_proxy.counters()}
    out = workdir / f"hey-{name}.txt"
    began = time.monotonic()
    load = hey(client, args, out)
    restart: dict[str, float] = {}
    if name == "restart":
        time.sleep(args.restart_at * args.requests / args.rate)
        t0 = time.monotonic()
        restart["prestop_s"], restart["exit_s"] = server_proxy.stop()
        restart["start_s"] = server_proxy.start()
        restart["gap_s"] = time.monotonic() - t0 - restart["prestop_s"]
        restart["at_s"] = t0 - began
    load.wait()
    elapsed = time.monotonic() - began
    report = out.read_text(errors="replace")
    counts = outcomes(report)
    ok = counts.get("200", 0)
    after = {"client": client_proxy.counters(), "server": server_proxy.counters()}
    print(f"\n== {name}: {args.requests} requests at {args.rate:g}/s over {args.connections} "
          f"connections: {elapsed:.1f} s ({args.requests / elapsed:.0f} req/s achieved)")
    print(f"   outcomes: {counts}")
    print(f"   lost (not 200): {args.requests - ok} ({(args.requests - ok) / args.requests:.5%})")
    if name == "restart":
        print(f"   server proxy restart at t={restart['at_s']:.1f} s: preStop "
              f"{restart['prestop_s']:.2f} s, SIGTERM to exit {restart['exit_s']:.2f} s, start "
              f"to ready {restart['start_s']:.2f} s; no inbound listener for "
              f"{restart['gap_s']:.2f} s")
        http = after["client"]["downstream_rq_total"] > before["client"]["downstream_rq_total"]
        drained = restart["prestop_s"] > 0.01
        in_flight = 0 if drained else args.connections
        if http:
            # the client proxy retries connect failures, but its retry budget lets only so many
            # retries be in flight at once (at least retryMinConcurrency), and each holds its
            # slot for the backoff: a restart looks to it like a failing upstream
            traffic = MeshConfig().traffic
            backoff = parse_duration_ms("retryBackoff", traffic.retry_backoff) / 1000
            budgeted = traffic.retry_min_concurrency * restart["gap_s"] / backoff
            arrivals = max(0.0, restart["gap_s"] * args.rate - budgeted)
            how = (f"HTTP: arrivals in the gap less the retries the budget lets through "
                   f"({traffic.retry_min_concurrency} at once, {backoff * 1000:g} ms apart)")
        else:
            arrivals = restart["gap_s"] * args.rate
            how = "TCP passthrough, no L7 retry: every arrival in the gap"
        print(f"   the design allows: in flight {in_flight} (preStop drain: "
              f"{'yes' if drained else 'none in the spec'}, {args.connections} connections) "
              f"+ {how}: about {arrivals:.0f}; total about {in_flight + arrivals:.0f}")
    for role in ("client", "server"):
        restarted = role == "server" and name == "restart"  # a new Envoy counts from zero
        base = {} if restarted else before[role]
        delta = {k: after[role][k] - base.get(k, 0) for k in COUNTERS
                 if after[role][k] - base.get(k, 0)}
        print(f"   {role} proxy counters{' since its restart' if restarted else ''}: {delta}")
    wanted = ("Average:", "Slowest:", "Requests/sec:", "50% in", "99% in")
    for line in report.splitlines():
        if any(w in line for w in wanted):
            print("   hey:" + line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=2000, help="requests/s, all connections")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--phase", choices=["steady", "restart", "both"], default="both")
    parser.add_argument("--restart-at", type=float, default=0.3, help="fraction of the run")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    started: list[subprocess.Popen[bytes]] = []
    created: list[netns.Netns] = []
    proxies: list[Proxy] = []
    workdir = Path(tempfile.mkdtemp(prefix="load-dataplane-"))
    try:
        client, server = netns.create("lcli"), netns.create("lsrv")
        created += [client, server]
        netns.veth(client, server, a_addr=f"{CLIENT_IP}/24", b_addr=f"{SERVER_IP}/24")
        for role, ns in (("client", client), ("server", server)):
            spec = injected_containers(role, {})
            ns.run([INIT, *spec["mesh-init"]["args"]])
            proxies.append(Proxy(ns, spec["mesh-proxy"], workdir))
            proxies[-1].start()
        client_proxy, server_proxy = proxies
        app = server.spawn([envoy_binary(), "--config-yaml", app_bootstrap(),
                            "--disable-hot-restart", "--concurrency", "1", "-l", "error",
                            "--base-id", "7"], log_path=str(workdir / "app.log"))
        started.append(app)
        server.wait_for_port(PORT)
        envoy_pid(app)
        prestop = "lifecycle" in server_proxy.spec
        print(f"mesh-proxy args from the injected spec: {server_proxy.spec['args'][2:]}; "
              f"preStop hook in the spec: {prestop}; logs in {workdir}")
        for phase in (["steady", "restart"] if args.phase == "both" else [args.phase]):
            run_phase(phase, client, server_proxy, client_proxy, args, workdir)
        return 0
    finally:
        for proxy in proxies:
            if proxy.proc is not None:
                netns.stop(proxy.proc)
        cleanup(started, created)


if __name__ == "__main__":
    raise SystemExit(main())
