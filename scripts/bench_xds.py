#!/usr/bin/env python3
"""How fast an EndpointSlice change reaches every proxy, and what the control plane costs.

The real ``meshinject-controlplane`` serves N lightweight ADS clients (tests/support/adsclient,
which subscribe, ACK and follow EDS as Envoy does, each on its own TLS connection and token)
over S Services with three endpoints each, read from a registry file. After every client
holds its full config, the script changes one Service's EndpointSlice R times and records, per
change and client, the time from the file's rewrite to the client receiving (and at once
ACKing) the assignment that carries it. It prints p50/p99, the control plane's CPU during the
changes and its resident memory (and its peak, VmHWM). The registry file is polled every
``--poll`` seconds, which is part of the figure (the cluster's watch delivers at once).

    .venv/bin/python scripts/bench_xds.py --proxies 1000 --services 1000

``--certs`` measures certificate issuance instead: every client is made (token, channel) first,
then all of them start at one signal, each asking for its secrets (its SVID and the trust
bundle) beside CDS as Envoy does; it prints p50/p99 of the time from that start to the client
holding its certificate, and the control plane's CPU seconds from the start until the last
one had it (each SVID is a key made and a certificate signed by the CA in the control plane).

    .venv/bin/python scripts/bench_xds.py --certs --proxies 1000 --services 10

``--tracemalloc N`` runs the control plane under tracemalloc and writes its N biggest
allocation sites (by line) after the sync and at the end to ``tracemalloc-*.txt`` in the run's
directory (printed); slower, for finding where the memory goes, not for the figures.

Target (issue 13): at 1,000 proxies and 1,000 services, p99 under 1 s and under 300 MB.
The same push to real Envoys: ``scripts/bench_xds_envoys.py``, which shares the registry, keys,
tokens and control plane start-up defined here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from controlplane.identity.ca import MeshCA  # noqa: E402
from mesh.pki import jwt  # noqa: E402

PROGRAM = str(Path(sys.executable).parent / "meshinject-controlplane")
MARKER = "198.18.250."  # the address each change adds, one per change
TICK = os.sysconf("SC_CLK_TCK")


# -- the registry -------------------------------------------------------------------------------
def service(i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"svc{i}", "namespace": "bench"},
            "spec": {"clusterIP": f"198.19.{i // 250}.{i % 250 + 1}",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def endpoint_slice(i: int, extra: list[str]) -> dict[str, Any]:
    addresses = [f"198.18.{(i // 80) + 1}.{(i % 80) * 3 + k + 1}" for k in range(3)] + extra
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"svc{i}-1", "namespace": "bench",
                         "labels": {"kubernetes.io/service-name": f"svc{i}"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses]}


def pod(i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"p{i}", "namespace": "bench", "uid": f"u{i}",
                         "annotations": {"meshinject.io/status": "{}"}},
            "spec": {"serviceAccountName": "default", "containers": [{"name": "app"}]},
            "status": {"podIP": f"198.18.200.{i % 250}"}}


def write_registry(path: Path, *, services: int, proxies: int,
                   extra: dict[int, list[str]]) -> None:
    items = [x for i in range(services) for x in (service(i), endpoint_slice(i, extra.get(i, [])))]
    items += [pod(i) for i in range(proxies)]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    os.replace(tmp, path)


def change_slice(path: Path, extra: dict[int, list[str]], change: int, *, services: int,
                 proxies: int) -> tuple[str, float]:
    """Change number ``change`` (from 0): one more marker address in one Service's slice, the
    registry rewritten; returns (the address, time.time() of the rewrite)."""
    address = f"{MARKER}{change + 1}"
    target = change % services
    extra[target] = [*extra.get(target, []), address]
    write_registry(path, services=services, proxies=proxies, extra=extra)
    return address, time.time()


# -- the keys and the control plane -------------------------------------------------------------
def token_for(key: ec.EllipticCurvePrivateKey, i: int) -> str:
    """Pod p{i}'s projected ServiceAccount token, as the kubelet would mount it."""
    return jwt.mint({"sub": "system:serviceaccount:bench:default", "aud": ["meshinject"],
                     "exp": time.time() + 3600,
                     "kubernetes.io": {"pod": {"name": f"p{i}", "uid": f"u{i}"}}}, key)


def make_keys(work: Path) -> ec.EllipticCurvePrivateKey:
    """The token key (its public half is what the plane trusts instead of TokenReview) and the
    mesh CA (``ca.crt`` is the root every proxy verifies the plane with), written to ``work``."""
    key = ec.generate_private_key(ec.SECP256R1())
    (work / "token.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (work / "token.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    ca = MeshCA.create(trust_domain="cluster.local")
    (work / "ca.crt").write_bytes(ca.signer.cert_pem)
    (work / "ca.key").write_bytes(ca.signer.key_pem)
    return key


def loopback_status(port: int, path: str) -> int:
    """The HTTP status of GET 127.0.0.1:``port``/``path`` here; OSError when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return err.code


def start_plane(*, work: Path, registry: Path, port: int, poll: float,
                command: Sequence[str] = (PROGRAM,), env: dict[str, str] | None = None,
                log: IO[bytes], wrap: Sequence[str] = (),
                status: Callable[[int, str], int] = loopback_status) -> subprocess.Popen[bytes]:
    """The real control plane on 127.0.0.1:``port`` (debug on ``port + 1``), serving a
    certificate for 127.0.0.1, trusting tokens of ``work/token.pub``; ready when this returns
    (``/readyz`` answers 200), or RuntimeError with its log's tail. ``wrap`` runs it inside a
    network namespace (``ip netns exec NAME``, which execs: the pid is still the plane's), and
    ``status`` is how its debug port is reached from here."""
    with contextlib.suppress(OSError):
        status(port + 1, "/readyz")
        raise RuntimeError(f"127.0.0.1:{port + 1} already answers (another benchmark?): "
                           f"choose another --port")
    plane = subprocess.Popen(
        [*wrap, *command, "--registry-file", str(registry), "--token-key",
         str(work / "token.pub"), "--ca-dir", str(work), "--listen", f"127.0.0.1:{port}",
         "--debug-listen", f"127.0.0.1:{port + 1}", "--serving-ip", "127.0.0.1",
         "--registry-poll", str(poll), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if plane.poll() is not None:
            raise RuntimeError(f"the control plane exited {plane.returncode}: "
                               f"{(work / 'controlplane.log').read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            if status(port + 1, "/readyz") == 200:
                return plane
        time.sleep(0.1)
    plane.kill()
    plane.wait()
    raise RuntimeError("the control plane was not ready in 60 s")


# -- a client process ---------------------------------------------------------------------------
async def clients(args: argparse.Namespace) -> None:
    import grpc

    from mesh.contract import SVID_SECRET, TRUST_BUNDLE_SECRET
    from tests.support.adsclient import ENDPOINT, SECRET, AdsClient, endpoints_of

    key = serialization.load_pem_private_key(Path(args.key).read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    root = Path(args.root).read_bytes()
    seen: dict[str, list[float]] = {}
    certified: list[float] = []  # when each client first held its own certificate
    holding: set[int] = set()
    made = []
    for i in range(args.offset, args.offset + args.count):
        token = token_for(key, i)
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{args.port}", grpc.ssl_channel_credentials(root),
            options=[("grpc.ssl_target_name_override",
                      "meshinject-controlplane.meshinject-system.svc"),
                     ("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        client = AdsClient(channel, namespace="bench", pod=f"p{i}", token=token, keep=False,
                           wait_for_ready=True)
        original = client._handle
        first: set[str] = set()

        def handle(response: Any, original: Any = original, first: set[str] = first,
                   client: AdsClient = client) -> None:
            now = time.time()
            original(response)
            if (response.type_url == SECRET and id(client) not in holding
                    and SVID_SECRET in client.got.names.get(SECRET, ())):
                holding.add(id(client))
                certified.append(now)
            if response.type_url == ENDPOINT:
                for addresses in endpoints_of(response).values():
                    for address in addresses:
                        if address.startswith(MARKER) and address not in first:
                            first.add(address)
                            seen.setdefault(address, []).append(now)

        client._handle = handle  # type: ignore[method-assign]
        made.append(client)
    if args.certs:  # all made: start together when the parent says so
        print(json.dumps({"ready": len(made)}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    start = time.time()

    async def run(client: AdsClient) -> None:
        runner = asyncio.create_task(client.run())
        if args.certs:  # after its CDS request, as Envoy asks once its clusters name them
            await asyncio.sleep(0)
            client.request(SECRET, [SVID_SECRET, TRUST_BUNDLE_SECRET])
        await runner

    running = [(client, asyncio.create_task(run(client))) for client in made]
    deadline = time.monotonic() + args.timeout
    if args.certs:
        while len(certified) < len(made) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        print(json.dumps({"start": start, "certified": certified}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        for client, task in running:
            client.close()
            task.cancel()
        return
    while not all(len(c.got.versions) >= 4 for c, _ in running):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    synced = sum(len(c.got.versions) >= 4 for c, _ in running)
    print(json.dumps({"synced": synced}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print(json.dumps({"seen": seen}), flush=True)
    for client, task in running:
        client.close()
        task.cancel()


# -- the run ------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# run as the control plane under --tracemalloc: SIGUSR1 writes the biggest allocation sites
TRACED = """
import signal, sys, tracemalloc
from pathlib import Path
tracemalloc.start(1)
count = [0]
def dump(signum, frame):
    count[0] += 1
    snap = tracemalloc.take_snapshot()
    stats = snap.statistics("lineno")
    total = sum(s.size for s in stats)
    lines = [f"traced {total / 2**20:.1f} MB in {len(stats)} sites"]
    lines += [f"{s.size / 2**20:8.2f} MB {s.count:9d} {s.traceback}" for s in stats[:TOP]]
    Path(OUT + f"-{count[0]}.txt").write_text("\\n".join(lines) + "\\n")
signal.signal(signal.SIGUSR1, dump)
from controlplane.main import main
sys.exit(main(sys.argv[1:]))
"""


def dump_traced(plane: subprocess.Popen[bytes], work: Path, name: str) -> None:
    """Ask a --tracemalloc control plane for another dump; wait for it and print where."""
    before = set(work.glob("tracemalloc-*.txt"))
    plane.send_signal(__import__("signal").SIGUSR1)
    deadline = time.monotonic() + 60
    while set(work.glob("tracemalloc-*.txt")) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    print(f"  tracemalloc {name}: {sorted(set(work.glob('tracemalloc-*.txt')) - before)}")


def certs(args: argparse.Namespace, plane: subprocess.Popen[bytes],
          procs: list[subprocess.Popen[str]]) -> int:
    """The burst: every client ready, then all start at once; time to each certificate."""
    ready = sum(json.loads(p.stdout.readline())["ready"] for p in procs)  # type: ignore
    cpu_before = cpu_seconds(plane.pid)
    for p in procs:
        p.stdin.write("go\n")  # type: ignore[union-attr]
        p.stdin.flush()  # type: ignore[union-attr]
    waits: list[float] = []
    for p in procs:
        got = json.loads(p.stdout.readline())  # type: ignore[union-attr]
        waits += [t - got["start"] for t in got["certified"]]
    cpu = cpu_seconds(plane.pid) - cpu_before
    print(f"{ready} proxies started at once over {args.services} Services: {len(waits)} got "
          f"a certificate")
    if waits:
        print(f"  start -> certificate: p50 {percentile(waits, .5) * 1000:.0f} ms, p99 "
              f"{percentile(waits, .99) * 1000:.0f} ms, max {max(waits) * 1000:.0f} ms")
    print(f"  control plane: {cpu:.2f} CPU-seconds from the start to the last certificate "
          f"(token checks, keys, signatures and the proxies' first config), RSS "
          f"{rss_mb(plane.pid):.0f} MB, peak {peak_rss_mb(plane.pid):.0f} MB")
    ca = MeshCA.create(trust_domain="cluster.local")
    began = time.process_time()
    for i in range(200):
        ca.issue(f"spiffe://cluster.local/ns/bench/sa/s{i}")
    each = (time.process_time() - began) / 200
    print(f"  the CA alone, in this process: {each * 1000:.2f} ms CPU per SVID (key and "
          f"signature), {each * ready:.2f} s for {ready}")
    return 0 if len(waits) == ready == args.proxies else 1


def bench(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-xds-"))
    make_keys(work)
    registry = work / "registry.json"
    extra: dict[int, list[str]] = {}
    write_registry(registry, services=args.services, proxies=args.proxies, extra=extra)
    port = args.port
    log = open(work / "controlplane.log", "wb")  # noqa: SIM115 (the plane's whole life)
    command = [PROGRAM]
    if args.tracemalloc:
        code = TRACED.replace("TOP", str(args.tracemalloc)).replace(
            "OUT", repr(str(work / "tracemalloc")))
        command = [sys.executable, "-c", code]
    try:
        plane = start_plane(work=work, registry=registry, port=port, poll=args.poll,
                            command=command, log=log, wrap=args.plane_wrap.split(),
                            env=dict(e.split("=", 1) for e in args.plane_env))
    except RuntimeError:
        log.close()
        shutil.rmtree(work, ignore_errors=True)
        raise
    procs: list[subprocess.Popen[str]] = []
    try:
        per = -(-args.proxies // args.processes)
        begun = time.monotonic()
        for offset in range(0, args.proxies, per):
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "--client", "--port", str(port), "--key",
                 str(work / "token.key"), "--root", str(work / "ca.crt"), "--offset",
                 str(offset), "--count", str(min(per, args.proxies - offset)), "--timeout",
                 str(args.timeout), *(["--certs"] if args.certs else [])],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        if args.certs:
            return certs(args, plane, procs)
        if args.tracemalloc:  # dumps during the sync too, every 5 s, until the first line
            import threading
            stop = threading.Event()

            def during() -> None:
                n = 0
                while not stop.wait(5):
                    n += 1
                    plane.send_signal(__import__("signal").SIGUSR1)
                    print(f"  {time.monotonic() - begun:.0f} s into the sync: RSS "
                          f"{rss_mb(plane.pid):.0f} MB, dump {n}", flush=True)
            threading.Thread(target=during, daemon=True).start()
        synced = sum(json.loads(p.stdout.readline())["synced"] for p in procs)  # type: ignore
        sync_s = time.monotonic() - begun
        if args.tracemalloc:
            stop.set()
            time.sleep(1)
        print(f"{synced}/{args.proxies} proxies synced (CDS, EDS, LDS, RDS ACKed) in "
              f"{sync_s:.1f} s; control plane RSS {rss_mb(plane.pid):.0f} MB, peak "
              f"{peak_rss_mb(plane.pid):.0f} MB")
        if args.tracemalloc:
            dump_traced(plane, work, "synced")
        time.sleep(1)
        cpu_before, written = cpu_seconds(plane.pid), {}
        for change in range(args.changes):
            address, written[address] = change_slice(
                registry, extra, change, services=args.services, proxies=args.proxies)
            time.sleep(args.interval)
        cpu = cpu_seconds(plane.pid) - cpu_before
        seen: dict[str, list[float]] = {}
        for p in procs:
            p.stdin.write("done\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
            for marker, times in json.loads(p.stdout.readline())["seen"].items():  # type: ignore
                seen.setdefault(marker, []).extend(times)
        latencies = [t - written[m] for m, times in seen.items() for t in times]
        missing = sum(args.proxies - len(seen.get(m, [])) for m in written)
        per_change = [max(times) - written[m] for m, times in seen.items()]
        print(f"{args.changes} EndpointSlice changes, {args.proxies} proxies each, over "
              f"{args.services} Services (registry polled every {args.poll:g} s):")
        print(f"  change -> proxy has it (ACK sent): p50 {percentile(latencies, .5) * 1000:.0f} "
              f"ms, p99 {percentile(latencies, .99) * 1000:.0f} ms, max "
              f"{max(latencies) * 1000:.0f} ms; last proxy per change: median "
              f"{statistics.median(per_change) * 1000:.0f} ms; missed: {missing}")
        print(f"  control plane: {cpu:.2f} CPU-seconds for the changes "
              f"({cpu / args.changes * 1000:.0f} ms per change), RSS {rss_mb(plane.pid):.0f} MB, "
              f"peak {peak_rss_mb(plane.pid):.0f} MB")
        if args.settle:
            time.sleep(args.settle)
            print(f"  {args.settle:g} s later, nothing changing: RSS {rss_mb(plane.pid):.0f} MB")
        if args.tracemalloc:
            dump_traced(plane, work, "end")
        return 0 if missing == 0 else 1
    finally:
        for p in procs:
            p.kill()
            p.wait()
        plane.terminate()
        plane.wait(10)
        log.close()
        if not args.tracemalloc:  # its dumps are what that run is for; else nothing is kept
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=15700,
                        help="the control plane's port, its debug port the next (15700)")
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--proxies", type=int, default=1000, help="ADS clients (1000)")
    parser.add_argument("--services", type=int, default=1000, help="Services (1000)")
    parser.add_argument("--changes", type=int, default=10, help="EndpointSlice changes (10)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between (2)")
    parser.add_argument("--processes", type=int, default=4, help="client processes (4)")
    parser.add_argument("--poll", type=float, default=0.02, help="registry poll (0.02 s)")
    parser.add_argument("--timeout", type=float, default=300, help="sync timeout (300 s)")
    parser.add_argument("--settle", type=float, default=12, metavar="S",
                        help="then wait S seconds and measure the RSS again (12)")
    parser.add_argument("--certs", action="store_true",
                        help="all proxies start at once: time to a certificate, the CA's CPU")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="N",
                        help="the control plane under tracemalloc: its N biggest sites")
    parser.add_argument("--plane-wrap", default="", metavar="COMMAND",
                        help="run the control plane under this (e.g. 'heaptrack -o FILE')")
    parser.add_argument("--plane-env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment for the control plane (e.g. malloc settings)")
    args = parser.parse_args()
    if args.client:
        asyncio.run(clients(args))
        return 0
    return bench(args)


if __name__ == "__main__":
    raise SystemExit(main())
