"""The user's journey as the README tells it, on the real cluster with the sandbox as its node.

Label a namespace, ``kubectl apply`` Deployments, and the pods are stored with mesh-init and
mesh-proxy, bound to the sandbox node, run there (mesh-init's rules in each pod's namespace,
Envoy getting its config from the control plane's two replicas, which run on the same node
with their ServiceAccount's token) and become Ready. A request from one injected pod to
another's Service goes through both proxies: Envoy's own counters move by exactly the requests
made, on the caller's outbound cluster and on the callee's inbound listener, and the callee's
app sees the request come from its proxy (127.0.0.6); between the proxies it is mutual TLS
(the caller's mtls socket and TLS handshakes, the callee's inbound TLS chain). Then ``kubectl
logs``, ``meshinject inspect`` (ready, current, xDS synced, each pod's SPIFFE ID and mTLS mode)
and ``meshinject check``, as a user runs them.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess

import pytest

from mesh.contract import INIT_NAME, INJECT, NAMESPACE_ENABLED, PROXY_NAME
from tests.support import meshapp
from tests.support.paths import MESHINJECT
from tests.support.realcluster import LocalCluster, names

pytestmark = pytest.mark.cluster
REQUESTS = 3


def meshinject(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MESHINJECT), *args, "--kubeconfig", cluster.kubeconfig],
                          capture_output=True, text=True, timeout=60, check=False)


def test_label_apply_run_on_the_node_call_through_both_proxies_logs_inspect_check(
    cluster: LocalCluster,
) -> None:
    with cluster.namespace("shop") as ns:
        cluster.kubectl("label", "namespace", ns, f"{INJECT}={NAMESPACE_ENABLED}")
        meshapp.deploy(cluster, ns)
        pods = meshapp.pods(cluster, ns)
        for pod in pods:
            assert names(pod["spec"]["initContainers"]) == [INIT_NAME, PROXY_NAME]
            assert pod["spec"]["nodeName"] == "sandbox"
            assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(
                "198.18.0.0/24")
        table = cluster.kubectl("get", "pods", "-n", ns).stdout.splitlines()
        assert [line.split()[1:3] for line in table[1:]] == [["2/2", "Running"]] * 3, table

        web = meshapp.pods(cluster, ns, "web")[0]["metadata"]["name"]
        catalogs = [p["metadata"]["name"] for p in meshapp.pods(cluster, ns, "catalog")]
        before = {p: meshapp.stats(cluster, ns, p) for p in [web, *catalogs]}
        for _ in range(REQUESTS):
            answer = json.loads(meshapp.proxy_get(cluster, ns, web, 8080, "/"))
            assert answer == {"service": "frontend", "backends": {"catalog": 200}}
        after = {p: meshapp.stats(cluster, ns, p) for p in [web, *catalogs]}

        def moved(pod: str, name: str, **labels: str) -> float:
            return (meshapp.counter(after[pod], name, **labels)
                    - meshapp.counter(before[pod], name, **labels))

        # web's proxy: each request came in on its inbound listener (plaintext: the API
        # server's pod proxy is not in the mesh) and went out, on its outbound listener, to the
        # catalog Service's cluster; the catalogs' proxies took exactly those in on their
        # mutual-TLS chain and none on the plaintext one (their readiness probes are TCP)
        requests = "envoy_http_downstream_rq_total"
        assert moved(web, requests, envoy_http_conn_manager_prefix="inbound_http") == REQUESTS
        assert moved(web, requests, envoy_http_conn_manager_prefix="outbound_http") == REQUESTS
        assert moved(web, meshapp.cluster_stat(ns, "upstream_rq_total"),
                     envoy_cluster_name="outbound|80||catalog") == REQUESTS
        assert sum(moved(c, requests, envoy_http_conn_manager_prefix="inbound_mtls_http")
                   for c in catalogs) == REQUESTS
        assert sum(moved(c, requests, envoy_http_conn_manager_prefix="inbound_http")
                   for c in catalogs) == 0
        # ... over mutual TLS: every connection web's proxy opened to a catalog made a TLS
        # handshake (the cluster's mtls socket: its endpoints have proxies), and the catalogs'
        # proxies took each of them on their inbound listener's TLS chain (nothing else speaks
        # TLS to them)
        catalog = {"envoy_cluster_name": "outbound|80||catalog"}
        opened = moved(web, meshapp.cluster_stat(ns, "upstream_cx_total"), **catalog)
        assert opened >= 1
        assert moved(web, meshapp.cluster_stat(ns, "ssl_handshake"), **catalog) == opened
        assert meshapp.counter(after[web], meshapp.cluster_stat(ns, "ssl_connection_error"),
                               **catalog) == 0
        inbound = {"envoy_listener_address": "0.0.0.0_15006"}
        tls_in = sum(moved(c, "envoy_listener_ssl_handshake", **inbound) for c in catalogs)
        assert tls_in == opened, [s for s in after[catalogs[0]] if "ssl" in s[0]]

        web_log = cluster.kubectl("logs", "-n", ns, web, "-c", "web").stdout
        assert web_log.count("call catalog:80/items -> 200") >= REQUESTS, web_log
        served = "".join(cluster.kubectl("logs", "-n", ns, c, "-c", "catalog").stdout
                         for c in catalogs)
        assert served.count("127.0.0.6 GET /items -> 200") >= REQUESTS, served
        proxy_log = cluster.kubectl("logs", "-n", ns, web, "-c", PROXY_NAME)
        assert proxy_log.returncode == 0

        inspected = meshinject(cluster, "inspect", "-n", ns)
        assert inspected.returncode == 0, inspected.stdout + inspected.stderr
        rows = {line.split()[1]: line.split()[2:] for line in inspected.stdout.splitlines()
                if line.startswith(ns)}
        assert sorted(rows) == sorted([web, *catalogs])
        for row in rows.values():
            assert row[:7] == ["yes", "ready", "native", "REDIRECT", "0", "current", "synced"]
            assert row[-1] == "PERMISSIVE"  # the namespace's mode: no label says otherwise
        assert "3 pods, 3 injected, 0 missing a proxy, 0 out of date" in inspected.stdout
        for pod in [web, *catalogs]:
            one = meshinject(cluster, "inspect", "-n", ns, pod)
            assert one.returncode == 0, one.stdout + one.stderr
            assert (f"  identity    spiffe://cluster.local/ns/{ns}/sa/default, mtls PERMISSIVE"
                    in one.stdout.splitlines()), one.stdout
            assert any(line.startswith("  certificate expires ")
                       for line in one.stdout.splitlines()), one.stdout

        checked = meshinject(cluster, "check", web, "-n", ns)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"pod {ns}/{web}: injected, as it should be" in checked.stdout
        assert "proxy ready, 0 restarts" in checked.stdout
