"""What the demo says about the mesh, from measurements given here (pure; no namespace, no
Envoy): each claim is made when the measurements show it and withheld, with the reason, when
one of them does not."""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest

from injector.sandbox import demo_manifest, demo_mesh, nssocket, wire
from injector.sandbox.demo_mesh import Balance, ProxyView, WireFlow
from injector.sandbox.demo_observe import app_log
from injector.sandbox.plan import build_plan
from mesh.settings import MeshConfig

PLAN = build_plan(demo_manifest.documents(), config=MeshConfig(), namespace="demo")
PODS = {p.name: p for p in PLAN.pods}
FRONTEND, CATALOG = PODS["frontend-0"], PODS["catalog-0"]
SERVERS = [PODS["catalog-0"], PODS["catalog-1"], PODS["reviews-0"]]


def _said(lines: list[str]) -> str:
    return "\n".join(lines)


# -- balancing ----------------------------------------------------------------------------
def _balance(**changes: Any) -> Balance:
    good: dict[str, Any] = {
        "caller": "frontend-0", "service": "catalog", "calls": 300, "connections": 1,
        "answered": {"catalog-0": 150, "catalog-1": 150},
        "counted_in": {"catalog-0": 150, "catalog-1": 150}}
    return Balance(**{**good, **changes})


def test_one_connection_answered_by_both_replicas_is_balanced() -> None:
    said = _said(demo_mesh.balance_lines(_balance()))
    assert "called catalog 300 times over 1 connection" in said
    assert "the replies came from: catalog-0 150, catalog-1 150" in said
    assert f"=> {demo_mesh.BALANCED_CLAIM}" in said


@pytest.mark.parametrize(("change", "why"), [
    ({"connections": 2}, "it opened more than one connection"),
    ({"answered": {"catalog-0": 300}, "counted_in": {"catalog-0": 300, "catalog-1": 0}},
     "not every replica answered"),
    ({"counted_in": {"catalog-0": 150, "catalog-1": 149}},
     "the replies and the replicas' counters disagree"),
], ids=["two-connections", "one-replica-only", "counters-disagree"])
def test_balancing_not_measured_is_not_claimed(change: dict[str, Any], why: str) -> None:
    said = _said(demo_mesh.balance_lines(_balance(**change)))
    assert demo_mesh.BALANCED_CLAIM not in said and f"not shown: {why}" in said


# -- mutual TLS -----------------------------------------------------------------------------
def _flow(*payloads: bytes) -> wire.Flow:
    flow = wire.Flow()
    for payload in payloads:
        flow.add(payload)
    return flow


HELLO, APPDATA = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc", b"\x17\x03\x03\x00\x40" + b"\x8a" * 64
PLAIN = b"GET / HTTP/1.1\r\nHost: frontend.demo\r\n\r\n"


def _cert(server: str, client: str) -> str:
    return (f"By=spiffe://cluster.local/ns/demo/sa/{server};Hash=ab12;"
            f"URI=spiffe://cluster.local/ns/demo/sa/{client}")


def _tls(*, mesh: list[wire.Flow] | None = None, outside: wire.Flow | None = None,
         certs: dict[str, list[str]] | None = None) -> str:
    flows = mesh or [_flow(HELLO, APPDATA), _flow(HELLO.replace(b"\x03\x01", b"\x03\x03"))]
    good_certs = {"catalog-0": [_cert("catalog", "frontend")],
                  "catalog-1": [_cert("catalog", "frontend")],
                  "reviews-0": [_cert("reviews", "frontend")]}
    return _said(demo_mesh.tls_lines(
        caller=FRONTEND, servers=SERVERS, certs=good_certs if certs is None else certs,
        mesh=[WireFlow(f"flow {i}", f) for i, f in enumerate(flows)],
        outside=[WireFlow("node -> frontend-0:8080", outside or _flow(PLAIN))]))


def test_tls_records_only_and_the_right_identities_are_mutual_tls() -> None:
    said = _tls()
    assert f"=> {demo_mesh.TLS_CLAIM}" in said
    assert ("catalog-0  By=spiffe://cluster.local/ns/demo/sa/catalog  "
            "URI=spiffe://cluster.local/ns/demo/sa/frontend") in said
    assert "0 with HTTP in clear; the first: 16 03 01 (TLS handshake)" in said
    assert "1 with HTTP in clear; the first: 47 45 54 (not a TLS record)" in said


@pytest.mark.parametrize("kwargs", [
    {"mesh": [_flow(HELLO, PLAIN), _flow(HELLO)]},
    {"mesh": [_flow(PLAIN), _flow(HELLO)]},
    {"mesh": [wire.Flow(), _flow(HELLO)]},
    {"certs": {"catalog-0": [_cert("catalog", "reviews")], "catalog-1": [_cert("catalog",
               "frontend")], "reviews-0": [_cert("reviews", "frontend")]}},
    {"certs": {"catalog-0": [_cert("frontend", "frontend")]}},
    {"outside": _flow(HELLO)},
], ids=["http-in-clear-after-a-handshake", "plaintext-only", "nothing-captured",
        "a-wrong-caller-identity", "a-server-without-a-header", "a-capture-blind-to-plaintext"])
def test_anything_short_of_tls_and_identities_is_not_claimed(kwargs: dict[str, Any]) -> None:
    said = _tls(**kwargs)
    assert demo_mesh.TLS_CLAIM not in said and "not shown" in said


def test_a_client_cert_header_splits_into_its_fields() -> None:
    assert demo_mesh.client_cert(_cert("catalog", "frontend")) == {
        "By": "spiffe://cluster.local/ns/demo/sa/catalog", "Hash": "ab12",
        "URI": "spiffe://cluster.local/ns/demo/sa/frontend"}


def test_a_tcp_segment_is_read_from_an_ipv4_packet() -> None:
    tcp = struct.pack("!HHIIBBHHH", 40000, 8080, 1, 0, 5 << 4, 0x18, 512, 0, 0) + HELLO
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, socket.IPPROTO_TCP, 0,
                     socket.inet_aton("198.18.0.10"), socket.inet_aton("198.18.0.11"))
    assert wire.segment(ip + tcp + b"\0" * 6) == ("198.18.0.10", 40000, "198.18.0.11", 8080,
                                                 HELLO)  # Ethernet padding cut off
    assert wire.segment(ip[:9] + bytes([socket.IPPROTO_UDP]) + ip[10:] + tcp) is None
    assert wire.record_kind(APPDATA) == "TLS application data"
    assert wire.record_kind(PLAIN) == "not a TLS record"


# -- a live config change -------------------------------------------------------------------
def _view(acked: str, *, pid: int = 100, restarts: int = 0, timeout: str = "3s",
          current: bool = True) -> ProxyView:
    return ProxyView(acked={"Listener": "l1", "RouteConfiguration": acked}, current=current,
                     pid=pid, restarts=restarts, timeout=timeout)


def _change(**after: ProxyView) -> str:
    before = {p: _view("r1", timeout="0s") for p in ("frontend-0", "catalog-0")}
    now = {p: _view("r2") for p in before} | after
    return _said(demo_mesh.change_lines(field="traffic.timeout", old="0s", new="3s", took=0.4,
                                        before=before, after=now, route="catalog:80"))


def test_a_new_version_acked_and_run_by_the_same_envoys_is_a_live_change() -> None:
    said = _change()
    assert "frontend-0  RouteConfiguration r1 -> r2" in said
    assert "timeout 0s -> 3s, pid 100 -> 100" in said
    assert demo_mesh.LIVE_CLAIM in said


@pytest.mark.parametrize(("after", "why"), [
    ({"catalog-0": _view("r1", timeout="0s")}, "a proxy did not ACK a new version"),
    ({"catalog-0": _view("r2", current=False)}, "a proxy did not ACK a new version"),
    ({"catalog-0": _view("r2", timeout="0s")}, "an Envoy does not run the new timeout"),
    ({"catalog-0": _view("r2", pid=101)}, "an Envoy was restarted"),
    ({"catalog-0": _view("r2", restarts=1)}, "an Envoy was restarted"),
], ids=["not-acked", "not-current", "not-running-it", "another-pid", "restarted"])
def test_a_change_not_acked_run_or_without_restart_is_not_claimed(after: dict[str, ProxyView],
                                                                  why: str) -> None:
    said = _change(**after)
    assert demo_mesh.LIVE_CLAIM not in said and f"not shown: {why}" in said


# -- a policy --------------------------------------------------------------------------------
def test_a_policy_is_claimed_only_when_one_caller_is_denied_and_the_other_allowed() -> None:
    kwargs: dict[str, Any] = {"name": "demo/catalog-callers", "target": "catalog.demo",
                              "allowed": "demo/frontend"}
    said = _said(demo_mesh.policy_lines(calls={"frontend-0": 200, "reviews-0": 403}, **kwargs))
    assert "reviews-0 -> catalog.demo: 403" in said and demo_mesh.POLICY_CLAIM in said
    said = _said(demo_mesh.policy_lines(calls={"frontend-0": 200, "reviews-0": 200}, **kwargs))
    assert demo_mesh.POLICY_CLAIM not in said and "not shown" in said


# -- what the apps and Envoy's admin write --------------------------------------------------
def test_an_app_log_gives_who_answered_each_call_over_how_many_connections() -> None:
    log = app_log("call catalog:80/items -> 200 catalog-0 1\n"
                  "call catalog:80/items -> 200 catalog-1 1\n"
                  "call catalog:80/items -> 599 - 2\n"
                  f"client-cert {_cert('catalog', 'frontend')}\n")
    assert log.calls["catalog"] == 3 and log.connections["catalog"] == 2
    assert log.answered_by["catalog"] == {"catalog-0": 1, "catalog-1": 1}
    assert log.client_certs == [_cert("catalog", "frontend")]


def test_a_chunked_admin_answer_is_joined() -> None:
    assert nssocket.dechunk(b"4\r\n{\"a\"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\n\r\n") == b'{"a": 1}'
