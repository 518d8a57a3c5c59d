"""The API edge: real client, real API server; errors come back as ours, naming the object."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.errors import Conflict, KubeError, MeshError, NotFound
from mesh.kube.client import Kube
from tests.support.realcluster import LocalCluster, simple_pod

on_cluster = pytest.mark.cluster


def _secret(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {}}


@pytest.fixture
def kube(cluster: LocalCluster) -> Iterator[Kube]:
    api = Kube.connect(kubeconfig=cluster.kubeconfig)
    yield api
    api.api_client.close()


@pytest.fixture
def ns(cluster: LocalCluster) -> Iterator[str]:
    with cluster.namespace("kube") as name:
        yield name


@on_cluster
def test_objects_come_back_as_the_json_the_server_sent(kube: Kube, ns: str) -> None:
    created = kube.create_secret(ns, _secret("s"))
    assert created["metadata"]["resourceVersion"] and created["metadata"]["uid"]
    assert kube.get_secret(ns, "s")["kind"] == "Secret"
    assert kube.get_namespace(ns)["metadata"]["labels"]["kubernetes.io/metadata.name"] == ns


@on_cluster
def test_a_missing_object_raises_not_found_naming_it(kube: Kube, ns: str) -> None:
    with pytest.raises(NotFound, match=f'secret {ns}/nope: HTTP 404: secrets "nope" not found'):
        kube.get_secret(ns, "nope")


@on_cluster
def test_creating_an_existing_name_raises_conflict(kube: Kube, ns: str) -> None:
    kube.create_secret(ns, _secret("s"))
    with pytest.raises(Conflict, match='secrets "s" already exists'):
        kube.create_secret(ns, _secret("s"))


@on_cluster
def test_a_stale_resource_version_raises_conflict(kube: Kube, ns: str) -> None:
    first = kube.create_secret(ns, _secret("s"))
    # a write that changes nothing keeps the resourceVersion (the real server's way; a fake
    # that bumped it on every write hid that): change something
    kube.replace_secret(ns, "s", {**first, "data": {"k": "dg=="}})
    with pytest.raises(Conflict, match="the object has been modified"):
        kube.replace_secret(ns, "s", first)


@on_cluster
def test_kube_errors_are_mesh_inject_errors(kube: Kube) -> None:
    with pytest.raises(MeshError):
        kube.get_namespace("absent")


@on_cluster
def test_a_refusal_by_rbac_is_a_kube_error_with_its_status(cluster: LocalCluster) -> None:
    """The injector's own token may not list pods: 403, as ours."""
    path = Path(cluster.state["injector_kubeconfig"])
    api = Kube.connect(kubeconfig=str(path))
    with pytest.raises(KubeError, match="list pods in default: HTTP 403") as refused:
        api.list_pods("default")
    assert refused.value.status == 403 and not isinstance(refused.value, NotFound)
    api.api_client.close()


@on_cluster
def test_a_pod_proxy_to_a_pod_with_no_address_is_a_kube_error(
    cluster: LocalCluster, kube: Kube, ns: str
) -> None:
    """Without a node the pod has no IP: the API server has nowhere to proxy to."""
    assert cluster.create_pod(ns, simple_pod("web")).status_code == 201
    with pytest.raises(KubeError, match=f"GET pod {ns}/web:15090/stats/prometheus"):
        kube.pod_proxy_get(ns, "web", port=15090, path="/stats/prometheus")


def test_an_unreachable_server_is_a_kube_error_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "dead.kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "
        "'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
    )
    api = Kube.connect(kubeconfig=str(path))
    api.timeout = 2
    with pytest.raises(KubeError, match="cannot reach the API server"):
        api.get_secret("ns1", "s")
    api.api_client.close()


def test_a_missing_kubeconfig_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(KubeError, match=r"nowhere\.yaml"):
        Kube.connect(kubeconfig=str(tmp_path / "nowhere.yaml"))
