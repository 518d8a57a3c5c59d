"""The contract's ports and ids are the ones mesh-init's rules and the injected proxy really use.

mesh-init cannot import the kernel, so the numbers both sides must agree on live at the seam
(``initcontainer.config``); these tests tie what each side *does* with them together: a rule set
that captured the proxy's own readiness port, or a proxy that listened elsewhere than mesh-init
redirects to, would fail here.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from controlplane.translate.proxy import translate
from initcontainer.config import CaptureConfig
from initcontainer.rules import NetInfo, render
from injector.core.patch import inject_pod
from mesh import contract
from mesh.envoy import bootstrap
from mesh.overrides.pod import parse_overrides
from mesh.settings import MeshConfig

NET = NetInfo(ipv4=(ipaddress.IPv4Address("198.18.0.2"),))


def _rules() -> str:
    text = render(CaptureConfig(), NET).ipv4
    assert text is not None
    return text


def _injected() -> dict[str, Any]:
    pod = {"metadata": {"name": "web"}, "spec": {"containers": [{"name": "app", "image": "a"}]}}
    return inject_pod(pod, config=MeshConfig(), namespace="shop").pod


def test_mesh_init_never_captures_the_proxys_own_readiness_and_prometheus_ports() -> None:
    rules = _rules().splitlines()
    capture = next(i for i, r in enumerate(rules) if "capture inbound" in r)
    for port in (contract.READINESS_PORT, contract.PROMETHEUS_PORT):
        returned = [i for i, r in enumerate(rules)
                    if f"--dport {port} " in r and r.endswith("-j RETURN")]
        assert returned and returned[0] < capture, f"port {port} is captured inbound"


def test_mesh_init_redirects_to_the_ports_the_proxy_listens_on() -> None:
    rules = _rules()
    targets = {int(p) for p in re.findall(r"--to-ports (\d+)", rules)}
    assert targets == {contract.OUTBOUND_PORT, contract.INBOUND_PORT}
    config = MeshConfig()
    overrides = parse_overrides({}, config=config)
    listeners = translate((), overrides=overrides).listeners.values()  # over xDS
    ports = {x["name"]: x["address"]["socket_address"]["port_value"] for x in listeners}
    assert ports == {"outbound": contract.OUTBOUND_PORT, "inbound": contract.INBOUND_PORT}
    (own,) = bootstrap.shared(config)["static_resources"]["listeners"]
    served = {own["address"]["socket_address"]["port_value"],
              *(a["address"]["socket_address"]["port_value"] for a in own["additional_addresses"])}
    assert served == {contract.READINESS_PORT, contract.PROMETHEUS_PORT}


def test_mesh_init_exempts_the_uid_and_gid_the_proxy_runs_as() -> None:
    rules = _rules()
    assert f"--uid-owner {contract.PROXY_UID} " in rules
    assert f"--gid-owner {contract.PROXY_GID} " in rules
    spec = _injected()["spec"]
    proxy = next(c for c in spec["initContainers"] if c["name"] == contract.PROXY_NAME)
    security = proxy["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (
        contract.PROXY_UID, contract.PROXY_GID)


def test_the_injected_containers_use_the_contracts_names_ports_and_paths() -> None:
    spec = _injected()["spec"]
    names = [c["name"] for c in spec["initContainers"]]
    assert names[:2] == [contract.INIT_NAME, contract.PROXY_NAME]
    init, proxy = spec["initContainers"][:2]
    assert init["command"] == [contract.INIT_COMMAND]
    assert proxy["command"] == [contract.PROXY_COMMAND]
    assert {p["containerPort"] for p in proxy["ports"]} == {
        contract.READINESS_PORT, contract.PROMETHEUS_PORT}
    probe = proxy["readinessProbe"]["httpGet"]
    assert (probe["port"], probe["path"]) == (contract.READINESS_PORT, contract.READINESS_PATH)
