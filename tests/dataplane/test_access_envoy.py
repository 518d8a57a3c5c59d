"""The RBAC filters in a real Envoy on loopback agree with ``mesh.access.decide``, request by
request, and count what they decide per policy.

One Envoy plays a pod's inbound side: HTTP and TCP listeners on two ports each, PERMISSIVE ones
(a mutual-TLS chain and a plaintext chain) and a STRICT one (mutual TLS only), each chain with
the filters of :mod:`mesh.envoy.rbac` for the pod's policies, in front of a small app. Callers
present SVIDs from :func:`mesh.pki.certs.issue_svid` (a URI SAN per service account) or none.
Every request of the table goes to Envoy and to ``decide``: 200 or 403 (HTTP), an echo or a
closed connection (TCP) must be what ``decide`` says, the app must see exactly the allowed
requests (with the path ``normalize`` predicts), and the per-policy counters must count them.
"""

from __future__ import annotations

import datetime as dt
import http.server
import socket
import socketserver
import ssl
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mesh.access import AccessPolicy, decide, normalize
from mesh.envoy import rbac
from mesh.envoy.base import EXTENSIONS, HTTP_CONNECTION_MANAGER, ROUTER, TCP_PROXY
from mesh.overrides.values import MtlsMode
from mesh.pki import certs
from mesh.pki.spiffe import spiffe_id
from tests.support.accesspolicies import load, policy_obj
from tests.support.envoy import RunningEnvoy, free_ports, run_static

pytestmark = pytest.mark.envoy
TD = "cluster.local"
DAY = dt.timedelta(hours=24)
TLS = EXTENSIONS + "transport_sockets.tls.v3.DownstreamTlsContext"
TLS_INSPECTOR = EXTENSIONS + "filters.listener.tls_inspector.v3.TlsInspector"
CALLERS = [("shop", "frontend"), ("shop", "mobile"), ("shop", "other"), ("ops", "ci"),
           ("ops-admin", "ci"), None]


@dataclass(frozen=True)
class Ports:
    http_a: int
    http_b: int
    tcp_c: int
    tcp_d: int
    strict_http: int
    app_http: int
    app_tcp: int


def policies(p: Ports) -> list[AccessPolicy]:
    """The pod's policies: one per caller, a mixed one of three rules, and a deny-all."""
    return load(
        policy_obj("frontend-only", {"allow": [{"from": {"serviceAccounts": ["shop/frontend"]}}]}),
        policy_obj("web.api", {"allow": [
            {"from": {"serviceAccounts": ["shop/mobile"]},
             "to": {"ports": [p.http_a, p.strict_http], "methods": ["GET", "HEAD"],
                    "paths": ["/api/*", "/version"]}},
            {"from": {"namespaces": ["ops"]}, "to": {"ports": [p.tcp_c, p.http_b]}},
            {"to": {"ports": [p.http_a], "paths": ["/healthz"]}}]}),
        policy_obj("deny-all", {"allow": []}),
    )


# -- the pod: Envoy in front of an app ------------------------------------------------------
class _Echo(http.server.BaseHTTPRequestHandler):
    seen: list[str]

    def _answer(self) -> None:
        self.seen.append(self.path)
        body = self.path.encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _answer

    def log_message(self, *_: Any) -> None:
        pass


class _TcpEcho(socketserver.BaseRequestHandler):
    accepted: list[int]

    def handle(self) -> None:
        self.accepted.append(1)
        data = self.request.recv(100)
        if data:
            self.request.sendall(data)


@dataclass
class Pod:
    envoy: RunningEnvoy
    ports: Ports
    http_seen: list[str]
    tcp_accepted: list[int]
    root: bytes
    svids: dict[tuple[str, str], certs.CertPair]
    tmp: Path
    contexts: dict[tuple[str, str], ssl.SSLContext] = field(default_factory=dict)


def _tls_chain(filters: list[Any], server: certs.CertPair, root: bytes) -> dict[str, Any]:
    return {"filter_chain_match": {"transport_protocol": "tls"}, "filters": filters,
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": TLS, "require_client_certificate": True, "common_tls_context": {
                    "tls_certificates": [{
                        "certificate_chain": {"inline_string": server.cert_pem.decode()},
                        "private_key": {"inline_string": server.key_pem.decode()}}],
                    "validation_context": {"trusted_ca": {"inline_string": root.decode()}}}}}}


def bootstrap(p: Ports, pols: list[AccessPolicy], server: certs.CertPair, root: bytes
              ) -> dict[str, Any]:
    http = rbac.http_filters(pols, trust_domain=TD)
    hcm = [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": HTTP_CONNECTION_MANAGER, "stat_prefix": "inbound_http", **rbac.HCM_PATH_OPTIONS,
        "http_filters": [*http, {"name": "envoy.filters.http.router",
                                "typed_config": {"@type": ROUTER}}],
        "route_config": {"virtual_hosts": [{"name": "app", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "app_http"}}]}]}}}]
    tcp = [*rbac.network_filters(pols, trust_domain=TD),
           {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
               "@type": TCP_PROXY, "stat_prefix": "inbound", "cluster": "app_tcp",
               **rbac.TCP_PROXY_OPTIONS}}]

    def listener(port: int, filters: list[Any], *, strict: bool = False) -> dict[str, Any]:
        chains = [_tls_chain(filters, server, root)]
        if not strict:
            chains.append({"filter_chain_match": {"transport_protocol": "raw_buffer"},
                           "filters": filters})
        return {"name": f"in_{port}", "address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": port}},
                "listener_filters": [{"name": "envoy.filters.listener.tls_inspector",
                                      "typed_config": {"@type": TLS_INSPECTOR}}],
                "filter_chains": chains}

    def cluster(name: str, port: int) -> dict[str, Any]:
        return {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
            "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}

    return {"static_resources": {
        "listeners": [listener(p.http_a, hcm), listener(p.http_b, hcm),
                      listener(p.strict_http, hcm, strict=True),
                      listener(p.tcp_c, tcp), listener(p.tcp_d, tcp)],
        "clusters": [cluster("app_http", p.app_http), cluster("app_tcp", p.app_tcp)]}}


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    tmp = tmp_path_factory.mktemp("access")
    ports = Ports(*free_ports(7))
    ca = certs.generate_ca("test mesh root")
    server = certs.issue_svid(ca, spiffe_id=spiffe_id(TD, "shop", "web"), lifetime=DAY)
    svids = {c: certs.issue_svid(ca, spiffe_id=spiffe_id(TD, *c), lifetime=DAY)
             for c in CALLERS if c is not None}
    seen: list[str] = []
    accepted: list[int] = []
    handler = type("Echo", (_Echo,), {"seen": seen})
    tcp_handler = type("TcpEcho", (_TcpEcho,), {"accepted": accepted})
    app = http.server.ThreadingHTTPServer(("127.0.0.1", ports.app_http), handler)
    app_tcp = socketserver.ThreadingTCPServer(("127.0.0.1", ports.app_tcp), tcp_handler)
    for srv in (app, app_tcp):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with run_static(bootstrap(ports, policies(ports), server, ca.cert_pem), tmp) as envoy:
            yield Pod(envoy, ports, seen, accepted, ca.cert_pem, svids, tmp)
    finally:
        for srv in (app, app_tcp):
            srv.shutdown()
            srv.server_close()


# -- callers ------------------------------------------------------------------------------
def _connect(pod: Pod, caller: tuple[str, str] | None, port: int) -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    if caller is None:
        return raw
    ctx = pod.contexts.get(caller)
    if ctx is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False  # mesh peers are verified by SPIFFE ID, not host name
        ctx.load_verify_locations(cadata=pod.root.decode())
        pem = pod.tmp / f"{caller[0]}-{caller[1]}.pem"
        pem.write_bytes(pod.svids[caller].cert_pem + pod.svids[caller].key_pem)
        ctx.load_cert_chain(pem)
        pod.contexts[caller] = ctx
    return ctx.wrap_socket(raw)


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except (ConnectionError, ssl.SSLError, TimeoutError):
        pass
    return data


def _read_reply(sock: socket.socket, *, head_only: bool) -> bytes:
    """One HTTP/1.1 response (head and content-length body), without waiting for the close
    (Envoy delays closing after a local reply, for the client to close first)."""
    data = b""
    try:
        while b"\r\n\r\n" not in data and (chunk := sock.recv(4096)):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0) * (not head_only)
        while len(body) < length and (chunk := sock.recv(4096)):
            body += chunk
    except (ConnectionError, ssl.SSLError, TimeoutError):
        pass
    return data


def http_status(pod: Pod, caller: tuple[str, str] | None, port: int, method: str, path: str
                ) -> int:
    """The status Envoy answers, 0 when the connection is refused or closed without one."""
    try:
        with _connect(pod, caller, port) as sock:
            sock.sendall(f"{method} {path} HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n"
                         .encode())
            reply = _read_reply(sock, head_only=method == "HEAD")
    except (ConnectionError, ssl.SSLError):
        return 0
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0


def tcp_echoes(pod: Pod, caller: tuple[str, str] | None, port: int) -> bool:
    """True when the connection carries bytes to the app and back; False when Envoy closes it."""
    try:
        with _connect(pod, caller, port) as sock:
            sock.sendall(b"ping\n")
            return _read_all(sock) == b"ping\n"
    except (ConnectionError, ssl.SSLError):
        return False


HTTP_REQUESTS = [("GET", "/"), ("GET", "/api/orders"), ("HEAD", "/version"), ("POST", "/api/x"),
                 ("GET", "/healthz"), ("GET", "/healthz?full=1"), ("GET", "/api"),
                 ("GET", "/api/..%2Fadmin"), ("GET", "/x/../api/1"), ("GET", "//api//%6Frders")]


def table(p: Ports) -> list[tuple[str, tuple[str, str] | None, int, str | None, str | None,
                                  MtlsMode]]:
    rows: list[tuple[str, tuple[str, str] | None, int, str | None, str | None, MtlsMode]] = []
    for caller in CALLERS:
        for port, mode in ((p.http_a, "PERMISSIVE"), (p.http_b, "PERMISSIVE"),
                           (p.strict_http, "STRICT")):
            rows += [("http", caller, port, m, path, mode) for m, path in HTTP_REQUESTS]
        rows += [("tcp", caller, port, None, None, "PERMISSIVE") for port in (p.tcp_c, p.tcp_d)]
    return rows


def test_envoy_enforces_exactly_what_decide_says_and_counts_it_per_policy(pod: Pod) -> None:
    pols, p = policies(pod.ports), pod.ports
    rows = table(p)
    http_allowed = tcp_allowed = 0
    credited: Counter[str] = Counter()
    disagreements = []
    for kind, caller, port, method, path, mode in rows:
        decision = decide(pols, mode=mode, caller=caller, port=port, method=method, path=path)
        if kind == "http":
            assert method is not None and path is not None
            before = len(pod.http_seen)
            status = http_status(pod, caller, port, method, path)
            want = 200 if decision.allowed else (0 if decision.policy is None and mode ==
                                                 "STRICT" and caller is None else 403)
            if status != want:
                disagreements.append((caller, port, method, path, status, decision.reason))
            elif decision.allowed:
                http_allowed += 1
                credited[str(decision.policy)] += 1
                got = [seen.split("?", 1)[0] for seen in pod.http_seen[before:]]
                assert got == [normalize(path)], (path, got)  # the app sees what RBAC saw
        else:
            if tcp_echoes(pod, caller, port) != decision.allowed:
                disagreements.append((caller, port, None, None, "tcp", decision.reason))
            tcp_allowed += decision.allowed
    assert not disagreements, "\n".join(map(str, disagreements))
    assert len(pod.tcp_accepted) == tcp_allowed  # a denied connection never reaches the app

    stats = pod.envoy.stats()
    http_rows = [r for r in rows if r[0] == "http" and not (r[5] == "STRICT" and r[1] is None)]
    assert stats["http.inbound_http.rbac.accesspolicy.allowed"] == http_allowed
    assert stats["http.inbound_http.rbac.accesspolicy.denied"] == len(http_rows) - http_allowed
    by_policy = Counter[str]()
    for name, value in stats.items():
        prefix = "http.inbound_http.rbac.accesspolicy.policy."
        if name.startswith(prefix) and name.endswith(".allowed"):
            envoy_name = name[len(prefix):-len(".allowed")]
            by_policy[envoy_name.split("#")[0]] += value
    assert by_policy == Counter({p.counter_name: credited[p.key] for p in pols
                                 if credited[p.key]})

    for policy in pols:  # what each policy alone allows and denies, over HTTP too
        alone = sum(decide([policy], mode=mode, caller=c, port=port, method=m, path=path).allowed
                    for _, c, port, m, path, mode in http_rows)
        assert stats[f"http.inbound_http.rbac.{policy.counter_name}.shadow_allowed"] == alone
        assert stats[f"http.inbound_http.rbac.{policy.counter_name}.shadow_denied"] == len(
            http_rows) - alone, policy.key

    tcp_rows = [r for r in rows if r[0] == "tcp"]
    assert stats["accesspolicy.rbac.allowed"] == tcp_allowed
    assert stats["accesspolicy.rbac.denied"] == len(tcp_rows) - tcp_allowed
    for policy in pols:
        alone = sum(decide([policy], mode="PERMISSIVE", caller=c, port=port, method=None,
                           path=None).allowed for _, c, port, _, _, _ in tcp_rows)
        assert stats[f"{policy.counter_name}.rbac.shadow_allowed"] == alone, policy.key
        assert stats[f"{policy.counter_name}.rbac.shadow_denied"] == len(tcp_rows) - alone


def test_prometheus_shows_allows_per_policy_and_denials_per_pod(pod: Pod) -> None:
    """What a user's dashboard reads: labels, not names, carry the policy."""
    for caller, path in ((("shop", "frontend"), "/"), (("shop", "other"), "/"),
                         (None, "/healthz")):
        http_status(pod, caller, pod.ports.http_a, "GET", path)
    tcp_echoes(pod, ("ops", "ci"), pod.ports.tcp_c)
    text = pod.envoy.admin("/stats/prometheus")
    # the parser calls a counter's sample NAME_total; Envoy's text has NAME
    samples = {(s.name.removesuffix("_total"), tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert "\nenvoy_http_rbac_policy_allowed{" in text
    hcm = ("envoy_http_conn_manager_prefix", "inbound_http")
    prefix = ("envoy_rbac_http_prefix", "accesspolicy")
    assert samples[("envoy_http_rbac_policy_allowed", (
        hcm, prefix, ("envoy_rbac_policy_name", "shop/frontend-only")))] >= 1
    assert samples[("envoy_http_rbac_policy_allowed", (
        hcm, prefix, ("envoy_rbac_policy_name", "shop/web_api")))] >= 1
    assert samples[("envoy_http_rbac_denied", (hcm, prefix))] >= 1
    assert samples[("envoy_rbac_allowed", (("envoy_rbac_prefix", "accesspolicy"),))] >= 1
    assert samples[("envoy_rbac_shadow_allowed", (("envoy_rbac_prefix", "shop/web_api"),))] >= 1
    assert samples[("envoy_rbac_shadow_denied", (("envoy_rbac_prefix", "shop/deny-all"),))] >= 1
    assert samples[("envoy_http_rbac_shadow_denied", (
        hcm, ("envoy_rbac_http_prefix", "shop/frontend-only")))] >= 1
    # no policy's name leaks into a metric name (a "." would cut the label short)
    assert not [n for n, _ in samples if "shop" in n or "web_api" in n]
