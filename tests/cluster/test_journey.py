"""The user's journey as the README tells it, as far as it goes without a node.

Label a namespace, ``kubectl apply -f`` a Deployment, ``kubectl get pods`` (Pending, since no node
runs them, but stored with mesh-init and mesh-proxy), then ``meshinject inspect`` and ``meshinject
check`` against the real API server: check must find the webhook usable, registered by URL, and
its serving certificate naming the URL's host (127.0.0.1, an IP SAN).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from mesh.contract import INIT_NAME, PROXY_NAME
from tests.support.paths import MESHINJECT
from tests.support.realcluster import LocalCluster, names

pytestmark = pytest.mark.cluster
APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: nginx:1.27
          ports: [{containerPort: 80}]
"""


def meshinject(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MESHINJECT), *args, "--kubeconfig", cluster.kubeconfig],
                          capture_output=True, text=True, timeout=60, check=False)


def test_label_apply_get_inspect_check(cluster: LocalCluster, tmp_path: Path) -> None:
    with cluster.namespace("shop") as ns:
        cluster.kubectl("label", "namespace", ns, "meshinject.io/inject=enabled")
        (tmp_path / "app.yaml").write_text(APP)
        cluster.kubectl("apply", "-n", ns, "-f", str(tmp_path / "app.yaml"))
        deadline = time.monotonic() + 30
        while len(pods := json.loads(cluster.kubectl(
                "get", "pods", "-n", ns, "-o", "json").stdout)["items"]) < 2:
            assert time.monotonic() < deadline, "the Deployment made no pods"
            time.sleep(0.2)
        table = cluster.kubectl("get", "pods", "-n", ns).stdout.splitlines()
        assert [line.split()[1:3] for line in table[1:]] == [["0/2", "Pending"]] * 2, table
        for pod in pods:
            assert names(pod["spec"]["initContainers"]) == [INIT_NAME, PROXY_NAME]

        inspected = meshinject(cluster, "inspect", "-n", ns)
        assert inspected.returncode == 0, inspected.stdout + inspected.stderr
        assert "2 pods, 2 injected, 0 missing a proxy, 0 out of date" in inspected.stdout

        checked = meshinject(cluster, "check", "-n", ns)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        out = checked.stdout
        assert "webhook meshinject: 2 entries, caBundle set on all" in out
        assert "verifies against the caBundle, names 127.0.0.1, 365 days left" in out
        assert f"injector: called at {cluster.injector_url} (clientConfig.url)" in out

        one = pods[0]["metadata"]["name"]
        explained = meshinject(cluster, "check", one, "-n", ns)
        assert explained.returncode == 0, explained.stdout
        assert f"pod {ns}/{one}: injected, as it should be" in explained.stdout
        assert "webhook     namespace.meshinject.io selects this pod" in explained.stdout
