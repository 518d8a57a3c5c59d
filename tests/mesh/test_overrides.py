"""Pod annotations: every one accepted with a good value, refused by name with a bad one."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from initcontainer.config import CaptureConfig, PortRange
from mesh.errors import AnnotationError, MeshError, PodErrors
from mesh.overrides.pod import parse_overrides
from mesh.settings import CaptureDefaults, MeshConfig
from tests.support.pods import CONFIG

T = "traffic.meshinject.io/"
P = "proxy.meshinject.io/"
PROXY_PORTS = (PortRange(15021, 15021), PortRange(15090, 15090))


def net(text: str) -> Any:
    return ipaddress.ip_network(text)


GOOD_TRAFFIC: list[tuple[str, str, str, Any]] = [
    ("exclude-inbound-ports", "22,8000-8100", "exclude_inbound_ports",
     (PortRange(22, 22), PortRange(8000, 8100), *PROXY_PORTS)),
    ("include-inbound-ports", "80, 443", "include_inbound_ports",
     (PortRange(80, 80), PortRange(443, 443))),
    ("include-inbound-ports", "*", "include_inbound_ports", None),
    ("exclude-outbound-ports", "5432", "exclude_outbound_ports", (PortRange(5432, 5432),)),
    ("include-outbound-ports", "80,443", "include_outbound_ports",
     (PortRange(80, 80), PortRange(443, 443))),
    ("exclude-outbound-ip-ranges", "169.254.169.254/32,fd00::/8", "exclude_outbound_cidrs",
     (net("169.254.169.254/32"), net("fd00::/8"))),
    ("include-outbound-ip-ranges", "10.0.0.0/8", "include_outbound_cidrs", (net("10.0.0.0/8"),)),
    ("include-outbound-ip-ranges", "*", "include_outbound_cidrs", None),
    ("interception-mode", "TPROXY", "interception_mode", "TPROXY"),
    ("interception-mode", "redirect", "interception_mode", "REDIRECT"),
]

BAD_TRAFFIC = [
    ("exclude-inbound-ports", "abc"),
    ("include-inbound-ports", "0"),
    ("exclude-outbound-ports", "70000"),
    ("include-outbound-ports", "90-80"),
    ("exclude-outbound-ip-ranges", "10.0.0.1/8"),
    ("include-outbound-ip-ranges", "not-a-cidr"),
    ("interception-mode", "TEE"),
]


@pytest.mark.parametrize(("key", "value", "field", "expected"), GOOD_TRAFFIC)
def test_a_good_traffic_annotation_reaches_the_capture_config(
    key: str, value: str, field: str, expected: Any
) -> None:
    overrides = parse_overrides({T + key: value}, config=CONFIG)
    assert getattr(overrides.capture, field) == expected


@pytest.mark.parametrize(("key", "value"), BAD_TRAFFIC)
def test_a_bad_traffic_annotation_is_refused_naming_annotation_and_value(
    key: str, value: str
) -> None:
    with pytest.raises(AnnotationError) as caught:
        parse_overrides({T + key: value}, config=CONFIG)
    message = str(caught.value)
    assert f'annotation {T}{key}="{value}" is invalid: ' in message
    assert (caught.value.annotation, caught.value.value) == (T + key, value)


def test_a_bad_port_list_says_what_ports_look_like() -> None:
    with pytest.raises(AnnotationError, match="expected ports like 80,8000-8100"):
        parse_overrides({T + "exclude-inbound-ports": "abc"}, config=CONFIG)


def test_the_proxys_own_ports_are_never_captured_inbound() -> None:
    assert parse_overrides({}, config=CONFIG).capture.exclude_inbound_ports == PROXY_PORTS
    overrides = parse_overrides({T + "exclude-inbound-ports": "15000-15030"}, config=CONFIG)
    assert overrides.capture.exclude_inbound_ports == (PortRange(15000, 15030),
                                                        PortRange(15090, 15090))


def test_mesh_defaults_apply_until_an_annotation_replaces_them() -> None:
    config = MeshConfig(capture=CaptureDefaults(
        interception_mode="TPROXY", exclude_outbound_ports="25",
        exclude_outbound_ip_ranges="169.254.0.0/16"))
    capture = parse_overrides({}, config=config).capture
    assert capture == CaptureConfig(
        exclude_inbound_ports=PROXY_PORTS, exclude_outbound_ports=(PortRange(25, 25),),
        exclude_outbound_cidrs=(net("169.254.0.0/16"),), interception_mode="TPROXY")
    replaced = parse_overrides({T + "exclude-outbound-ports": "26"}, config=config).capture
    assert replaced.exclude_outbound_ports == (PortRange(26, 26),)


def test_a_bad_mesh_default_is_blamed_on_the_mesh_config_not_the_pod() -> None:
    config = MeshConfig(capture=CaptureDefaults(exclude_outbound_ports="x"))
    with pytest.raises(MeshError, match=r"capture\.excludeOutboundPorts") as caught:
        parse_overrides({}, config=config)
    assert not isinstance(caught.value, AnnotationError)


GOOD_PROXY: list[tuple[str, str, str, Any]] = [
    ("image", "registry.local/envoy:1.40@sha256:abc", "image",
     "registry.local/envoy:1.40@sha256:abc"),
    ("log-level", "DEBUG", "log_level", "debug"),
    ("concurrency", "4", "concurrency", 4),
    ("native-sidecar", "false", "native", False),
    ("native-sidecar", "true", "native", True),
]


@pytest.mark.parametrize(("key", "value", "field", "expected"), GOOD_PROXY)
def test_a_good_proxy_annotation_overrides_the_mesh_default(
    key: str, value: str, field: str, expected: Any
) -> None:
    assert getattr(parse_overrides({P + key: value}, config=CONFIG), field) == expected


@pytest.mark.parametrize(("key", "value"), [
    ("cpu", "100m"), ("cpu", "0.5"), ("cpu", "2"), ("memory", "64Mi"), ("memory", "1G"),
    ("cpu-limit", "1500m"), ("memory-limit", "128974848"), ("memory-limit", "129e6"),
])
def test_resource_annotations_accept_kubernetes_quantities(key: str, value: str) -> None:
    resources = parse_overrides({P + key: value}, config=CONFIG).resources
    assert getattr(resources, key.replace("-", "_")) == value


@pytest.mark.parametrize(("key", "value"), [
    ("cpu", "lots"), ("cpu", "100Mi"), ("memory", "64MB"), ("memory", "-1Gi"),
    ("cpu-limit", ""), ("memory-limit", "1.5.0Gi"), ("image", "has space"), ("image", ""),
    ("log-level", "verbose"), ("concurrency", "0"), ("concurrency", "65"),
    ("concurrency", "two"), ("native-sidecar", "maybe"), ("concurrency", "9" * 5000),
    ("concurrency", "\u00b2"), ("cpu", "1" * 5000), ("memory", "1" * 30 + "Mi"),
    ("image", "a" * 2000), ("memory", "0E100"), ("memory-limit", "1e65"),
])
def test_a_bad_proxy_annotation_is_refused_naming_annotation_and_value(
    key: str, value: str
) -> None:
    with pytest.raises(AnnotationError) as caught:
        parse_overrides({P + key: value}, config=CONFIG)
    assert f'annotation {P}{key}="{value}" is invalid: ' in str(caught.value)


def test_an_unquoted_number_in_yaml_is_refused_with_advice() -> None:
    with pytest.raises(AnnotationError, match="quote it"):
        parse_overrides({P + "concurrency": 4}, config=CONFIG)  # type: ignore[dict-item]


def test_l7_proxy_keys_are_parsed_by_the_l7_module_and_recorded() -> None:
    annotations = {P + "timeout": "2s", T + "interception-mode": "REDIRECT", "x": "y"}
    overrides = parse_overrides(annotations, config=CONFIG)
    assert overrides.proxy_annotations == (
        (P + "timeout", "2s"), (T + "interception-mode", "REDIRECT"))
    assert overrides.traffic.timeout_ms == 2000


def test_a_bad_l7_value_is_refused_at_admission_with_the_rest() -> None:
    with pytest.raises(AnnotationError, match=r'proxy\.meshinject\.io/timeout="anything"'):
        parse_overrides({P + "timeout": "anything"}, config=CONFIG)


def test_a_limit_alone_below_the_default_request_brings_the_request_down_to_it() -> None:
    resources = parse_overrides({P + "cpu-limit": "10m", P + "memory-limit": "32Mi"},
                                config=CONFIG).resources
    assert (resources.cpu, resources.cpu_limit) == ("10m", "10m")
    assert (resources.memory, resources.memory_limit) == ("32Mi", "32Mi")


def test_a_request_alone_above_the_default_limit_takes_the_limit_up_with_it() -> None:
    resources = parse_overrides({P + "memory": "512Mi", P + "cpu": "3"}, config=CONFIG).resources
    assert (resources.memory, resources.memory_limit) == ("512Mi", "512Mi")
    assert (resources.cpu, resources.cpu_limit) == ("3", "3")


def test_values_that_agree_are_kept_as_written_whatever_their_units() -> None:
    resources = parse_overrides({P + "cpu": "0.5", P + "cpu-limit": "500m",
                                 P + "memory": "1e9", P + "memory-limit": "1Gi"},
                                config=CONFIG).resources
    assert (resources.cpu, resources.cpu_limit, resources.memory, resources.memory_limit) == (
        "0.5", "500m", "1e9", "1Gi")


def test_a_request_above_its_limit_both_set_by_the_pod_is_refused_naming_both() -> None:
    with pytest.raises(AnnotationError) as caught:
        parse_overrides({P + "cpu": "2", P + "cpu-limit": "500m"}, config=CONFIG)
    assert str(caught.value) == (
        f'annotation {P}cpu="2" is invalid: the request is above {P}cpu-limit=\'500m\', and '
        "Kubernetes refuses a container whose request exceeds its limit")


def test_several_bad_values_are_reported_at_once() -> None:
    annotations = {P + "memory": "1Gi", P + "memory-limit": "1Mi", P + "log-level": "loud",
                   T + "exclude-inbound-ports": "x", P + "retries": "many", P + "concurrency": 4}
    with pytest.raises(PodErrors) as caught:
        parse_overrides(annotations, config=CONFIG)  # type: ignore[arg-type]
    named = [e.annotation for e in caught.value.errors]  # type: ignore[attr-defined]
    # the request over its limit is one problem, named by the request (its message names both)
    assert sorted(named) == sorted(key for key in annotations if key != P + "memory-limit")
    assert str(caught.value).startswith("5 problems: annotation proxy.meshinject.io/concurrency=")


def test_a_single_bad_value_keeps_its_own_message_and_type() -> None:
    with pytest.raises(AnnotationError) as caught:
        parse_overrides({P + "retries": "many", P + "cpu": "1"}, config=CONFIG)
    assert not isinstance(caught.value, PodErrors)
    assert str(caught.value).startswith(f'annotation {P}retries="many" is invalid: ')


@pytest.mark.parametrize(("value", "mode"), [("strict", "STRICT"), (" Permissive ", "PERMISSIVE")])
def test_the_mtls_annotation_sets_the_pods_own_mode(value: str, mode: str) -> None:
    assert parse_overrides({"security.meshinject.io/mtls": value}, config=CONFIG).mtls == mode
    assert parse_overrides({}, config=CONFIG).mtls is None  # left to policies and namespace


def test_a_bad_mtls_annotation_is_refused_naming_it_and_the_choices() -> None:
    with pytest.raises(AnnotationError) as refused:
        parse_overrides({"security.meshinject.io/mtls": "on"}, config=CONFIG)
    assert 'security.meshinject.io/mtls="on"' in str(refused.value)
    assert '"strict" or "permissive"' in str(refused.value)
