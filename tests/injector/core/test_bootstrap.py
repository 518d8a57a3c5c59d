"""The injected bootstrap: only what must work before the control plane answers.

What it holds is checked here as data; that a proxy started from it turns ready only once the
control plane configured it, and then serves what it should, is checked with real Envoy in
``tests/dataplane/test_proxy_start.py``.
"""

from __future__ import annotations

import json
from typing import Any

from injector.core import bootstrap
from injector.core.patch import inject_pod
from mesh import contract
from mesh.overrides.pod import parse_overrides
from tests.support.pods import CONFIG


def render(annotations: dict[str, str] | None = None) -> str:
    overrides = parse_overrides(annotations or {}, config=CONFIG)
    return bootstrap.bootstrap_text(bootstrap.bootstrap(config=CONFIG, overrides=overrides))


def test_the_bootstrap_text_is_deterministic_compact_json() -> None:
    text = render()
    assert text == render()
    assert ": " not in text and ", " not in text
    assert bootstrap.bootstrap_text(json.loads(text)) == text


def test_the_node_is_the_pod_expanded_from_the_proxys_downward_api_env() -> None:
    node = json.loads(render())["node"]
    assert node["id"] == "$(POD_NAME).$(POD_NAMESPACE)"
    assert node["metadata"] == {"namespace": "$(POD_NAMESPACE)", "pod": "$(POD_NAME)",
                                "ip": "$(POD_IP)", "serviceAccount": "$(SERVICE_ACCOUNT)"}


def test_admin_listens_on_loopback_only_and_probes_and_scrapes_on_all_addresses() -> None:
    boot = json.loads(render())
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
    dynamic = json.loads(render())["dynamic_resources"]
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


def test_the_l7_annotations_no_longer_change_the_bootstrap() -> None:
    assert render({contract.TIMEOUT: "2s", contract.RETRIES: "5"}) == render()


def _proxy(pod: dict[str, Any]) -> dict[str, Any]:
    injected = inject_pod(pod, config=CONFIG, namespace="shop").pod
    found: dict[str, Any] = next(c for c in injected["spec"]["initContainers"]
                                 if c["name"] == contract.PROXY_NAME)
    return found


def test_the_proxy_container_stays_small() -> None:
    proxy = _proxy({"metadata": {"name": "web"},
                    "spec": {"containers": [{"name": "app", "image": "a"}]}})
    size = len(json.dumps(proxy, separators=(",", ":")))
    assert size < 5000, size  # the whole static config was 12 KB in the args before xDS
