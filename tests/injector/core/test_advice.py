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
