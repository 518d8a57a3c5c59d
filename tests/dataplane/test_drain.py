"""A pod terminated under steady load drops no request, and its preStop holds for the drain time.

The cluster in miniature: a client pod and two server pods (A, B), each with mesh-init capture
and its proxy, routed through a "node" namespace that plays kube-proxy: a Service VIP DNAT-ed to
one endpoint, with conntrack keeping established connections where they were. Terminating A
goes as the kubelet and the endpoints controller do it: A's preStop starts; the VIP still points
to A for a while (endpoint removal takes a moment to reach every node), then to B; once preStop
returns, the proxy and the app get SIGTERM. The client's proxy has pooled keep-alive connections
to A: only the drain (Connection: close) moves them to B in time.

No step waits on a clock: each waits for the event it needs, read from the apps and Envoy's
counters. Slow requests (1 s at A's app, half the drain time) are in flight at A when its preStop
starts, so a preStop that returns before the drain time ends lets SIGTERM cut them, every time;
the test also measures how long the preStop held.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from injector.sandbox import netns
from mesh.contract import DRAIN_TIME, INBOUND_PORT
from tests.support.lab import HERE, PY, Lab, Pod
from tests.support.spec import boot

pytestmark = [pytest.mark.netns, pytest.mark.envoy, pytest.mark.slow]

VIP = "198.18.7.100"
CLIENT, A, B = "198.18.5.1", "198.18.6.2", "198.18.8.2"
PORT, SLOW_PORT = 8080, 8081  # the Service's port; a port of A's app that answers after 1 s
REQUESTS, RATE = 1200, 300.0  # four seconds of steady load
DRAIN_SECONDS = 2
SLOW_MS, SLOW_REQUESTS = 1000, 6
INBOUND_CX = f"listener.0.0.0.0_{INBOUND_PORT}.downstream_cx_total"
DRAIN_CLOSE = "http.inbound_http.downstream_cx_drain_close"


def wait_for(what: str, ready: Callable[[], bool], *, timeout: float = 15) -> None:
    """Poll ``ready`` until true; fail naming ``what`` when it is not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.02)


@dataclass
class Termination:
    """What terminating A looked like: the preStop's wall time, and the drain's counters."""

    pre_stop_seconds: float | None = None
    drain_closed: int = 0


class Cluster:
    def __init__(self, lab: Lab) -> None:
        self.node = lab.ns("l7node")
        self.node.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        self.spec = boot(**{DRAIN_TIME: f"{DRAIN_SECONDS}s"})
        self.pods: dict[str, Pod] = {}
        for ip, role in ((CLIENT, "l7cli"), (A, "l7a"), (B, "l7b")):
            pod = lab.pod(role, ip)
            gateway = ip.rsplit(".", 1)[0] + ".254"
            netns.veth(pod.ns, self.node, a_addr=f"{ip}/24", b_addr=f"{gateway}/24",
                       b_if=f"v{role}")
            pod.ns.run(["ip", "route", "add", "default", "via", gateway])
            pod.start(self.spec, control=lab.control)
            self.pods[ip] = pod
        for ip in (A, B):
            self.pods[ip].start_upstream(PORT, "--delay-ms", "40")
        self.pods[A].start_upstream(SLOW_PORT, "--delay-ms", str(SLOW_MS))
        self.point_vip(A, first=True)

    def point_vip(self, endpoint: str, *, first: bool = False) -> None:
        rule = ["PREROUTING", "-d", VIP, "-p", "tcp", "--dport", str(PORT),
                "-j", "DNAT", "--to-destination", f"{endpoint}:{PORT}"]
        if first:
            self.node.run(["iptables", "-t", "nat", "-A", *rule])
        else:
            self.node.run(["iptables", "-t", "nat", "-R", rule[0], "1", *rule[1:]])

    def counter(self, ip: str, name: str) -> int:
        return self.pods[ip].stats(name).get(name, 0)

    def slow_arrivals(self) -> int:
        """How many slow requests reached A's app (so are in flight through A's proxy)."""
        out = self.pods[A].ns.run(["curl", "-s", f"127.0.0.1:{SLOW_PORT}/_count"]).stdout
        return int(out or 0)

    def loadgen(self, name: str, host: str, port: int, *args: str) -> Callable[[], dict[str, Any]]:
        """Start loadgen in the client pod; returns a function that waits for its summary."""
        client = self.pods[CLIENT]
        out = client.logdir / f"{name}.json"
        proc = client.spawn(client.ns, [PY, str(HERE / "loadgen.py"), "--host", host,
                                        "--port", str(port), *args], log_path=str(out))

        def result() -> dict[str, Any]:
            proc.wait(60)
            summary: dict[str, Any] = json.loads(out.read_text().strip().splitlines()[-1])
            return summary

        return result

    def terminate_a(self, *, graceful: bool) -> Termination:
        pod, seen = self.pods[A], Termination()
        pre_stop = None
        if graceful:
            # the injected preStop hook, run in the proxy's namespace as the proxy's user
            def hook() -> None:
                began = time.monotonic()
                pod.ns.run(self.spec.pre_stop, uid=self.spec.uid, gid=self.spec.gid, timeout=60)
                seen.pre_stop_seconds = time.monotonic() - began

            pre_stop = threading.Thread(target=hook)
            pre_stop.start()
            # the drain closes a pooled connection; the client reconnects, and the VIP still
            # sends that new connection to A: the draining listener must take it
            wait_for("A closes a connection in its drain",
                     lambda: self.counter(A, DRAIN_CLOSE) > 0)
            accepted = self.counter(A, INBOUND_CX)
            wait_for("A accepts a new connection while it drains",
                     lambda: self.counter(A, INBOUND_CX) > accepted)
        self.point_vip(B)
        if pre_stop is not None:
            pre_stop.join()
            seen.drain_closed = self.counter(A, DRAIN_CLOSE)
        assert pod.proxy is not None
        netns.stop(pod.proxy)
        for proc in pod.procs:
            netns.stop(proc)
        return seen

    def run(self, *, graceful: bool) -> tuple[dict[str, Any], dict[str, Any], Termination]:
        """Steady load through the VIP, slow requests in flight at A, then A terminated."""
        steady = self.loadgen(f"steady-{graceful}", VIP, PORT, "--requests", str(REQUESTS),
                              "--rate", str(RATE), "--concurrency", "12")
        wait_for("steady load reaches A",
                 lambda: self.counter(A, "http.inbound_http.downstream_rq_completed") >= 30)
        slow = self.loadgen(f"slow-{graceful}", A, SLOW_PORT, "--requests", str(SLOW_REQUESTS),
                            "--concurrency", str(SLOW_REQUESTS))
        wait_for("the slow requests are in flight at A",
                 lambda: self.slow_arrivals() == SLOW_REQUESTS)
        seen = self.terminate_a(graceful=graceful)
        result = steady()
        result["served_by_b"] = self.counter(B, "http.inbound_http.downstream_rq_completed")
        return result, slow(), seen


def test_a_pod_terminated_under_steady_load_drops_no_request(lab: Lab) -> None:
    steady, slow, seen = Cluster(lab).run(graceful=True)
    assert seen.pre_stop_seconds is not None and seen.pre_stop_seconds >= DRAIN_SECONDS, (
        f"the preStop returned after {seen.pre_stop_seconds} s; it must hold for the drain "
        f"time ({DRAIN_SECONDS} s)")
    assert seen.pre_stop_seconds < DRAIN_SECONDS + 5
    assert seen.drain_closed > 0
    assert slow["outcomes"] == {"200": SLOW_REQUESTS}, f"requests in flight at A: {slow}"
    assert steady["outcomes"] == {"200": REQUESTS}, steady
    assert steady["served_by_b"] > 0


def test_without_the_drain_the_same_termination_cuts_the_requests_in_flight(lab: Lab) -> None:
    """The control: SIGTERM alone (Envoy exits at once) fails every request in flight on A."""
    _, slow, seen = Cluster(lab).run(graceful=False)
    assert seen.pre_stop_seconds is None
    assert slow["outcomes"].get("200", 0) == 0, slow

