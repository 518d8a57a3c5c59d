"""A pod terminated under steady load drops no request.

The cluster in miniature: a client pod and two server pods (A, B), each with mesh-init capture
and its proxy, routed through a "node" namespace that plays kube-proxy: a Service VIP DNAT-ed to
one endpoint, with conntrack keeping established connections where they were. Terminating A
goes as the kubelet and the endpoints controller do it: A's preStop starts, shortly after the VIP
points to B, then once preStop returns the proxy and the app get SIGTERM. The client's proxy has
pooled keep-alive connections to A: only the drain (Connection: close) moves them to B in time.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from injector.sandbox import netns
from mesh.contract import DRAIN_TIME
from tests.support.lab import HERE, PY, Lab, Pod
from tests.support.spec import boot

pytestmark = [pytest.mark.netns, pytest.mark.envoy, pytest.mark.slow]

VIP = "198.18.7.100"
CLIENT, A, B = "198.18.5.1", "198.18.6.2", "198.18.8.2"
PORT = 8080
REQUESTS, RATE = 1200, 300.0  # four seconds of steady load
PROPAGATION = 0.3  # how long after preStop starts the VIP still sends new connections to A


class Cluster:
    def __init__(self, lab: Lab, drain_time: str) -> None:
        self.node = lab.ns("l7node")
        self.node.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        self.spec = boot(**{DRAIN_TIME: drain_time})
        self.pods: dict[str, Pod] = {}
        for name, ip, role in ((CLIENT, CLIENT, "l7cli"), (A, A, "l7a"), (B, B, "l7b")):
            pod = lab.pod(role, ip)
            gateway = ip.rsplit(".", 1)[0] + ".254"
            netns.veth(pod.ns, self.node, a_addr=f"{ip}/24", b_addr=f"{gateway}/24",
                       b_if=f"v{role}")
            pod.ns.run(["ip", "route", "add", "default", "via", gateway])
            pod.start(self.spec, control=lab.control)
            self.pods[name] = pod
        for ip in (A, B):
            self.pods[ip].start_upstream(PORT, "--delay-ms", "40")
        self.point_vip(A, first=True)

    def point_vip(self, endpoint: str, *, first: bool = False) -> None:
        rule = ["PREROUTING", "-d", VIP, "-p", "tcp", "--dport", str(PORT),
                "-j", "DNAT", "--to-destination", f"{endpoint}:{PORT}"]
        if first:
            self.node.run(["iptables", "-t", "nat", "-A", *rule])
        else:
            self.node.run(["iptables", "-t", "nat", "-R", rule[0], "1", *rule[1:]])

    def terminate_a(self, *, graceful: bool) -> None:
        pod = self.pods[A]
        pre_stop = None
        if graceful:
            # the injected preStop hook, run in the proxy's namespace as the proxy's user
            pre_stop = threading.Thread(target=pod.ns.run, args=(self.spec.pre_stop,),
                                        kwargs={"uid": self.spec.uid, "gid": self.spec.gid,
                                                "timeout": 60})
            pre_stop.start()
        time.sleep(PROPAGATION)
        self.point_vip(B)
        if pre_stop is not None:
            pre_stop.join()
            drained = pod.stats("http.inbound_http.downstream_cx_drain_close")
            assert drained["http.inbound_http.downstream_cx_drain_close"] > 0
        assert pod.proxy is not None
        netns.stop(pod.proxy)
        for proc in pod.procs:
            netns.stop(proc)

    def run(self, *, graceful: bool) -> dict[str, Any]:
        client = self.pods[CLIENT]
        out = client.logdir / f"load-{graceful}.json"
        load = client.spawn(client.ns, [
            PY, str(HERE / "loadgen.py"), "--host", VIP, "--port", str(PORT),
            "--requests", str(REQUESTS), "--rate", str(RATE), "--concurrency", "12",
        ], log_path=str(out))
        time.sleep(1.0)
        self.terminate_a(graceful=graceful)
        load.wait(60)
        result: dict[str, Any] = json.loads(out.read_text().strip().splitlines()[-1])
        result["served_by_b"] = self.pods[B].stats("http.inbound_http.downstream_rq_completed")
        return result


def test_a_pod_terminated_under_steady_load_drops_no_request(lab: Lab) -> None:
    result = Cluster(lab, "2s").run(graceful=True)
    assert result["outcomes"] == {"200": REQUESTS}, result
    assert result["served_by_b"]["http.inbound_http.downstream_rq_completed"] > 0


def test_without_the_drain_the_same_termination_loses_requests(lab: Lab) -> None:
    """The control: SIGTERM alone (Envoy exits at once) fails the requests in flight on A."""
    result = Cluster(lab, "2s").run(graceful=False)
    assert result["outcomes"].get("200", 0) < REQUESTS, result
