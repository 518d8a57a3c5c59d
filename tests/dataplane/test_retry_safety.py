"""The default retry policy rides out an app that is not listening, and retries nothing unsafe.

When the server pod's app is not listening (it is restarting, or not up yet), the server's proxy
answers 503 with response flag UF: it failed to connect to its app. The client's proxy connected
fine, so its own ``connect-failure`` never fired and it did not retry. Now the server's proxy
marks such an answer (``meshinject-not-delivered``) and the client's proxy retries it as a
connect failure, on a new connection, which behind a Service may reach another endpoint. What
the app may have received (a request it answered 503 itself, or one it crashed on) is never
retried by the defaults, whatever the method.

The cluster in miniature: a client pod and two server pods (A, B) routed through a "node"
namespace whose Service VIP is DNAT-ed round robin per new connection (as kube-proxy's IPVS mode
does by default).
"""

from __future__ import annotations

import pytest

from injector.sandbox import netns
from mesh.contract import NOT_DELIVERED_HEADER
from tests.support.lab import SERVER_IP, Lab, Mesh, Pod
from tests.support.spec import boot

pytestmark = [pytest.mark.netns, pytest.mark.envoy, pytest.mark.slow]

VIP = "198.18.7.100"
CLIENT, A, B = "198.18.5.1", "198.18.6.2", "198.18.8.2"
PORT = 8080
REQUESTS = 40


def routed_pod(lab: Lab, node: netns.Netns, role: str, ip: str) -> Pod:
    pod = lab.pod(role, ip)
    gateway = ip.rsplit(".", 1)[0] + ".254"
    netns.veth(pod.ns, node, a_addr=f"{ip}/24", b_addr=f"{gateway}/24", b_if=f"v{role}")
    pod.ns.run(["ip", "route", "add", "default", "via", gateway])
    pod.start(boot(), control=lab.control)
    return pod


def test_a_replica_whose_app_is_not_listening_is_retried_elsewhere_and_the_client_sees_no_503(
    lab: Lab,
) -> None:
    node = lab.ns("rtnode")
    node.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    client, a, b = (routed_pod(lab, node, role, ip)
                    for role, ip in (("rtcli", CLIENT), ("rta", A), ("rtb", B)))
    a.start_upstream(PORT)  # B's proxy runs, its app is not listening (restarting)
    match = ["PREROUTING", "-d", VIP, "-p", "tcp", "--dport", str(PORT)]
    node.run(["iptables", "-t", "nat", "-A", *match, "-m", "statistic", "--mode", "nth",
              "--every", "2", "--packet", "0", "-j", "DNAT", "--to-destination", f"{A}:{PORT}"])
    node.run(["iptables", "-t", "nat", "-A", *match, "-j", "DNAT", "--to-destination",
              f"{B}:{PORT}"])

    result = client.load(VIP, PORT, "--requests", str(REQUESTS), "--new-connection")

    assert result["outcomes"] == {"200": REQUESTS}, result
    not_delivered = b.stats("cluster.inbound_http.upstream_cx_connect_fail")
    assert not_delivered["cluster.inbound_http.upstream_cx_connect_fail"] >= REQUESTS // 2
    retried = client.stats("cluster.outbound_http.upstream_rq_retry")
    assert retried["cluster.outbound_http.upstream_rq_retry"] >= REQUESTS // 2, retried
    assert retried["cluster.outbound_http.upstream_rq_retry_success"] >= REQUESTS // 2
    served = a.stats("http.inbound_http.downstream_rq_2xx")
    assert served["http.inbound_http.downstream_rq_2xx"] == REQUESTS


def test_each_request_to_an_app_not_listening_is_retried_and_the_caller_never_sees_the_marker(
    mesh: Mesh,
) -> None:
    mesh.start(boot(), boot())
    result = mesh.client.load(SERVER_IP, PORT, "--requests", "3")
    assert result["outcomes"] == {"503": 3}  # nothing listens at all: 3 tries each, then 503
    stats = mesh.client.stats("cluster.outbound_http.upstream_rq_retry")
    assert stats["cluster.outbound_http.upstream_rq_retry"] == 3 * 2  # the default 2 retries
    shown = mesh.client.ns.run(["curl", "-si", f"http://{SERVER_IP}:{PORT}/"]).stdout
    assert shown.startswith("HTTP/1.1 503") and NOT_DELIVERED_HEADER not in shown.lower()
    # a caller without a proxy sees why: the server's proxy could not connect to its app (UF)
    direct = mesh.server.ns.run(["curl", "-si", f"http://{SERVER_IP}:{PORT}/"]).stdout
    assert f"{NOT_DELIVERED_HEADER}: uf" in direct.lower()


@pytest.mark.parametrize("app", [
    pytest.param(["--reset-after-read"], id="the app crashed while handling it"),
    pytest.param(["--status", "503", "--header", f"{NOT_DELIVERED_HEADER}:UF"],
                 id="the app answered 503 itself, claiming it was not delivered"),
])
def test_a_post_the_app_received_is_not_retried(mesh: Mesh, app: list[str]) -> None:
    mesh.start(boot(), boot())
    mesh.server.start_upstream(PORT, *app)
    requests = 5
    result = mesh.client.load(SERVER_IP, PORT, "--requests", str(requests), "--method", "POST")
    assert set(result["outcomes"]) == {"503"} and result["outcomes"]["503"] == requests, result
    received = int(mesh.server.ns.run(["curl", "-s", f"127.0.0.1:{PORT}/_count"]).stdout)
    assert received == requests  # each POST reached the app exactly once
    stats = mesh.client.stats("cluster.outbound_http.upstream_rq_retry")
    assert stats.get("cluster.outbound_http.upstream_rq_retry", 0) == 0
