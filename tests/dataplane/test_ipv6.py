"""IPv6 and dual-stack traffic both ways through injected pods, REDIRECT and TPROXY.

Two pods (the lab's client and server), each with the injected mesh-init and Envoy, joined by a
veth carrying IPv6 addresses from 2001:2::/48 (the IPv6 benchmarking range, as 198.18.0.0/15 is
for IPv4), alone or beside the lab's IPv4 ones. Each pod runs an HTTP app (dual-stack, logging
its peers) and a server-first TCP app on an opaque port, and each calls the other's, so every
request crosses one pod's outbound capture and the other's inbound. Envoy's counters prove the
path: no bind errors, and exactly one inbound connection per client connection (before mesh-init
assigned ``::6`` to lo, every inbound IPv6 request got 503 with a bind error, and one connection
on an opaque port became 1,025 through the "proxy to own pod address" rule).
"""

from __future__ import annotations

import time

import pytest

from injector.sandbox import netns
from mesh.contract import INBOUND_SOURCE6, INTERCEPTION_MODE
from tests.support.lab import CLIENT_IP, PY, SERVER_IP, Lab, Pod
from tests.support.spec import boot

pytestmark = [pytest.mark.netns, pytest.mark.envoy, pytest.mark.slow]

CLIENT6, SERVER6 = "2001:2::1", "2001:2::2"
HTTP_PORT, OPAQUE_PORT = 8080, 3306  # 3306 is one of the default opaque ports
BANNER = (
    "import socket,sys\n"
    "s=socket.create_connection((sys.argv[1],int(sys.argv[2])),5); s.settimeout(5)\n"
    "first=s.recv(100); s.sendall(b'hi\\n'); print(first.decode().strip(), s.recv(100).decode())\n"
)
LOOP_GUARD = "listener.0.0.0.0_15006.downstream_cx_total"  # v4 and v6 addresses count together


def url(host: str) -> str:
    return f"http://[{host}]:{HTTP_PORT}/" if ":" in host else f"http://{host}:{HTTP_PORT}/"


def pods(lab: Lab, *, dual: bool, mode: str) -> tuple[Pod, Pod]:
    client, server = lab.pod("v6cli", CLIENT_IP), lab.pod("v6srv", SERVER_IP)
    if dual:
        netns.veth(client.ns, server.ns, a_addr=f"{CLIENT_IP}/24", b_addr=f"{SERVER_IP}/24",
                   a_addr6=f"{CLIENT6}/64", b_addr6=f"{SERVER6}/64")
    else:
        netns.veth(client.ns, server.ns, a_addr=f"{CLIENT6}/64", b_addr=f"{SERVER6}/64")
    spec = boot(**{INTERCEPTION_MODE: mode})
    for pod in (client, server):
        pod.start(spec, control=lab.control)
        app = pod.spawn(pod.ns, [PY, "-m", "http.server", "--bind", "::", str(HTTP_PORT)],
                        uid=1000, gid=1000, log_path=str(pod.logdir / f"app-{pod.ns.name}.log"))
        pod.procs.append(app)
        pod.ns.wait_for_port(HTTP_PORT, host="::1")
        pod.start_upstream(OPAQUE_PORT, "--host", "", "--banner")
    return client, server


def call(caller: Pod, host: str) -> tuple[str, str]:
    code = caller.ns.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time",
                          "5", url(host)], check=False).stdout
    banner = caller.ns.run([PY, "-c", BANNER, host, str(OPAQUE_PORT)], check=False).stdout
    return code, banner.strip()


@pytest.mark.parametrize("mode", ["REDIRECT", "TPROXY"])
@pytest.mark.parametrize("dual", [False, True], ids=["ipv6-only", "dual-stack"])
def test_ipv6_and_dual_stack_traffic_passes_both_ways_with_one_inbound_connection_each(
    lab: Lab, dual: bool, mode: str
) -> None:
    client, server = pods(lab, dual=dual, mode=mode)
    for pod in (client, server):
        shown = pod.ns.run(["ip", "-6", "addr", "show", "dev", "lo"]).stdout
        assert f"{INBOUND_SOURCE6}/128" in shown  # mesh-init assigned it
    routes = [(client, server, SERVER6), (server, client, CLIENT6)]
    if dual:
        routes += [(client, server, SERVER_IP), (server, client, CLIENT_IP)]
    calls: dict[str, int] = {}
    for caller, callee, host in routes:
        assert call(caller, host) == ("200", "220 hello from a server-first protocol echo hi")
        calls[callee.ns.name] = calls.get(callee.ns.name, 0) + 2  # one HTTP, one opaque
    time.sleep(0.5)  # let the last connections close before counting
    for pod in (client, server):
        stats = pod.stats("cluster.inbound")
        assert not {k: v for k, v in stats.items() if k.endswith("bind_errors") and v}, stats
        inbound = pod.stats(LOOP_GUARD)[LOOP_GUARD]
        assert inbound == calls[pod.ns.name], f"{pod.ns.name}: {inbound} inbound connections"
        outbound = pod.stats("listener.0.0.0.0_15001.downstream_cx_total")
        assert outbound["listener.0.0.0.0_15001.downstream_cx_total"] == calls[pod.ns.name]
        log = (pod.logdir / f"app-{pod.ns.name}.log").read_text()
        assert f"{INBOUND_SOURCE6} - -" in log  # the app saw the inbound passthrough's source
        assert CLIENT6 not in log and SERVER6 not in log


def test_a_pod_missing_the_ipv6_source_cannot_loop_one_connection_into_a_thousand(
    lab: Lab,
) -> None:
    client, server = pods(lab, dual=False, mode="REDIRECT")
    server.ns.run(["ip", "-6", "addr", "del", f"{INBOUND_SOURCE6}/128", "dev", "lo"])
    probe = client.spawn(client.ns, [PY, "-c", BANNER, SERVER6, str(OPAQUE_PORT)])
    time.sleep(1.5)  # the loop made its 1,024 connections in well under a second
    netns.stop(probe)
    assert server.stats(LOOP_GUARD)[LOOP_GUARD] == 1
    passthrough = server.stats("cluster.inbound-passthrough.")
    assert passthrough["cluster.inbound-passthrough.upstream_cx_total"] == 1
    assert not passthrough.get("cluster.inbound-passthrough.bind_errors")
