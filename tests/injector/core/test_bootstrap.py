"""The bootstrap against the real Envoy: it validates, it starts, and it answers where it should.

Envoy runs inside a network namespace this test creates (``mi-core-<pid>-<n>``), so it can bind
0.0.0.0 without touching the machine's own network; the finalizer kills it by pid and deletes
the namespace even when an assertion fails.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from injector.core import bootstrap
from mesh.envoy import capture
from mesh.overrides.pod import parse_overrides
from tests.support.envoy import need_envoy
from tests.support.pods import CONFIG

_counter = itertools.count()
POD_IP = "198.18.7.2"  # on a veth whose both ends stay inside the test's own namespace

pytestmark = pytest.mark.envoy


def render(annotations: dict[str, str] | None = None) -> str:
    overrides = parse_overrides(annotations or {}, config=CONFIG)
    return bootstrap.bootstrap_text(bootstrap.bootstrap(config=CONFIG, overrides=overrides))


@pytest.fixture(scope="module")
def envoy_bin() -> str:
    return need_envoy()


def listener(config: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        x for x in config["static_resources"]["listeners"] if x["name"] == name)
    return found


def test_the_bootstrap_text_is_deterministic_compact_json() -> None:
    text = render()
    assert text == render()
    assert ": " not in text and ", " not in text
    assert bootstrap.bootstrap_text(json.loads(text)) == text


def test_admin_listens_on_loopback_only_and_captures_on_all_addresses() -> None:
    boot = json.loads(render())
    assert boot["admin"]["address"]["socket_address"] == {"address": "127.0.0.1",
                                                          "port_value": 15000}
    ports = {x["name"]: x["address"]["socket_address"]["port_value"]
             for x in boot["static_resources"]["listeners"]}
    assert ports == {"outbound": 15001, "inbound": 15006, "readiness": 15021, "prometheus": 15090}
    for x in boot["static_resources"]["listeners"]:
        assert x["address"]["socket_address"]["address"] == "0.0.0.0"
        assert x["additional_addresses"][0]["address"]["socket_address"]["address"] == "::"


def test_each_capture_listener_guards_its_own_port_against_loops() -> None:
    boot = json.loads(render())
    for name, port in (("outbound", 15001), ("inbound", 15006)):
        chain = listener(boot, name)["filter_chains"][0]
        assert chain["filter_chain_match"] == {"destination_port": port}
        assert chain["filters"][0]["typed_config"]["cluster"] == capture.BLACKHOLE
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    assert clusters[capture.BLACKHOLE]["load_assignment"]["endpoints"] == []
    assert clusters[capture.INBOUND_PASSTHROUGH]["upstream_bind_config"]["source_address"][
        "address"] == "127.0.0.6"
    assert clusters[capture.OUTBOUND_PASSTHROUGH]["type"] == "ORIGINAL_DST"


def test_tproxy_mode_makes_the_capture_listeners_transparent() -> None:
    boot = json.loads(render({"traffic.meshinject.io/interception-mode": "TPROXY"}))
    assert listener(boot, "outbound")["transparent"] is True
    assert listener(boot, "inbound")["transparent"] is True
    assert "transparent" not in listener(json.loads(render()), "inbound")


@pytest.mark.parametrize("mode", ["REDIRECT", "TPROXY"])
def test_envoy_accepts_the_bootstrap(envoy_bin: str, mode: str) -> None:
    text = render({"traffic.meshinject.io/interception-mode": mode})
    run = subprocess.run(
        [envoy_bin, "--mode", "validate", "--disable-hot-restart", "--config-yaml", text],
        capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "OK" in run.stdout


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    name = f"mi-core-{os.getpid()}-{next(_counter)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "link", "add", "pod0", "type", "veth", "peer", "name", "pod1"],
                    ["ip", "addr", "add", f"{POD_IP}/32", "dev", "pod0"],
                    ["ip", "link", "set", "pod0", "up"]):
            subprocess.run(["ip", "netns", "exec", name, *cmd], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.fixture
def running_envoy(envoy_bin: str, netns: str, tmp_path: Path) -> Iterator[str]:
    """Envoy with the rendered bootstrap in ``netns``; its log is tmp_path/envoy.log."""
    log = (tmp_path / "envoy.log").open("wb")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, envoy_bin, "--config-yaml", render(),
         "--disable-hot-restart", "--log-level", "warning", "--concurrency", "1"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        yield netns
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()


def curl(netns: str, url: str) -> tuple[int, str]:
    run = subprocess.run(
        ["ip", "netns", "exec", netns, "curl", "-s", "-o", "-", "-w", "\n%{http_code}",
         "--max-time", "2", url], capture_output=True, text=True, check=False, timeout=10)
    body, _, code = run.stdout.rpartition("\n")
    return int(code or 0), body


def wait_ready(netns: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if curl(netns, "http://127.0.0.1:15021/healthz/ready")[0] == 200:
            return
        time.sleep(0.1)
    pytest.fail("envoy never became ready on :15021/healthz/ready")


@pytest.mark.netns
def test_a_started_proxy_is_ready_serves_metrics_and_hides_admin(
    running_envoy: str, tmp_path: Path
) -> None:
    ns = running_envoy
    wait_ready(ns)
    log = (tmp_path / "envoy.log").read_text()
    assert "[warning]" not in log and "[error]" not in log, log  # a clean start
    code, body = curl(ns, "http://127.0.0.1:15090/stats/prometheus")
    assert code == 200 and "envoy_server_live" in body
    assert curl(ns, "http://127.0.0.1:15021/stats")[0] == 404
    assert curl(ns, "http://127.0.0.1:15090/ready")[0] == 404
    # the pod's address reaches readiness and metrics, but the admin API only on loopback
    assert curl(ns, f"http://{POD_IP}:15021/healthz/ready")[0] == 200
    assert curl(ns, f"http://{POD_IP}:15090/stats/prometheus")[0] == 200
    assert curl(ns, f"http://{POD_IP}:15000/ready")[0] == 0
    # IPv6 too: mesh-init captures it where the pod has it, and IPv6-only kubelets probe over it
    assert curl(ns, "http://[::1]:15021/healthz/ready")[0] == 200
    assert curl(ns, "http://[::1]:15090/stats/prometheus")[0] == 200
    assert curl(ns, "http://[::1]:15000/ready")[0] == 0
    assert curl(ns, "http://127.0.0.1:15000/ready")[0] == 200


@pytest.mark.netns
def test_a_connection_straight_to_a_capture_port_hits_the_loop_guard(running_envoy: str) -> None:
    ns = running_envoy
    wait_ready(ns)
    for host, port in (("127.0.0.1", 15001), ("127.0.0.1", 15006), ("::1", 15001)):
        probe = (f"import socket; s=socket.create_connection(('{host}',{port}),2);"
                 "s.settimeout(2); print(s.recv(10))")
        run = subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", probe],
                             capture_output=True, text=True, timeout=15, check=False)
        assert run.stdout.strip() == "b''", run.stderr  # closed at once, no loop
    _, stats = curl(ns, "http://127.0.0.1:15000/stats?filter=loop|blackhole")
    counters = dict(line.split(": ", 1) for line in stats.splitlines() if ": " in line)
    assert int(counters["tcp.outbound_loop.downstream_cx_total"]) == 2
    assert int(counters["tcp.inbound_loop.downstream_cx_total"]) == 1
    assert int(counters["cluster.blackhole.upstream_cx_none_healthy"]) == 3


def test_the_l7_module_can_add_chains_after_the_loop_guard_and_before_passthrough() -> None:
    overrides = parse_overrides({}, config=CONFIG)
    http_chain = {"name": "http", "filter_chain_match": {"application_protocols": ["http/1.1"]},
                  "filters": []}
    built = capture.direction_listener(
        "outbound", overrides=overrides, chains=[http_chain],
        listener_filters=[{"name": "envoy.filters.listener.http_inspector"}],
        options={"continue_on_listener_filters_timeout": True})
    assert [c["name"] for c in built["filter_chains"]] == ["outbound-loop-guard", "http"]
    assert [f["name"] for f in built["listener_filters"]] == [
        "envoy.filters.listener.original_dst", "envoy.filters.listener.http_inspector"]
    assert built["continue_on_listener_filters_timeout"] is True
    assert built["default_filter_chain"]["name"] == "outbound-passthrough"
