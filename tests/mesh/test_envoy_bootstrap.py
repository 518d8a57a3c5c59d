"""The proxies' bootstrap: only what must work before the control plane answers, in two parts
(the pod's identity in its args, the rest shared by every proxy from the root ConfigMap).

What it holds is checked here as data, and the two parts merged through ``envoy --mode
validate`` in ``tests/mesh/test_envoy_http.py``; that a proxy started from it turns ready only
once the control plane configured it, and then serves what it should, is checked with real
Envoy in ``tests/dataplane/test_proxy_start.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from controlplane.identity.ca import MeshCA
from injector.core.patch import inject_pod
from mesh import contract
from mesh.envoy import bootstrap
from mesh.settings import MeshConfig
from tests.support.envoy import need_envoy
from tests.support.pods import CONFIG


def test_the_bootstrap_text_is_deterministic_compact_json() -> None:
    text = bootstrap.text(bootstrap.shared(CONFIG))
    assert text == bootstrap.text(bootstrap.shared(CONFIG))
    assert ": " not in text and ", " not in text
    assert bootstrap.text(json.loads(text)) == text


def test_the_pods_part_is_its_node_expanded_from_the_proxys_downward_api_env() -> None:
    assert list(bootstrap.per_pod()) == ["node"]
    node = bootstrap.per_pod()["node"]
    assert node["id"] == "$(POD_NAME).$(POD_NAMESPACE)"
    assert node["metadata"] == {"namespace": "$(POD_NAMESPACE)", "pod": "$(POD_NAME)",
                                "ip": "$(POD_IP)", "serviceAccount": "$(SERVICE_ACCOUNT)"}


def test_the_two_parts_share_no_field_so_merging_them_loses_nothing() -> None:
    """Envoy merges ``--config-yaml`` over ``--config-path`` as protobuf does: a field in both
    would be merged (a list appended to), so none may be in both."""
    assert not set(bootstrap.shared(CONFIG)) & set(bootstrap.per_pod())
    assert bootstrap.merged(CONFIG) == {**bootstrap.shared(CONFIG), **bootstrap.per_pod()}


def test_admin_listens_on_loopback_only_and_probes_and_scrapes_on_all_addresses() -> None:
    boot = bootstrap.shared(CONFIG)
    assert boot["admin"]["address"]["socket_address"] == {"address": "127.0.0.1",
                                                          "port_value": contract.ADMIN_PORT}
    (proxy,) = boot["static_resources"]["listeners"]
    addresses = [proxy["address"], *(a["address"] for a in proxy["additional_addresses"])]
    assert sorted((a["socket_address"]["address"], a["socket_address"]["port_value"])
                  for a in addresses) == sorted(
        (host, port) for host in ("0.0.0.0", "::")
        for port in (contract.READINESS_PORT, contract.PROMETHEUS_PORT))
    routes = proxy["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
        "virtual_hosts"][0]["routes"]
    assert {r["match"]["path"] for r in routes} == {contract.READINESS_PATH,
                                                    contract.PROMETHEUS_PATH}
    assert [c["name"] for c in boot["static_resources"]["clusters"]] == ["admin"]


def test_everything_else_comes_over_ads_and_the_first_fetch_waits_for_it() -> None:
    dynamic = bootstrap.shared(CONFIG)["dynamic_resources"]
    for kind in ("cds_config", "lds_config"):
        assert dynamic[kind] == {"ads": {}, "resource_api_version": "V3",
                                 "initial_fetch_timeout": "0s"}
    grpc = dynamic["ads_config"]["grpc_services"][0]["google_grpc"]
    assert grpc["target_uri"] == CONFIG.control_plane.address
    assert grpc["channel_credentials"]["ssl_credentials"]["root_certs"]["filename"] == (
        f"{contract.CA_DIR}/{contract.CA_FILE}")
    credentials = grpc["call_credentials"][0]["from_plugin"]["typed_config"]
    assert credentials["secret_data"]["filename"] == f"{contract.TOKEN_DIR}/{contract.TOKEN_FILE}"
    assert (credentials["header_key"], credentials["header_prefix"]) == (
        "authorization", "Bearer ")


def test_the_shared_part_follows_the_control_plane_address_alone() -> None:
    moved = MeshConfig.model_validate({"controlPlane": {"address": "cp.example:15012"}})
    assert bootstrap.shared(moved) != bootstrap.shared(CONFIG)
    tuned = MeshConfig.model_validate({"controlPlane": {"tokenSeconds": 7200}})
    assert bootstrap.shared(tuned) == bootstrap.shared(MeshConfig())


def _proxy(pod: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    pod = {**pod, "metadata": {**pod["metadata"], "annotations": annotations or {}}}
    injected = inject_pod(pod, config=CONFIG, namespace="shop").pod
    found: dict[str, Any] = next(c for c in injected["spec"]["initContainers"]
                                 if c["name"] == contract.PROXY_NAME)
    return found


POD = {"metadata": {"name": "web"}, "spec": {"containers": [{"name": "app", "image": "a"}]}}


def test_the_proxy_reads_the_shared_part_from_the_root_volume_it_mounts() -> None:
    proxy = _proxy(POD)
    args = proxy["args"]
    assert json.loads(args[args.index("--config-yaml") + 1]) == bootstrap.per_pod()
    path = args[args.index("--config-path") + 1]
    assert path == f"{contract.CA_DIR}/{contract.BOOTSTRAP_FILE}" == bootstrap.SHARED_PATH
    assert {"name": contract.CA_VOLUME, "mountPath": contract.CA_DIR,
            "readOnly": True} in proxy["volumeMounts"]
    injected = inject_pod(POD, config=CONFIG, namespace="shop").pod
    (ca,) = [v for v in injected["spec"]["volumes"] if v["name"] == contract.CA_VOLUME]
    assert {"key": contract.BOOTSTRAP_FILE, "path": contract.BOOTSTRAP_FILE} in ca[
        "configMap"]["items"]


def test_the_l7_annotations_do_not_change_the_proxys_args() -> None:
    assert _proxy(POD, {contract.TIMEOUT: "2s", contract.RETRIES: "5"})["args"] == _proxy(
        POD)["args"]


def test_the_proxy_container_fits_in_about_two_kilobytes() -> None:
    size = len(json.dumps(_proxy(POD), separators=(",", ":")))
    assert size < 2500, size  # 12 KB with the whole config in its args, 4.8 KB with the
    # whole bootstrap there


def test_envoy_takes_the_injected_args_with_the_published_file(tmp_path: Path) -> None:
    """The proxy's args as injected (the kubelet's ``$(VAR)`` expanded), the shared part at the
    path they name, through ``envoy --mode validate``: the merge Envoy does is the one meant."""
    envoy = need_envoy()
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca" / contract.CA_FILE).write_bytes(MeshCA.create(
        trust_domain="cluster.local").signer.cert_pem)
    (tmp_path / "token").mkdir()
    (tmp_path / "token" / contract.TOKEN_FILE).write_text("a.b.c")
    shared = tmp_path / "ca" / contract.BOOTSTRAP_FILE  # the volumes' files, here
    shared.write_text(bootstrap.text(bootstrap.shared(CONFIG)).replace(
        contract.CA_DIR, str(tmp_path / "ca")).replace(contract.TOKEN_DIR, str(tmp_path / "token")))
    env = {"POD_NAME": "web-1", "POD_NAMESPACE": "shop", "POD_IP": "198.18.0.9",
           "SERVICE_ACCOUNT": "web"}
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in _proxy(POD)["args"]]
    args[args.index("--config-path") + 1] = str(shared)
    result = subprocess.run([envoy, "--mode", "validate", *args],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    shared.write_text(shared.read_text().replace('"admin":{', '"admin":{"bogus":1,'))
    refused = subprocess.run([envoy, "--mode", "validate", *args],
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode != 0  # the file is read: a bad one is refused
