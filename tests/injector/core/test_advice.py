"""Warnings for injected pods whose settings will not do together what the user expects."""

from __future__ import annotations

from typing import Any

import pytest

from injector.core import advice
from mesh.contract import DRAIN_TIME
from mesh.overrides.pod import parse_overrides
from mesh.settings import MeshConfig
from tests.support.pods import CONFIG, pod

UNSET = object()


def warnings_for(
    drain: str | None, grace: Any = UNSET, config: MeshConfig = CONFIG
) -> tuple[str, ...]:
    annotations = {} if drain is None else {DRAIN_TIME: drain}
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "app"}]}
    if grace is not UNSET:
        spec["terminationGracePeriodSeconds"] = grace
    subject = pod(annotations=annotations, spec=spec)
    return advice.warnings(subject, parse_overrides(annotations, config=config))


def test_the_defaults_warn_about_nothing() -> None:
    assert warnings_for(None) == ()


@pytest.mark.parametrize(("drain", "grace"), [("30s", UNSET), ("45s", None), ("10s", 10),
                                               ("2s", 0)])
def test_a_drain_that_outlasts_the_grace_period_is_named_with_both_values(
    drain: str, grace: Any
) -> None:
    [warning] = warnings_for(drain, grace)
    seconds = int(drain.removesuffix("s"))
    assert f"drain time is {seconds}s ({DRAIN_TIME})" in warning
    expected = 30 if grace in (UNSET, None) else grace  # the API server's default
    assert f"terminationGracePeriodSeconds is {expected}s" in warning


def test_a_mesh_wide_drain_time_is_named_as_the_mesh_configs() -> None:
    [warning] = warnings_for(None, config=MeshConfig.model_validate(
        {"proxy": {"drainSeconds": 30}}))
    assert "drain time is 30s (the mesh config's proxy.drainSeconds)" in warning


@pytest.mark.parametrize(("drain", "grace"), [("29s", UNSET), ("45s", 60), ("5s", 6),
                                               ("0s", 0)])
def test_a_drain_inside_the_grace_period_is_fine(drain: str, grace: Any) -> None:
    assert warnings_for(drain, grace) == ()


@pytest.mark.parametrize("grace", ["30", True, 1.5])
def test_a_grace_period_that_is_not_a_number_is_left_to_the_api_server(grace: Any) -> None:
    assert warnings_for("45s", grace) == ()


@pytest.mark.parametrize(("key", "nearest"), [
    ("proxy.meshinject.io/retrys", "proxy.meshinject.io/retries"),
    ("proxy.meshinject.io/timout", "proxy.meshinject.io/timeout"),
    ("traffic.meshinject.io/exclude-inbound-port", "traffic.meshinject.io/exclude-inbound-ports"),
    # under the wrong prefix: the nearest key is under the other
    ("proxy.meshinject.io/exclude-outbound-ports", "traffic.meshinject.io/exclude-outbound-ports"),
])
def test_an_unknown_key_under_our_prefixes_warns_naming_it_and_the_nearest_known_key(
    key: str, nearest: str
) -> None:
    annotations = {key: "3"}
    [warning] = advice.warnings(pod(annotations=annotations),
                                parse_overrides(annotations, config=CONFIG))
    assert warning == (f"annotation {key} is not one meshinject reads, so it changes nothing; "
                       f"did you mean {nearest}?")


def test_an_unknown_key_nothing_like_ours_warns_without_a_guess() -> None:
    annotations = {"proxy.meshinject.io/zzzz": "1", "example.com/retrys": "3"}
    [warning] = advice.warnings(pod(annotations=annotations),
                                parse_overrides(annotations, config=CONFIG))
    assert warning.startswith("annotation proxy.meshinject.io/zzzz is not one meshinject reads")
    assert warning.endswith("see docs/proxy.md")


def test_every_key_meshinject_reads_is_known() -> None:
    from mesh.contract import KNOWN_ANNOTATIONS

    assert "proxy.meshinject.io/retries" in KNOWN_ANNOTATIONS
    assert "traffic.meshinject.io/opaque-ports" in KNOWN_ANNOTATIONS
    assert "proxy.meshinject.io/" not in KNOWN_ANNOTATIONS


def classic_job_pod(policy: str | None, *, owner: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "app"}]}
    if policy:
        spec["restartPolicy"] = policy
    subject = pod(spec=spec)
    if owner:
        subject["metadata"]["ownerReferences"] = [{"kind": owner, "name": "x", "controller": True}]
    return subject


@pytest.mark.parametrize("policy", ["Never", "OnFailure"])
def test_classic_mode_on_a_pod_that_runs_to_completion_warns_that_it_never_completes(
    policy: str
) -> None:
    annotations = {"proxy.meshinject.io/native-sidecar": "false"}
    overrides = parse_overrides(annotations, config=CONFIG)
    [warning] = advice.warnings(classic_job_pod(policy), overrides)
    assert warning == ("the proxy is a classic sidecar (proxy.meshinject.io/native-sidecar=false) "
                       f"and never exits, so a pod with restartPolicy {policy} (a Job's, a "
                       "CronJob's) never completes; use native sidecars (Kubernetes 1.29+)")
    [owned] = advice.warnings(classic_job_pod(policy, owner="Job"), overrides)
    assert "so the Job's pod never completes" in owned
    classic = MeshConfig(native_sidecars=False)
    [by_config] = advice.warnings(classic_job_pod(policy),
                                  parse_overrides({}, config=classic))
    assert "classic sidecar (the mesh config's nativeSidecars)" in by_config


@pytest.mark.parametrize(("policy", "native"), [("Always", False), (None, False),
                                                ("Never", True), ("OnFailure", True)])
def test_a_pod_that_keeps_running_or_has_a_native_sidecar_gets_no_such_warning(
    policy: str | None, native: bool
) -> None:
    overrides = parse_overrides({}, config=MeshConfig(native_sidecars=native))
    assert advice.warnings(classic_job_pod(policy), overrides) == ()
