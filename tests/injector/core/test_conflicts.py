"""A pod whose own spec clashes with what injection adds is refused, naming container and value."""

from __future__ import annotations

from typing import Any

import pytest

from injector.core import conflicts
from injector.core.patch import inject_pod
from mesh.errors import PodErrors, SpecError
from tests.support.pods import CONFIG, pod


def refusal(spec: dict[str, Any]) -> str:
    with pytest.raises((SpecError, PodErrors)) as caught:
        inject_pod(pod(spec=spec), config=CONFIG, namespace="shop")
    return str(caught.value)


def app(**fields: Any) -> dict[str, Any]:
    return {"name": "app", "image": "a", **fields}


@pytest.mark.parametrize(("port", "role"), [
    (15000, "the proxy's admin API"), (15001, "the proxy's outbound capture listener"),
    (15006, "the proxy's inbound capture listener"), (15021, "the proxy's readiness endpoint"),
    (15090, "the proxy's Prometheus endpoint"),
])
def test_an_app_declaring_a_port_the_proxy_listens_on_is_refused_naming_port_and_container(
    port: int, role: str
) -> None:
    message = refusal({"containers": [app(ports=[{"containerPort": 8080},
                                                 {"containerPort": port}])]})
    assert message.startswith(f"spec.containers[0] (app): containerPort {port} is {role}")
    assert "15000, 15001, 15006, 15021, 15090" in message


def test_a_udp_port_does_not_clash_with_the_proxys_tcp_listeners() -> None:
    spec = {"containers": [app(ports=[{"containerPort": 15001, "protocol": "UDP"}])]}
    assert inject_pod(pod(spec=spec), config=CONFIG, namespace="shop").decision.inject


@pytest.mark.parametrize(("spec", "source"), [
    ({"containers": [app(securityContext={"runAsUser": 1337})]}, "securityContext.runAsUser"),
    ({"securityContext": {"runAsUser": 1337}, "containers": [app()]},
     "spec.securityContext.runAsUser"),
    ({"initContainers": [app(name="setup", securityContext={"runAsUser": 1337})],
      "containers": [app()]}, "securityContext.runAsUser"),
])
def test_an_app_running_as_the_proxys_uid_is_refused_naming_uid_and_container(
    spec: dict[str, Any], source: str
) -> None:
    message = refusal(spec)
    assert f"runs as uid 1337 ({source}), the proxy's uid" in message
    assert "would bypass the mesh" in message
    assert message.startswith(("spec.containers[0] (app)", "spec.initContainers[0] (setup)"))


def test_the_proxys_gid_is_refused_too_as_the_capture_rules_exempt_it() -> None:
    message = refusal({"containers": [app(securityContext={"runAsGroup": 1337})]})
    assert "runs as gid 1337 (securityContext.runAsGroup)" in message


def test_a_containers_own_uid_overrides_the_pods() -> None:
    spec = {"securityContext": {"runAsUser": 1337},
            "containers": [app(securityContext={"runAsUser": 1000})]}
    assert conflicts.problems(pod(spec=spec)) == []
    spec = {"securityContext": {"runAsUser": 1000},
            "containers": [app(securityContext={"runAsUser": 1337})]}
    assert len(conflicts.problems(pod(spec=spec))) == 1


def test_every_clash_of_a_pod_is_reported_at_once() -> None:
    spec = {"securityContext": {"runAsUser": 1337},
            "containers": [app(ports=[{"containerPort": 15006}]),
                           {"name": "mesh-proxy", "image": "x"}]}
    subject = pod(spec=spec, annotations={"proxy.meshinject.io/log-level": "loud"})
    with pytest.raises(PodErrors) as caught:
        inject_pod(subject, config=CONFIG, namespace="shop")
    fields = [getattr(e, "field", getattr(e, "annotation", None)) for e in caught.value.errors]
    assert fields == ["proxy.meshinject.io/log-level", "spec.containers[0] (app)",
                      "spec.containers[0] (app)", "spec.containers[1] (mesh-proxy)",
                      "spec.containers[1] (mesh-proxy)"]
    assert str(caught.value).startswith("5 problems: annotation proxy.meshinject.io/log-level=")


def test_the_injected_sidecars_are_not_judged_as_the_users() -> None:
    once = inject_pod(pod(), config=CONFIG, namespace="shop").pod
    assert conflicts.problems(once) == []  # the proxy listens on 15021 and runs as 1337
    assert inject_pod(once, config=CONFIG, namespace="shop").patch == []


def test_a_users_volume_named_like_the_proxys_credentials_is_refused_not_replaced() -> None:
    spec = {"containers": [{"name": "app", "image": "a"}],
            "volumes": [{"name": "meshinject-token", "emptyDir": {}}]}
    with pytest.raises(SpecError) as caught:
        inject_pod(pod(spec=spec), config=CONFIG, namespace="shop")
    assert "spec.volumes[0] (meshinject-token)" in str(caught.value)
    assert "reserved" in str(caught.value)


def test_the_injected_volumes_are_recognised_and_replaced_on_reinjection() -> None:
    once = inject_pod(pod(), config=CONFIG, namespace="shop").pod
    twice = inject_pod(once, config=CONFIG, namespace="shop").pod
    assert twice == once
    assert [v["name"] for v in twice["spec"]["volumes"]] == ["meshinject-token", "meshinject-ca"]
