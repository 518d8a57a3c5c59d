"""Uninstall (issue 15, item 13): ``kubectl delete -k`` of the install leaves a cluster that
creates pods normally, in mesh-enabled namespaces too.

With ``failurePolicy: Fail``, a webhook configuration left behind with no injector would refuse
every pod of a labelled namespace. ``delete -k`` removes the configuration along with the rest;
the injector (here a process, in a cluster its Deployment's pods, which go with the namespace) is
then stopped, and pods are created as if meshinject had never been installed. ``cluster.py up``
installs it again afterwards, for the tests that follow.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mesh.contract import INJECT, NAMESPACE_ENABLED
from tests.support.realcluster import HOOK, NS, LocalCluster, names, simple_pod

pytestmark = pytest.mark.cluster


@pytest.fixture
def uninstalled(cluster: LocalCluster) -> Iterator[None]:
    try:
        cluster.kubectl("delete", "-k", cluster.state["install_dir"], "--timeout=60s")
        cluster.injector("stop")
        yield
    finally:
        cluster.cluster_py("up")  # installs it again, with a new token, and starts the injector


def test_delete_k_leaves_a_cluster_that_creates_pods_normally(
    cluster: LocalCluster, uninstalled: None
) -> None:
    assert cluster.kubectl("get", "mutatingwebhookconfiguration", HOOK, check=False).returncode
    assert cluster.kubectl("get", "namespace", NS, check=False).returncode
    with cluster.namespace("after", labels={INJECT: NAMESPACE_ENABLED}) as ns:
        created = cluster.create_pod(ns, simple_pod("web"))
        assert created.status_code == 201, created.text
        assert names(created.json()["spec"].get("initContainers")) == []
        assert names(created.json()["spec"]["containers"]) == ["app"]


def test_after_reinstalling_pods_are_injected_again(cluster: LocalCluster) -> None:
    with cluster.namespace("again", labels={INJECT: NAMESPACE_ENABLED}) as ns:
        created = cluster.create_pod(ns, simple_pod("web"))
        assert created.status_code == 201, created.text
        assert "mesh-proxy" in names(created.json()["spec"]["initContainers"])
