"""THE real pod: inject a manifest, run what the injected spec says, count with Envoy's counters.

A pod namespace (198.18.0.2) with a veth to a client namespace (198.18.0.1). In the pod: the
``mesh-init`` command and args from the injected spec (as root), Envoy with the ``mesh-proxy``
args as uid/gid 1337, and app servers as uid 1000. Envoy's own stats (admin API on 127.0.0.1:15000
inside the pod) say which listener saw each connection; the servers' access logs say which peer
address they saw (127.0.0.6 = through the inbound passthrough).
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from injector.core.patch import inject_pod
from injector.sandbox import netns
from injector.sandbox.netns import Netns
from tests.support.envoy import need_envoy
from tests.support.kernel import BACKENDS, CLIENT_IP, MESH_INIT, POD_IP, save
from tests.support.meshcontrol import LAB_CONFIG, LabControl, expand_args

pytestmark = [pytest.mark.netns, pytest.mark.envoy, pytest.mark.slow]

APP_UID = 1000
APP_PORT, EXCLUDED_IN = 8080, 9090
UPSTREAM_PORT, EXCLUDED_OUT = 8000, 9091
MANIFEST: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "web",
        "namespace": "shop",
        "labels": {"meshinject.io/inject": "true"},
        "annotations": {
            "traffic.meshinject.io/exclude-inbound-ports": str(EXCLUDED_IN),
            "traffic.meshinject.io/exclude-outbound-ports": str(EXCLUDED_OUT),
            # these tests count TCP passthrough connections; HTTP detection and the L7 chains
            # have their own real-Envoy tests (tests/proxy)
            "traffic.meshinject.io/opaque-ports": f"{APP_PORT},{UPSTREAM_PORT}",
        },
    },
    "spec": {
        "containers": [
            {"name": "app", "image": "python:3.11", "ports": [{"containerPort": APP_PORT}]}
        ]
    },
}


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    spec = pod["spec"]
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        if container["name"] == name:
            return dict(container)
    raise AssertionError(f"no container {name} in the injected pod")


@dataclass
class Pod:
    ns: Netns
    client: Netns
    envoy: subprocess.Popen[bytes]
    logs: Path

    def stats(self) -> dict[str, int]:
        text = self.ns.run(["curl", "-s", "-m", "5", "http://127.0.0.1:15000/stats"]).stdout
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[name] = int(value)
        return out

    def get(self, ns: Netns, host: str, port: int, *, uid: int | None = None) -> int:
        """HTTP GET; the status code, 0 when the connection failed."""
        url = f"http://{host}:{port}/"
        proc = ns.run(
            ["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", url],
            uid=uid,
            gid=uid,
            check=False,
        )
        return int(proc.stdout or 0)


def _delta(before: dict[str, int], after: dict[str, int], name: str) -> int:
    assert name in after, f"Envoy has no counter {name}: the assertion would prove nothing"
    return after[name] - before.get(name, 0)


def _server(
    spawn: Callable[..., subprocess.Popen[bytes]], ns: Netns, host: str, port: int, log: Path
) -> None:
    cmd = [sys.executable, "-m", "http.server", "--bind", host, "--directory", "/", str(port)]
    spawn(ns, cmd, uid=APP_UID, gid=APP_UID, log_path=str(log))
    ns.wait_for_port(port, host=host)


@pytest.fixture(params=[(b, m) for m in ("REDIRECT", "TPROXY") for b in BACKENDS], ids=str)
def pod(
    request: pytest.FixtureRequest,
    make_netns: Callable[[str], Netns],
    spawn: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> Iterator[Pod]:
    envoy_bin = need_envoy()
    backend, mode = request.param
    manifest = copy.deepcopy(MANIFEST)
    manifest["metadata"]["annotations"]["traffic.meshinject.io/interception-mode"] = mode
    injected = inject_pod(manifest, config=LAB_CONFIG, namespace="shop").pod
    init, proxy = _container(injected, "mesh-init"), _container(injected, "mesh-proxy")
    assert init["command"] == ["meshinject-init"] and proxy["command"] == ["envoy"]
    pod_ns, client = make_netns("pod"), make_netns("cli")
    netns.veth(pod_ns, client, a_addr=f"{POD_IP}/24", b_addr=f"{CLIENT_IP}/24")
    # mesh-init exactly as the spec says; the backend chosen like a platform would, by variable
    env = ["env", f"MESH_INIT_BACKEND={backend}"]
    pod_ns.run([*env, MESH_INIT, *init["args"]])
    assert "MESH_OUTPUT" in save(pod_ns, backend)
    # what the cluster gives the pod: a token, the mesh root, a control plane to dial
    control = LabControl(tmp_path / "mesh")
    uid = control.register_pod(name="web", namespace="shop", ip=POD_IP,
                               annotations=manifest["metadata"]["annotations"])
    mounts = control.pod_files(name="web", namespace="shop", uid=uid)
    control.start_in(pod_ns, spawn, log=tmp_path / "controlplane.log")
    env = {"POD_NAME": "web", "POD_NAMESPACE": "shop", "POD_IP": POD_IP,
           "SERVICE_ACCOUNT": "default"}
    security = proxy["securityContext"]
    envoy = spawn(
        pod_ns,
        [envoy_bin, *expand_args(proxy["args"], env)],
        uid=security["runAsUser"],
        gid=security["runAsGroup"],
        log_path=str(tmp_path / "envoy.log"),
        mounts=mounts,
    )
    for port in (15000, 15001, 15006):
        pod_ns.wait_for_port(port)
    _server(spawn, pod_ns, "0.0.0.0", APP_PORT, tmp_path / "app.log")
    _server(spawn, pod_ns, "0.0.0.0", EXCLUDED_IN, tmp_path / "app-excluded.log")
    _server(spawn, client, CLIENT_IP, UPSTREAM_PORT, tmp_path / "upstream.log")
    _server(spawn, client, CLIENT_IP, EXCLUDED_OUT, tmp_path / "upstream-excluded.log")
    yield Pod(pod_ns, client, envoy, tmp_path)


def test_inbound_reaches_the_app_through_the_inbound_listener(pod: Pod) -> None:
    before = pod.stats()
    assert pod.get(pod.client, POD_IP, APP_PORT) == 200
    after = pod.stats()
    assert _delta(before, after, "tcp.inbound.downstream_cx_total") == 1
    assert _delta(before, after, "cluster.inbound-passthrough.upstream_cx_total") == 1
    assert _delta(before, after, "tcp.outbound.downstream_cx_total") == 0
    assert "127.0.0.6" in (pod.logs / "app.log").read_text()  # the app saw the proxy's passthrough


def test_outbound_from_the_app_goes_through_the_outbound_listener_once(pod: Pod) -> None:
    before = pod.stats()
    assert pod.get(pod.ns, CLIENT_IP, UPSTREAM_PORT, uid=APP_UID) == 200
    after = pod.stats()
    assert _delta(before, after, "tcp.outbound.downstream_cx_total") == 1
    # the proxy's own upstream connection was not captured again: one upstream, no loop, no inbound
    assert _delta(before, after, "cluster.outbound-passthrough.upstream_cx_total") == 1
    assert _delta(before, after, "tcp.outbound_loop.downstream_cx_total") == 0
    assert _delta(before, after, "tcp.inbound.downstream_cx_total") == 0
    assert POD_IP in (pod.logs / "upstream.log").read_text()


def test_excluded_ports_bypass_the_proxy_both_ways(pod: Pod) -> None:
    before = pod.stats()
    assert pod.get(pod.client, POD_IP, EXCLUDED_IN) == 200
    assert pod.get(pod.ns, CLIENT_IP, EXCLUDED_OUT, uid=APP_UID) == 200
    after = pod.stats()
    for name in ("tcp.inbound.downstream_cx_total", "tcp.outbound.downstream_cx_total"):
        assert _delta(before, after, name) == 0
    assert CLIENT_IP in (pod.logs / "app-excluded.log").read_text()


def test_the_app_calling_its_own_pod_address_works(pod: Pod) -> None:
    before = pod.stats()
    assert pod.get(pod.ns, POD_IP, APP_PORT, uid=APP_UID) == 200
    after = pod.stats()
    assert _delta(before, after, "tcp.inbound.downstream_cx_total") == 1
    assert _delta(before, after, "tcp.outbound.downstream_cx_total") == 0
    assert _delta(before, after, "tcp.inbound_loop.downstream_cx_total") == 0


def test_with_envoy_stopped_outbound_fails_closed(pod: Pod) -> None:
    assert pod.get(pod.ns, CLIENT_IP, UPSTREAM_PORT, uid=APP_UID) == 200
    netns.stop(pod.envoy)
    assert pod.get(pod.ns, CLIENT_IP, UPSTREAM_PORT, uid=APP_UID) == 0
    assert pod.get(pod.client, POD_IP, APP_PORT) == 0
    upstream_log = (pod.logs / "upstream.log").read_text()
    assert upstream_log.count("GET /") == 1  # nothing leaked around the stopped proxy
    assert pod.get(pod.ns, CLIENT_IP, EXCLUDED_OUT, uid=APP_UID) == 200  # exclusions still bypass
