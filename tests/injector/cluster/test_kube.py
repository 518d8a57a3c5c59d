"""The API edge: real client, fake server; errors come back as ours, naming the object."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.errors import Conflict, KubeError, MeshError, NotFound
from mesh.kube.client import Kube
from tests.support.fakeserver import Running


def _secret(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {}}


def test_objects_come_back_as_the_json_the_server_sent(fake: Running, kube: Kube) -> None:
    created = kube.create_secret("ns1", _secret("s"))
    assert created["metadata"]["resourceVersion"]
    assert kube.get_secret("ns1", "s")["kind"] == "Secret"


def test_a_missing_object_raises_not_found_naming_it(kube: Kube) -> None:
    with pytest.raises(NotFound, match="secret ns1/nope: HTTP 404"):
        kube.get_secret("ns1", "nope")


def test_creating_an_existing_name_raises_conflict(kube: Kube) -> None:
    kube.create_secret("ns1", _secret("s"))
    with pytest.raises(Conflict, match="already exists"):
        kube.create_secret("ns1", _secret("s"))


def test_a_stale_resource_version_raises_conflict(kube: Kube) -> None:
    first = kube.create_secret("ns1", _secret("s"))
    kube.replace_secret("ns1", "s", first)
    with pytest.raises(Conflict, match="has been modified"):
        kube.replace_secret("ns1", "s", first)


def test_kube_errors_are_mesh_inject_errors(kube: Kube) -> None:
    with pytest.raises(MeshError):
        kube.get_namespace("absent")


def test_an_unreachable_server_is_a_kube_error_not_a_traceback(
    fake: Running, tmp_path: Path
) -> None:
    text = Path(fake.kubeconfig).read_text().replace(fake.url, "https://127.0.0.1:1")
    path = tmp_path / "dead.kubeconfig"
    path.write_text(text)
    api = Kube.connect(kubeconfig=str(path))
    api.timeout = 2
    with pytest.raises(KubeError, match="cannot reach the API server"):
        api.get_secret("ns1", "s")
    api.api_client.close()


def test_a_missing_kubeconfig_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(KubeError, match=r"nowhere\.yaml"):
        Kube.connect(kubeconfig=str(tmp_path / "nowhere.yaml"))


def test_pod_proxy_reads_the_text_the_pod_serves(fake: Running, kube: Kube) -> None:
    fake.api.proxied[("ns1", "web-1:15090", "/stats/prometheus")] = "envoy_up 1\n"
    assert (
        kube.pod_proxy_get("ns1", "web-1", port=15090, path="/stats/prometheus") == "envoy_up 1\n"
    )
