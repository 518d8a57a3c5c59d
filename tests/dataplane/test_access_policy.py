"""AccessPolicies enforced by real proxies, configured by the real control plane.

Pods around a node (tests/support/lab.py ``star``): ``frontend`` and ``other``, two meshed
clients running as those service accounts, a meshed server (service account ``web``, label
``app: web``) behind the Service ``web`` (HTTP on port 80, the same app as opaque TCP on 81),
and ``outside``, a pod without a proxy. The policies go into the control plane's registry
file, as the cluster's API server would hand them over.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from mesh.access import parse_policy
from tests.support.accesspolicies import policy_obj
from tests.support.lab import NAMESPACE, PY, RAW_TCP, Lab, Pod
from tests.support.spec import boot

pytestmark = [pytest.mark.netns, pytest.mark.envoy]

FRONTEND, OTHER, SERVER, OUTSIDE = "198.18.5.1", "198.18.4.1", "198.18.6.2", "198.18.8.3"
VIP, PORT, TCP_PORT, TARGET = "198.19.7.20", 80, 81, 8080
PROBE = "/healthz"
POLICY = "frontend-only"
COUNTER = f"{NAMESPACE}/{POLICY}"  # the policy's name in the server proxy's counters
HTTP = "http.inbound_mtls_http.rbac.accesspolicy."
TCP = "accesspolicy.rbac."

# one request; prints [status] or [the exception's name] (a closed connection)
CALL = """
import http.client, json, sys
conn = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=5)
try:
    conn.request("GET", sys.argv[3]); r = conn.getresponse(); r.read()
    print(json.dumps(r.status))
except (OSError, http.client.HTTPException) as err:
    print(json.dumps(type(err).__name__))
"""
CLOSED = {"RemoteDisconnected", "ConnectionResetError", "BadStatusLine", "IncompleteRead"}


def allowing(*accounts: str, mtls: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": "web"}},
                            "allow": [{"from": {"serviceAccounts": list(accounts)}}]}
    if mtls:
        spec["mtls"] = mtls
    obj = policy_obj(POLICY, spec, namespace=NAMESPACE)
    parse_policy(obj)  # the test's own policy must be valid
    return obj


class World:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        pods = lab.star({"apfe": FRONTEND, "apot": OTHER, "apsrv": SERVER, "apout": OUTSIDE})
        self.frontend, self.other = pods["apfe"], pods["apot"]
        self.server, self.outside = pods["apsrv"], pods["apout"]

    def start(self, policy: dict[str, Any]) -> None:
        control = self.lab.control
        control.put(policy)
        control.service(name="web", namespace=NAMESPACE, cluster_ip=VIP,
                        ports=[("http", PORT, TARGET), ("tcp", TCP_PORT, TARGET)],
                        endpoints=[SERVER])
        self.server.start(boot(), control=control, ports=(TARGET,), service_account="web",
                          probes=((TARGET, PROBE),), labels={"app": "web"})
        self.server.start_upstream(TARGET)
        self.frontend.start(boot(), control=control, service_account="frontend")
        self.other.start(boot(), control=control, service_account="other")
        for client in (self.frontend, self.other):
            self.wait_meshed(client)

    def update(self, policy: dict[str, Any]) -> None:
        self.lab.control.put(policy)
        self.lab.control.write()

    def call(self, pod: Pod, host: str, port: int, path: str = "/") -> object:
        out = pod.ns.run([PY, "-c", CALL, host, str(port), path], uid=1000, gid=1000,
                         timeout=30).stdout
        return json.loads(out)

    def raw_tcp(self, pod: Pod, host: str, port: int) -> str:
        return pod.ns.run([PY, "-c", RAW_TCP, host, str(port)], timeout=30).stdout.strip()

    @staticmethod
    def wait_meshed(client: Pod, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while f"{SERVER}:{TARGET}::health_flags::healthy" not in client.admin("/clusters"):
            assert time.monotonic() < deadline, "the client never learned the server's endpoint"
            time.sleep(0.05)

    def until(self, pod: Pod, host: str, port: int, want: object, what: str,
              path: str = "/", timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while (seen := self.call(pod, host, port, path)) != want:
            assert time.monotonic() < deadline, f"{what}: still {seen!r}"
            time.sleep(0.1)


def test_only_the_allowed_account_gets_in_counted_per_policy_and_a_change_applies_live(
    lab: Lab,
) -> None:
    world = World(lab)
    world.start(allowing(f"{NAMESPACE}/frontend"))
    server = world.server
    assert server.proxy is not None
    pid = server.proxy.pid
    # over HTTP the denied caller gets 403; over TCP its connection is closed
    assert world.call(world.frontend, VIP, PORT) == 200
    assert world.call(world.other, VIP, PORT) == 403
    assert world.call(world.frontend, VIP, TCP_PORT) == 200
    assert world.call(world.other, VIP, TCP_PORT) in CLOSED
    stats = server.stats("")
    assert stats[HTTP + "allowed"] == 1 and stats[HTTP + "denied"] == 1
    assert stats[f"{HTTP}policy.{COUNTER}.allowed"] == 1
    shadow = f"http.inbound_mtls_http.rbac.{COUNTER}.shadow_"  # this policy's own HTTP counters
    assert stats[shadow + "allowed"] == 1 and stats[shadow + "denied"] == 1
    assert stats[TCP + "allowed"] == 1 and stats[TCP + "denied"] == 1
    assert stats[f"{COUNTER}.rbac.shadow_allowed"] == 1  # this policy's own TCP counters
    assert stats[f"{COUNTER}.rbac.shadow_denied"] == 1
    # plaintext has no identity: a policy naming callers lets only the kubelet's probes in
    assert world.call(world.outside, SERVER, TARGET, PROBE) == 200
    assert world.call(world.outside, SERVER, TARGET) == 403
    assert world.raw_tcp(world.outside, SERVER, TARGET) == "b''"
    # the policy changes in the registry: the running proxy lets ``other`` in, no restart
    world.update(allowing(f"{NAMESPACE}/frontend", f"{NAMESPACE}/other"))
    world.until(world.other, VIP, PORT, 200, "the changed policy never let other in")
    assert world.call(world.other, VIP, TCP_PORT) == 200
    assert world.call(world.frontend, VIP, PORT) == 200
    assert server.proxy.poll() is None and server.proxy.pid == pid
    assert server.stats("")[f"{HTTP}policy.{COUNTER}.allowed"] >= 3
    # and away again: deleting the policy opens the pod to every caller
    lab.control.delete("AccessPolicy", NAMESPACE, POLICY)
    lab.control.write()
    world.until(world.outside, SERVER, TARGET, 200, "the deleted policy still denies")


def test_probes_pass_under_strict_with_a_policy(lab: Lab) -> None:
    world = World(lab)
    world.start(allowing(f"{NAMESPACE}/frontend", mtls="STRICT"))  # STRICT by the policy
    assert world.call(world.outside, SERVER, TARGET, PROBE) == 200
    assert world.call(world.outside, SERVER, TARGET) == 403
    assert world.raw_tcp(world.outside, SERVER, TARGET) == "b''"
    assert world.call(world.frontend, VIP, PORT) == 200
    assert world.call(world.other, VIP, PORT) == 403
