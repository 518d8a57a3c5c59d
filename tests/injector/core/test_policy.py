"""Who joins the mesh, and the reason given: one test per rule, in the order they apply."""

from __future__ import annotations

import pytest

from injector.core.patch import inject_pod
from injector.core.policy import OFFLINE, decide, flag_errors
from mesh.errors import AnnotationError, PodErrors
from mesh.settings import MeshConfig
from tests.support.pods import CONFIG, pod

ENABLED = {"meshinject.io/inject": "enabled"}


def test_a_pod_in_an_enabled_namespace_is_injected() -> None:
    decision = decide(pod(), namespace="shop", namespace_labels=ENABLED, config=CONFIG)
    assert (decision.inject, decision.code) == (True, "injected")
    assert "shop" in decision.reason


def test_a_host_network_pod_is_never_injected_even_when_it_opts_in() -> None:
    p = pod(labels={"meshinject.io/inject": "true"},
            spec={"hostNetwork": True, "containers": [{"name": "a", "image": "a"}]})
    decision = decide(p, namespace="shop", namespace_labels=ENABLED, config=CONFIG)
    assert (decision.inject, decision.code) == (False, "host-network")
    assert "hostNetwork" in decision.reason


@pytest.mark.parametrize(("spec", "how"), [
    ({"os": {"name": "windows"}}, "spec.os.name: windows"),
    ({"nodeSelector": {"kubernetes.io/os": "windows", "zone": "a"}},
     "nodeSelector kubernetes.io/os: windows"),
])
def test_a_windows_pod_is_skipped_with_the_reason_as_a_host_network_pod_is(
    spec: dict[str, object], how: str
) -> None:
    p = pod(labels={"meshinject.io/inject": "true"},
            spec={**spec, "containers": [{"name": "a", "image": "a"}]})
    for labels in (ENABLED, None):
        decision = decide(p, namespace="shop", namespace_labels=labels, config=CONFIG)
        assert (decision.inject, decision.code) == (False, "windows")
        assert decision.reason == (f"the pod runs on Windows ({how}), where mesh-init's "
                                   "iptables rules and the Linux proxy cannot run")
    result = inject_pod(p, config=CONFIG, namespace="shop")
    assert (result.decision.code, result.patch) == ("windows", [])


def test_a_linux_pod_and_a_pod_naming_no_os_are_injected() -> None:
    for spec in ({"os": {"name": "linux"}}, {"nodeSelector": {"kubernetes.io/os": "linux"}}, {}):
        p = pod(spec={**spec, "containers": [{"name": "a", "image": "a"}]})
        assert decide(p, namespace="shop", namespace_labels=ENABLED, config=CONFIG).inject


@pytest.mark.parametrize("where", ["labels", "annotations"])
@pytest.mark.parametrize("value", ["maybe", "yes", "", "1", "enable"])
def test_an_inject_value_we_cannot_read_is_refused_naming_where_and_value(
    where: str, value: str
) -> None:
    p = pod(**{where: {"meshinject.io/inject": value}})  # type: ignore[arg-type]
    [error] = flag_errors(p)
    assert str(error) == (f'{where[:-1]} meshinject.io/inject="{value}" is invalid: expected '
                          "true or false (or enabled/disabled)")
    with pytest.raises(AnnotationError, match=f'{where[:-1]} meshinject.io/inject="{value}"'):
        inject_pod(p, config=CONFIG, namespace="shop")


@pytest.mark.parametrize("value", ["true", "FALSE", " Enabled ", "disabled"])
def test_the_inject_values_we_read_are_not_errors(value: str) -> None:
    assert flag_errors(pod(labels={"meshinject.io/inject": value},
                           annotations={"meshinject.io/inject": value})) == []


def test_a_bad_inject_value_is_reported_with_every_other_problem_of_the_pod() -> None:
    p = pod(labels={"meshinject.io/inject": "maybe"},
            annotations={"meshinject.io/inject": "sure", "proxy.meshinject.io/retries": "many"})
    with pytest.raises(PodErrors) as caught:
        inject_pod(p, config=CONFIG, namespace="shop")
    assert [e.annotation for e in caught.value.errors] == [  # type: ignore[attr-defined]
        "meshinject.io/inject", "meshinject.io/inject", "proxy.meshinject.io/retries"]


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public", "kube-node-lease"])
def test_a_pod_in_a_system_namespace_is_not_injected(namespace: str) -> None:
    decision = decide(pod(), namespace=namespace, namespace_labels=None, config=CONFIG)
    assert (decision.inject, decision.code) == (False, "system-namespace")
    assert namespace in decision.reason


def test_a_pod_in_the_injectors_own_namespace_is_not_injected() -> None:
    config = MeshConfig(injector_namespace="mesh-ctl")
    decision = decide(pod(), namespace="mesh-ctl", namespace_labels=ENABLED, config=config)
    assert (decision.inject, decision.code) == (False, "injector-namespace")


@pytest.mark.parametrize("where", ["labels", "annotations"])
@pytest.mark.parametrize("value", ["false", "False", "disabled"])
def test_a_pod_opted_out_by_label_or_annotation_is_not_injected(where: str, value: str) -> None:
    p = pod(**{where: {"meshinject.io/inject": value}})  # type: ignore[arg-type]
    decision = decide(p, namespace="shop", namespace_labels=ENABLED, config=CONFIG)
    assert (decision.inject, decision.code) == (False, "opted-out")
    assert where.rstrip("s") in decision.reason


def test_an_opt_out_wins_over_an_opt_in() -> None:
    p = pod(labels={"meshinject.io/inject": "true"},
            annotations={"meshinject.io/inject": "false"})
    assert decide(p, namespace="shop", namespace_labels=ENABLED, config=CONFIG).code == "opted-out"


def test_without_namespace_labels_the_caller_has_already_chosen_injection() -> None:
    decision = decide(pod(), namespace="shop", namespace_labels=None, config=CONFIG)
    assert (decision.inject, decision.code) == (True, "injected")


def test_offline_the_reason_says_that_inject_is_the_opt_in_and_how_to_judge_otherwise() -> None:
    decision = decide(pod(), namespace="shop", namespace_labels=None, config=CONFIG,
                      requested=OFFLINE)
    assert decision.inject and decision.reason == OFFLINE
    assert "--namespace-label" in OFFLINE
    opted = decide(pod(labels={"meshinject.io/inject": "true"}), namespace="shop",
                   namespace_labels=None, config=CONFIG, requested=OFFLINE)
    assert opted.reason == "the pod opts in with label meshinject.io/inject=true"


def test_a_pod_in_a_namespace_not_enabled_is_skipped_with_the_reason() -> None:
    decision = decide(pod(), namespace="shop", namespace_labels={"team": "a"}, config=CONFIG)
    assert (decision.inject, decision.code) == (False, "namespace-not-enabled")
    assert "meshinject.io/inject=enabled" in decision.reason


@pytest.mark.parametrize("where", ["labels", "annotations"])
def test_a_pod_can_opt_in_when_its_namespace_is_not_enabled(where: str) -> None:
    p = pod(**{where: {"meshinject.io/inject": "true"}})  # type: ignore[arg-type]
    decision = decide(p, namespace="shop", namespace_labels={}, config=CONFIG)
    assert (decision.inject, decision.code) == (True, "injected")
    assert "opts in" in decision.reason


def test_a_template_without_metadata_or_spec_is_decided_without_crashing() -> None:
    assert decide({}, namespace="shop", namespace_labels=None, config=CONFIG).inject
