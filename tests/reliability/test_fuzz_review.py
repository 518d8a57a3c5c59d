"""Thousands of hostile AdmissionReviews against the pure review: a well-formed answer for each.

The review is what every byte the API server (or anyone who reaches the Service) sends goes
through, so it must never raise and never fail inside the injector: what cannot be read is a
400 with a reason, what can is allowed or denied with the request's uid. Volume lives here,
in-process (no server costs); tests/reliability/test_fuzz_server.py sends a sample over TLS.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from injector.core.review import review
from mesh.settings import MeshConfig
from tests.support.corpus import admission_review
from tests.support.hostile import broken_reviews, check_answer, deep, garbage_bodies

CONFIG = MeshConfig()
FUZZ = settings(
    max_examples=2500,
    deadline=None,
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _review(doc: Any) -> str:
    out = review(orjson.dumps(doc), config=CONFIG)
    assert out.outcome != "failed", out.detail
    return check_answer(out.status_code, out.body, doc)


def test_a_broken_review_gets_a_400_or_an_allow_or_a_deny_never_an_internal_failure() -> None:
    """Every answer well formed, and the fuzzer reached every kind of answer (one stuck at 400s
    would prove little). Counted in this test, so the count holds alone and in any order."""
    seen: Counter[str] = Counter()

    @FUZZ
    @given(broken_reviews())
    def one(doc: dict[str, Any]) -> None:
        seen[_review(doc)] += 1

    one()
    assert sum(seen.values()) >= 1000, f"the fuzzer ran only {sum(seen.values())} reviews: {seen}"
    assert seen["allowed"] > 100 and seen["denied"] > 20 and seen["bad-request"] > 100, seen


@settings(FUZZ, max_examples=1500)
@given(garbage_bodies())
def test_a_body_that_is_not_an_admission_review_gets_a_400_with_a_reason(body: bytes) -> None:
    out = review(body, config=CONFIG)
    assert out.status_code == 400 and out.outcome != "failed", out.body[:300]
    assert orjson.loads(out.body)["detail"]


@settings(FUZZ, max_examples=200)
@given(st.sampled_from(["containers", "initContainers", "volumes"]), st.integers(2, 1100))
def test_deep_nesting_inside_the_pod_is_answered(key: str, depth: int) -> None:
    """Nesting orjson parses (up to 1,024 levels) but copies and diffs must survive too."""
    item = {"name": "deep", "image": "x", "env": [{"name": "A", "value": "v", "x": deep(depth)}]}
    pod: dict[str, Any] = {"metadata": {}, "spec": {"containers": [{"name": "a", "image": "i"}]}}
    pod["spec"][key] = [*pod["spec"].get(key, []), item]
    doc = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u", "kind": {"kind": "Pod"}, "operation": "CREATE", "namespace": "shop",
        "object": pod}}
    body = orjson.dumps(doc)
    out = review(body, config=CONFIG)
    check_answer(out.status_code, out.body, doc)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("traffic.meshinject.io/exclude-inbound-ports", "9" * 5000),
        ("traffic.meshinject.io/include-outbound-ports", "80," + "1" * 4301),
        ("proxy.meshinject.io/concurrency", "9" * 5000),
        ("proxy.meshinject.io/concurrency", "²"),
    ],
    ids=["port-5000-digits", "port-in-list-4301-digits", "concurrency-5000-digits", "superscript"],
)
def test_a_number_int_cannot_read_is_denied_naming_the_annotation(key: str, value: str) -> None:
    """Found by the fuzzer: int() refuses over 4,300 digits (and "²") with a bare ValueError,
    which the review could only report as an internal error."""
    pod = {"metadata": {"annotations": {key: value}}, "spec": {"containers": [{"name": "a"}]}}
    doc = admission_review(pod, namespace="shop", uid="u")
    out = review(orjson.dumps(doc), config=CONFIG)
    assert check_answer(out.status_code, out.body, doc) == "denied"
    assert key in orjson.loads(out.body)["response"]["status"]["message"]


@pytest.mark.parametrize("value", ["0E100", "1e65", "5E-99"])
def test_a_memory_quantity_with_an_exponent_out_of_range_is_denied_naming_it(value: str) -> None:
    """Found by the fuzzer: the shape check let "0E100" through, and comparing the request
    with its limit read it exactly, which refuses such an exponent with a bare ValueError."""
    key = "proxy.meshinject.io/memory"
    pod = {"metadata": {"annotations": {key: value}}, "spec": {"containers": [{"name": "a"}]}}
    doc = admission_review(pod, namespace="shop", uid="u")
    out = review(orjson.dumps(doc), config=CONFIG)
    assert check_answer(out.status_code, out.body, doc) == "denied"
    assert f'{key}="{value}"' in orjson.loads(out.body)["response"]["status"]["message"]


@pytest.mark.parametrize("volume", [{"name": ["x"]}, {"name": {"a": 1}}, {}, "data", 7])
def test_a_volume_without_a_string_name_is_a_bad_request(volume: Any) -> None:
    """Found by the fuzzer: a volume named by a list reached the re-injection strip (a set
    lookup) and failed there; the API server never sends one, a hand-made body may."""
    pod = {"metadata": {}, "spec": {"containers": [{"name": "a"}], "volumes": [volume]}}
    doc = admission_review(pod, namespace="shop", uid="u")
    out = review(orjson.dumps(doc), config=CONFIG)
    assert check_answer(out.status_code, out.body, doc) == "bad-request"
    assert "request.object.spec.volumes[0]" in orjson.loads(out.body)["detail"]


@pytest.mark.parametrize("field", ["uid", "operation", "namespace"])
def test_a_field_nested_a_thousand_deep_is_a_bad_request_not_an_internal_error(field: str) -> None:
    """Found by the fuzzer over TLS: naming the bad value took its full repr, which recursed
    past Python's limit on the server's deeper stack."""
    pod = {"spec": {"containers": [{"name": "a"}]}}
    request: dict[str, Any] = {"uid": "u", "operation": "CREATE", "kind": {"kind": "Pod"},
                               "namespace": "x", "object": pod}
    request[field] = deep(1000)
    body = orjson.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                         "request": request})
    out = review(body, config=CONFIG)
    assert (out.status_code, out.outcome) == (400, "bad-request"), out.detail
    assert f"request.{field} must be" in out.detail
