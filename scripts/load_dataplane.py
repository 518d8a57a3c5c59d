#!/usr/bin/env python3
"""Load through the data plane: N requests at a steady rate through two sidecars, then again
while the server pod's proxy restarts the way the kubelet restarts a native sidecar.

Why: a mesh that adds a few microseconds but drops one request in a hundred thousand, or many
whenever a proxy restarts, costs more than it gives. The pods are the harness of
scripts/bench_proxy.py: a client and a server network namespace (198.18.11.0/24), each
injected by the real pure core; ``mesh-init`` runs the injected args, ``mesh-proxy`` (Envoy)
runs the injected args as uid/gid 1337, and the app is an Envoy answering 1 KB (after
``--app-delay-ms``, so that requests are in flight when a proxy stops). ``hey`` runs in the
client pod as root (so it is captured) and sends ``--requests`` GETs at ``--rate`` per second
over ``--connections`` keep-alive connections; every answer is counted by status, every
failure by its error.

Phase 2 restarts the server's proxy at ``--restart-at`` of the run, as the kubelet does for a
restartable init container: the spec's preStop hook if it has one, SIGTERM, wait for the exit,
start it again with the same args, until ready. Two kinds of loss, measured apart:

- in flight: requests on a connection the stopping proxy closed under them, counted by the
  client's proxy (``upstream_cx_destroy_remote_with_active_rq``). The preStop drain cannot save
  them here: it answers with ``Connection: close`` so that peers move to other endpoints, but a
  proxy restarting in place has no other endpoint, so its peers reconnect to it until the drain
  time ends; then Envoy closes the listener and SIGTERM follows at once, with whatever was in
  flight (one request per connection, HTTP/1.1) and whatever reaches a kept-alive connection
  while Envoy exits. (Where the endpoint goes away the drain does move the traffic:
  tests/dataplane/test_drain.py.)
- the gap: requests arriving while no proxy listens find the inbound port closed; the client
  proxy retries connect failures as far as its retry budget lets it (at least
  ``retryMinConcurrency`` retries in flight at once, each holding its slot for the backoff).

The design allows, for the restart, what is in flight when the listener closes (one request per
connection) plus the arrivals of a gap of ``--max-gap`` seconds less those retries; the requests
cut in flight are counted against that total, and reported apart; the steady phase allows no
loss. The allowance is fixed before the run, from the flags and the mesh's retry defaults, and
printed first. The exit code is 1 when a phase loses more than it allows (or the restart left
no listener for longer than ``--max-gap``), 0 otherwise.

As root:

    .venv/bin/python scripts/load_dataplane.py [--requests 1000000] [--rate 2000]
        [--connections 20] [--phase steady|restart|both] [--drain-time 5s] [--max-gap 0.5]

Everything it creates is deleted at the end, even on failure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from injector.sandbox import netns
from mesh.contract import DRAIN_TIME
from mesh.overrides.values import parse_duration_ms
from mesh.settings import MeshConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_proxy import INIT, app_bootstrap, cleanup, envoy_binary, envoy_pid, injected_containers

from tests.support.meshcontrol import LabControl, start_proxy

CLIENT_IP, SERVER_IP, PORT = "198.18.11.1", "198.18.11.2", 8080
COUNTERS = ("downstream_cx_total", "upstream_cx_total", "upstream_cx_connect_fail",
            "upstream_rq_retry", "upstream_rq_5xx", "ejections_enforced_total",
            "downstream_rq_total", "downstream_rq_5xx", "downstream_cx_drain_close",
            "upstream_cx_destroy_remote_with_active_rq")
CUT_IN_FLIGHT = "upstream_cx_destroy_remote_with_active_rq"


@dataclass(frozen=True)
class Allowance:
    """What a phase may lose, fixed before it runs: in flight, and in the restart's gap."""

    in_flight: int
    gap: int
    how: str

    @property
    def total(self) -> int:
        return self.in_flight + self.gap


def allowance(phase: str, *, args: argparse.Namespace) -> Allowance:
    """The design's allowance for ``phase``: none when steady; for a restart, one request in
    flight per connection, and the arrivals of a ``--max-gap`` gap less the retries the client
    proxy's budget lets through meanwhile."""
    if phase == "steady":
        return Allowance(0, 0, "steady load: nothing may be lost")
    traffic = MeshConfig().traffic
    backoff = parse_duration_ms("retryBackoff", traffic.retry_backoff) / 1000
    retried = traffic.retry_min_concurrency * args.max_gap / backoff
    gap = math.ceil(max(0.0, args.max_gap * args.rate - retried))
    return Allowance(args.connections, gap, (
        f"in flight {args.connections} (one per connection, cut when the restarting proxy "
        f"closes its listener); gap: {args.max_gap:g} s of arrivals at {args.rate:g}/s less the "
        f"retries the budget lets through ({traffic.retry_min_concurrency} at once, "
        f"{backoff * 1000:g} ms apart): {gap}"))


class Proxy:
    """One pod's mesh-proxy, started from its container spec, restartable like the kubelet;
    its config comes from a control plane running beside it in the pod's namespace."""

    def __init__(self, ns: netns.Netns, spec: dict[str, Any], logdir: Path, *, name: str,
                 ip: str, annotations: dict[str, str], control: LabControl,
                 started: list[subprocess.Popen[bytes]]) -> None:
        self.ns, self.spec, self.logdir = ns, spec, logdir
        self.name, self.ip, self.annotations = name, ip, annotations
        self.control, self.started = control, started
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, ns: netns.Netns, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = ns.spawn(cmd, **kwargs)
        self.started.append(proc)
        return proc

    def start(self) -> float:
        """Start Envoy (and, the first time, its control plane); seconds until LIVE."""
        began = time.monotonic()
        self.starts += 1
        self.proc = start_proxy(
            self.control, self.ns, self._spawn, name=self.name, namespace="bench", ip=self.ip,
            annotations=self.annotations, args=self.spec["args"],
            log=self.logdir / f"{self.ns.name}-{self.starts}.log",
            control_plane=self.starts == 1)
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

    def drain_seconds(self) -> float:
        """The drain time in the spec's args (``--drain-time-s``), 0 without one."""
        args = self.spec["args"]
        return float(args[args.index("--drain-time-s") + 1]) if "--drain-time-s" in args else 0

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
              args: argparse.Namespace, workdir: Path, allowed: Allowance) -> list[str]:
    """One phase; returns what went past its allowance (nothing when it held)."""
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
        # Envoy closes the inbound listener when the drain time ends (the preStop then waits
        # for the requests in flight), or at SIGTERM without a preStop
        closed = min(restart["prestop_s"], server_proxy.drain_seconds())
        restart["gap_s"] = time.monotonic() - t0 - closed
        restart["at_s"] = t0 - began
    load.wait()
    elapsed = time.monotonic() - began
    report = out.read_text(errors="replace")
    counts = outcomes(report)
    lost = args.requests - counts.get("200", 0)
    after = {"client": client_proxy.counters(), "server": server_proxy.counters()}
    cut = after["client"][CUT_IN_FLIGHT] - before["client"][CUT_IN_FLIGHT]
    print(f"\n== {name}: {args.requests} requests at {args.rate:g}/s over {args.connections} "
          f"connections: {elapsed:.1f} s ({args.requests / elapsed:.0f} req/s achieved)")
    print(f"   outcomes: {counts}")
    print(f"   lost (not 200): {lost} ({lost / args.requests:.5%}); cut in flight (the client "
          f"proxy's {CUT_IN_FLIGHT}): {cut}")
    problems = []
    if name == "restart":
        print(f"   server proxy restart at t={restart['at_s']:.1f} s: preStop "
              f"{restart['prestop_s']:.2f} s, SIGTERM to exit {restart['exit_s']:.2f} s, start "
              f"to ready {restart['start_s']:.2f} s; no inbound listener for "
              f"{restart['gap_s']:.2f} s")
        if restart["gap_s"] > args.max_gap:
            problems.append(f"no listener for {restart['gap_s']:.2f} s, longer than the "
                            f"{args.max_gap:g} s the allowance assumed (--max-gap)")
        if after["client"]["downstream_rq_total"] == before["client"]["downstream_rq_total"]:
            problems.append("the client proxy carried no HTTP request: the allowance assumed "
                            "HTTP retries")
    if name == "steady" and cut:
        problems.append(f"{cut} requests cut in flight under steady load")
    if lost > allowed.total:
        problems.append(f"{lost} requests lost, allowed {allowed.total}")
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
    verdict = "; ".join(problems) or f"within the allowance ({allowed.total})"
    print(f"   {'FAILED' if problems else 'held'}: {verdict}")
    return problems


def with_delay(bootstrap: str, delay_ms: int) -> str:
    """The app's bootstrap with a fixed delay before every answer (Envoy's fault filter)."""
    if not delay_ms:
        return bootstrap
    config = json.loads(bootstrap)
    fault = {"name": "envoy.filters.http.fault", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        "delay": {"fixed_delay": f"{delay_ms / 1000:g}s", "percentage": {"numerator": 100}}}}
    for listener in config["static_resources"]["listeners"]:
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["http_filters"].insert(0, fault)
    return json.dumps(config)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=2000, help="requests/s, all connections")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--phase", choices=["steady", "restart", "both"], default="both")
    parser.add_argument("--restart-at", type=float, default=0.3, help="fraction of the run")
    parser.add_argument("--drain-time", help=f"the pods' {DRAIN_TIME} (default: the mesh's)")
    parser.add_argument("--app-delay-ms", type=int, default=0, help="the app answers after it")
    parser.add_argument("--max-gap", type=float, default=0.5,
                        help="seconds without a listener the restart's allowance assumes")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    annotations = {DRAIN_TIME: args.drain_time} if args.drain_time else {}
    phases = ["steady", "restart"] if args.phase == "both" else [args.phase]
    started: list[subprocess.Popen[bytes]] = []
    created: list[netns.Netns] = []
    proxies: list[Proxy] = []
    workdir = Path(tempfile.mkdtemp(prefix="load-dataplane-"))
    try:
        client, server = netns.create("lcli"), netns.create("lsrv")
        created += [client, server]
        netns.veth(client, server, a_addr=f"{CLIENT_IP}/24", b_addr=f"{SERVER_IP}/24")
        control = LabControl(workdir / "mesh")
        for role, ns, ip in (("client", client, CLIENT_IP), ("server", server, SERVER_IP)):
            spec = injected_containers(role, annotations)
            ns.run([INIT, *spec["mesh-init"]["args"]])
            proxies.append(Proxy(ns, spec["mesh-proxy"], workdir, name=role, ip=ip,
                                 annotations=annotations, control=control, started=started))
            proxies[-1].start()
        client_proxy, server_proxy = proxies
        app = server.spawn([envoy_binary(), "--config-yaml",
                            with_delay(app_bootstrap(), args.app_delay_ms),
                            "--disable-hot-restart", "--concurrency", "1", "-l", "error",
                            "--base-id", "7"], log_path=str(workdir / "app.log"))
        started.append(app)
        server.wait_for_port(PORT)
        envoy_pid(app)
        drains = "preStop" in server_proxy.spec.get("lifecycle", {})
        print(f"mesh-proxy args from the injected spec: {server_proxy.spec['args'][2:]}; "
              f"preStop hook in the spec: {drains}; logs in {workdir}")
        allowed = {phase: allowance(phase, args=args) for phase in phases}
        for phase in phases:
            print(f"allowed, fixed before the run: {phase}: {allowed[phase].how}")
        problems = []
        for phase in phases:
            problems += run_phase(phase, client, server_proxy, client_proxy, args, workdir,
                                  allowed[phase])
        return 1 if problems else 0
    finally:
        for proxy in proxies:
            if proxy.proc is not None:
                netns.stop(proxy.proc)
        cleanup(started, created)


if __name__ == "__main__":
    raise SystemExit(main())
