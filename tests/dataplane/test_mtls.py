"""Mutual TLS between real proxies, configured by the real control plane.

Pods around a node (tests/support/lab.py ``star``): a meshed client, a meshed server running
as service account ``web`` behind the Service ``web``, and ``outside``, a pod without a proxy.
The wire is read on the server's link in the node namespace (tests/support/capture.py).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from typing import Any

import pytest

from controlplane.identity.ca import MeshCA
from mesh.contract import MTLS_MODE
from mesh.pki import certs
from tests.support.capture import Capture, payload
from tests.support.lab import NAMESPACE, PY, RAW_TCP, Lab, Pod
from tests.support.spec import boot

pytestmark = [pytest.mark.netns, pytest.mark.envoy]

CLIENT, SERVER, OUTSIDE = "198.18.5.1", "198.18.6.2", "198.18.8.3"
VIP, PORT, TARGET = "198.19.7.20", 80, 8080
TCP_PORT = 81  # the same app as opaque TCP: one upstream connection per client connection
WEB_ID = "spiffe://cluster.local/ns/l7/sa/web"
CLIENT_ID = "spiffe://cluster.local/ns/l7/sa/default"

CALLS = """
import http.client, json, sys, time
host, port, count, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
path, fresh = sys.argv[5], sys.argv[6] == "fresh"
seen = []
conn = http.client.HTTPConnection(host, port, timeout=5)
for _ in range(count):
    if fresh:
        conn.close()
        conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse(); r.read()
        seen.append([r.status, r.getheader("x-echo-x-forwarded-client-cert") or ""])
    except (OSError, http.client.HTTPException) as err:
        seen.append([type(err).__name__, ""])
        conn = http.client.HTTPConnection(host, port, timeout=5)
    time.sleep(pause)
print(json.dumps(seen))
"""




class World:
    def __init__(self, lab: Lab, *, server_annotations: dict[str, str] | None = None,
                 server_account: str = "web", registered_account: str | None = None) -> None:
        self.lab = lab
        pods = lab.star({"l7cli": CLIENT, "l7srv": SERVER, "l7out": OUTSIDE})
        self.client, self.server, self.outside = pods["l7cli"], pods["l7srv"], pods["l7out"]
        self.server_annotations = server_annotations or {}
        self.server_account = server_account
        self.registered_account = registered_account

    def start(self) -> None:
        self.lab.control.service(name="web", namespace=NAMESPACE, cluster_ip=VIP,
                                 ports=[("http", PORT, TARGET), ("tcp", TCP_PORT, TARGET)],
                                 endpoints=[SERVER])
        self.server.start(boot(**self.server_annotations), control=self.lab.control,
                          ports=(TARGET,), service_account=self.server_account,
                          probes=((TARGET, "/healthz"),))
        if self.registered_account:  # the registry says another account runs there
            pod = self.lab.control.objects[("Pod", NAMESPACE, self.server.name)]
            pod["spec"]["serviceAccountName"] = self.registered_account
            self.lab.control.write()
        self.server.start_upstream(TARGET, "--echo-header", "x-forwarded-client-cert")
        self.client.start(boot(), control=self.lab.control)

    def calls(self, pod: Pod, host: str, port: int, count: int = 1, *, pause: float = 0.0,
              path: str = "/", fresh: bool = False) -> list[list[object]]:
        """``fresh``: a new connection for every request (to the TCP Service: a new mutual
        TLS handshake between the proxies each time)."""
        out = pod.ns.run([PY, "-c", CALLS, host, str(port), str(count), str(pause), path,
                          "fresh" if fresh else "keep"], uid=1000, gid=1000, timeout=120).stdout
        seen: list[list[object]] = json.loads(out)
        return seen

    def wait_meshed(self, timeout: float = 10) -> None:
        """Until the client's proxy has the server's endpoint (with its mutual TLS)."""
        deadline = time.monotonic() + timeout
        while f"{SERVER}:{TARGET}::health_flags::healthy" not in self.client.admin("/clusters"):
            assert time.monotonic() < deadline, "the client never learned the server's endpoint"
            time.sleep(0.05)

    def capture(self, name: str) -> Capture:
        assert self.lab.node is not None
        return Capture(self.lab.node, "vl7srv", self.lab.spawn, self.lab.logdir / name)


def test_the_bytes_between_two_proxies_are_tls_and_each_side_knows_the_other(lab: Lab) -> None:
    world = World(lab)
    world.start()
    world.wait_meshed()
    wire = world.capture("wire.jsonl")
    try:
        [[status, xfcc]] = world.calls(world.client, VIP, PORT)
        segments = wire.segments(port=TARGET)
    finally:
        wire.stop()
    assert status == 200
    assert segments and all(s.is_tls_record for s in segments), segments[:3]
    assert b"GET /" not in payload(segments) and b"HTTP/1.1" not in payload(segments)
    # the server's proxy tells the app who called, and says who it is itself
    assert f"By={WEB_ID}" in str(xfcc) and f"URI={CLIENT_ID}" in str(xfcc)
    handshakes = world.client.stats("cluster.outbound|80||web.l7.svc.cluster.local.ssl.handshake")
    assert handshakes["cluster.outbound|80||web.l7.svc.cluster.local.ssl.handshake"] == 1


def test_a_server_presenting_another_identity_than_the_service_expects_is_refused(
    lab: Lab,
) -> None:
    """The registry says the pod at the server's address runs as ``payments``; its proxy's
    certificate says ``web``. The client's proxy expects the Service's identities only."""
    world = World(lab, server_account="web", registered_account="payments")
    world.start()
    world.wait_meshed()
    assert [s for s, _ in world.calls(world.client, VIP, PORT)] == [503]
    errors = world.client.stats("cluster.outbound|80||web.l7.svc.cluster.local.ssl.fail_verify")
    assert errors["cluster.outbound|80||web.l7.svc.cluster.local.ssl.fail_verify_san"] >= 1


def test_a_client_outside_the_mesh_reaches_a_permissive_pod_and_not_a_strict_one(
    lab: Lab,
) -> None:
    world = World(lab)
    world.start()
    assert [s for s, _ in world.calls(world.outside, SERVER, TARGET)] == [200]  # PERMISSIVE
    lab.control.put({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": NAMESPACE, "labels": {MTLS_MODE: "strict"}}})
    lab.control.write()
    deadline = time.monotonic() + 10
    while world.calls(world.outside, SERVER, TARGET)[0][0] == 200:
        assert time.monotonic() < deadline, "the namespace label never made the pod STRICT"
        time.sleep(0.1)
    assert [s for s, _ in world.calls(world.outside, SERVER, TARGET)] == [403]
    assert world.outside.ns.run([PY, "-c", RAW_TCP, SERVER, str(TARGET)]).stdout.strip() == "b''"
    # the mesh still gets in, and so do the kubelet's probes (plaintext, their path only)
    assert [s for s, _ in world.calls(world.client, VIP, PORT)] == [200]
    assert [s for s, _ in world.calls(world.outside, SERVER, TARGET, path="/healthz")] == [200]


def test_a_direct_call_to_a_headless_services_pod_is_mutual_tls_too(lab: Lab) -> None:
    """A StatefulSet's pods are dialled by address (``web-0.web``): when the Service is
    headless, its pods in the mesh are still called over mutual TLS, so STRICT lets them in."""
    world = World(lab, server_annotations={MTLS_MODE: "strict"})
    world.start()
    lab.control.service(name="web", namespace=NAMESPACE, cluster_ip="None",
                        ports=[("http", TARGET, TARGET)], endpoints=[SERVER])
    deadline = time.monotonic() + 10
    while "outbound|8080|direct|web.l7" not in world.client.admin("/clusters"):
        assert time.monotonic() < deadline, "no direct cluster for the headless Service"
        time.sleep(0.05)
    [[status, xfcc]] = world.calls(world.client, SERVER, TARGET)
    assert status == 200 and f"URI={CLIENT_ID}" in str(xfcc)
    assert [s for s, _ in world.calls(world.outside, SERVER, TARGET)] == [403]  # STRICT


def test_certificates_renew_under_load_with_no_failed_request(lab: Lab) -> None:
    lab.control.args = ["--svid-hours", str(4 / 3600)]  # four seconds: renewed every two
    world = World(lab)
    world.start()
    world.wait_meshed()
    before = _serials(world.server)
    seen = world.calls(world.client, VIP, TCP_PORT, 100, pause=0.05, fresh=True)  # about 7 s
    assert Counter(s for s, _ in seen) == {200: 100}
    assert before and _serials(world.server).isdisjoint(before)
    renewed = world.server.stats("listener.0.0.0.0_15006.server_ssl_socket_factory.ssl_context")
    assert renewed["listener.0.0.0.0_15006.server_ssl_socket_factory."
                   "ssl_context_update_by_sds"] >= 4


def test_a_root_rotates_under_load_with_no_failed_request(lab: Lab) -> None:
    lab.control.args = ["--ca-poll", "0.2", "--rotation-settle", "0.5"]
    world = World(lab)
    world.start()
    world.wait_meshed()
    old_roots = _roots(world.server)
    results: list[list[list[object]]] = []
    load = threading.Thread(target=lambda: results.append(
        world.calls(world.client, VIP, TCP_PORT, 120, pause=0.05, fresh=True)))
    load.start()
    time.sleep(1.0)
    new = MeshCA.create(trust_domain="cluster.local")
    for name, data in new.files().items():  # the poll may see one new file and refuse the
        (lab.control.pki / f".{name}").write_bytes(data)  # pair once; then it sees both
        os.replace(lab.control.pki / f".{name}", lab.control.pki / name)
    load.join(timeout=60)
    assert Counter(s for s, _ in results[0]) == {200: 120}
    new_roots = [certs.serial_of(new.bundle())]
    deadline = time.monotonic() + 40  # three steps, each bounded by the step timeout (10 s)
    while _roots(world.server) != new_roots or _roots(world.client) != new_roots:
        assert time.monotonic() < deadline, ("the proxies never moved to the new root:\n"
                                             + _control_plane_logs(lab))
        time.sleep(0.2)
    assert old_roots != new_roots
    assert [s for s, _ in world.calls(world.client, VIP, PORT)] == [200]


def _control_plane_logs(lab: Lab) -> str:
    return "\n".join(p.read_text()[-3000:] for p in lab.logdir.glob("controlplane-*.log"))


def _mesh_contexts(pod: Pod) -> list[dict[str, Any]]:
    """The proxy's TLS contexts that present its SVID, in the order Envoy lists them (which
    varies); the xDS connection's own context presents none and trusts the mounted root."""
    found: dict[str, Any] = json.loads(pod.admin("/certs"))
    return [c for c in found["certificates"] if c.get("cert_chain")]


def _serials(pod: Pod) -> set[str]:
    """The serials of the certificates the proxy presents (one, unless a renewal is landing)."""
    return {str(c["cert_chain"][0]["serial_number"]) for c in _mesh_contexts(pod)}


def _roots(pod: Pod) -> list[str]:
    """The serials of the roots the proxy's mesh contexts trust."""
    return sorted({str(ca["serial_number"]) for c in _mesh_contexts(pod) for ca in c["ca_cert"]})
