"""A proxy started from the injected bootstrap: not ready until the control plane configured it,
then ready, serving metrics and the capture listeners, never the admin API off loopback."""

from __future__ import annotations

import sys
import time

import pytest

from injector.sandbox import netns
from tests.support.lab import Lab, Mesh
from tests.support.spec import boot

pytestmark = [pytest.mark.netns, pytest.mark.envoy]


def curl(ns: netns.Netns, url: str) -> tuple[int, str]:
    run = ns.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "2", url],
                 check=False)
    body, _, code = run.stdout.rpartition("\n")
    return int(code or 0), body


def test_the_proxy_is_not_ready_until_the_control_plane_configured_it(mesh: Mesh) -> None:
    pod = mesh.server
    pod.start(boot(), control=mesh.control, with_control_plane=False)
    time.sleep(2)  # long enough for a proxy that did not wait to be LIVE several times over
    # Envoy opens no listener, its own included, before its first config: the kubelet's
    # probe is refused, and the admin API (loopback) says why
    assert curl(pod.ns, "http://127.0.0.1:15021/healthz/ready")[0] in (0, 503)
    assert pod.admin("/ready", check=False).strip() in ("PRE_INITIALIZING", "INITIALIZING")
    assert pod.stats("control_plane.connected_state")["control_plane.connected_state"] == 0
    pod.start_control_plane(mesh.control)
    pod.wait_live()
    assert curl(pod.ns, "http://127.0.0.1:15021/healthz/ready")[0] == 200
    assert "envoy_control_plane_connected_state{} 1" in curl(
        pod.ns, "http://127.0.0.1:15090/stats/prometheus")[1]


def test_a_started_proxy_serves_probes_and_metrics_and_hides_admin(mesh: Mesh) -> None:
    pod = mesh.server
    pod.start(boot(), control=mesh.control)
    ns, ip = pod.ns, pod.ip
    assert "[error]" not in pod.log(), pod.log()
    code, body = curl(ns, "http://127.0.0.1:15090/stats/prometheus")
    assert code == 200 and "envoy_server_live" in body
    assert curl(ns, "http://127.0.0.1:15021/stats")[0] == 404
    # the pod's address reaches readiness and metrics, but the admin API only on loopback
    assert curl(ns, f"http://{ip}:15021/healthz/ready")[0] == 200
    assert curl(ns, f"http://{ip}:15090/stats/prometheus")[0] == 200
    # (captured inbound and passed to nothing: the admin API listens on loopback alone)
    code, body = curl(ns, f"http://{ip}:15000/ready")
    assert code in (0, 503) and "LIVE" not in body
    assert curl(ns, "http://[::1]:15021/healthz/ready")[0] == 200
    assert curl(ns, "http://[::1]:15000/ready")[0] == 0
    assert curl(ns, "http://127.0.0.1:15000/ready")[0] == 200


def test_a_connection_straight_to_a_capture_port_hits_the_loop_guard(lab: Lab) -> None:
    pod = lab.pod("l7srv", "198.18.5.2")
    pod.start(boot(), control=lab.control)
    for host, port in (("127.0.0.1", 15001), ("127.0.0.1", 15006), ("::1", 15001)):
        probe = (f"import socket; s=socket.create_connection(('{host}',{port}),2);"
                 "s.settimeout(2); print(s.recv(10))")
        run = pod.ns.run([sys.executable, "-c", probe], uid=1000, gid=1000, check=False)
        assert run.stdout.strip() == "b''", run.stderr  # closed at once, no loop
    counters = pod.stats()
    assert counters["tcp.outbound_loop.downstream_cx_total"] == 2
    assert counters["tcp.inbound_loop.downstream_cx_total"] == 1
    assert counters["cluster.blackhole.upstream_cx_none_healthy"] == 3


def test_every_xds_resource_the_proxy_got_was_accepted(mesh: Mesh) -> None:
    mesh.start(boot(), boot())
    for pod in (mesh.client, mesh.server):
        stats = pod.stats()
        for kind in ("cluster_manager.cds", "listener_manager.lds"):
            assert stats.get(f"{kind}.update_rejected", 0) == 0
            assert stats[f"{kind}.update_success"] >= 1

