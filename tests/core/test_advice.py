"""Warnings for injected pods whose settings will not do together what the user expects."""

from __future__ import annotations

from typing import Any

import pytest

from injector import advice
from injector.annotations import parse_overrides
from injector.traffic_policy import DRAIN_TIME
from tests.core.pods import CONFIG, pod


def warnings_for(drain: str | None, grace: Any = None) -> tuple[str, ...]:
    annotations = {} if drain is None else {DRAIN_TIME: drain}
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "app"}]}
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    subject = pod(annotations=annotations, spec=spec)
    return advice.warnings(subject, parse_overrides(annotations, config=CONFIG))


def test_the_defaults_warn_about_nothing() -> None:
    assert warnings_for(None) == ()


@pytest.mark.parametrize(("drain", "grace"), [("30s", None), ("45s", None), ("10s", 10),
                                               ("2s", 0)])
def test_a_drain_that_outlasts_the_grace_period_is_named_with_both_values(
    drain: str, grace: int | None
) -> None:
    [warning] = warnings_for(drain, grace)
    seconds = int(drain.removesuffix("s"))
    assert f"{DRAIN_TIME} is {seconds}s" in warning
    assert f"terminationGracePeriodSeconds is {30 if grace is None else grace}s" in warning


@pytest.mark.parametrize(("drain", "grace"), [("29s", None), ("45s", 60), ("5s", 6)])
def test_a_drain_inside_the_grace_period_is_fine(drain: str, grace: int | None) -> None:
    assert warnings_for(drain, grace) == ()


@pytest.mark.parametrize("grace", ["30", True, 1.5])
def test_a_grace_period_that_is_not_a_number_is_left_to_the_api_server(grace: Any) -> None:
    assert warnings_for("45s", grace) == ()
