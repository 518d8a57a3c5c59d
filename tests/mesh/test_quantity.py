"""Kubernetes quantities read exactly, checked against the Kubernetes client's own parser."""

from __future__ import annotations

from decimal import Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes.utils.quantity import parse_quantity as kubernetes_parse

from mesh.quantity import parse_quantity


@pytest.mark.parametrize(("text", "value"), [
    ("100m", Fraction(1, 10)), ("0.1", Fraction(1, 10)), ("2", 2), ("64Mi", 64 * 2**20),
    ("1Gi", 2**30), ("1.5G", 1_500_000_000), ("1k", 1000), ("1e3", 1000), ("1E3", 1000),
    ("1E", 10**18), ("2Ei", 2 * 2**60), ("1e-3", Fraction(1, 1000)), ("5.", 5),
    (".5", Fraction(1, 2)), ("+3", 3), ("-2M", -2_000_000), (" 256Mi ", 256 * 2**20),
])
def test_quantities_are_read_exactly(text: str, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "m", "1mi", "1 Mi", "1e", "1K", "1.2.3", "Mi", "1e99999",
                                  "0x10", "1_000", "\u0661"])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


NUMBER = st.one_of(
    st.integers(0, 10**9).map(str),
    st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)).map(lambda t: f"{t[0]}.{t[1]}"),
)
SUFFIX = st.one_of(
    st.sampled_from(["", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]),
    st.tuples(st.sampled_from("eE"), st.sampled_from(["", "+", "-"]), st.integers(0, 12)).map(
        lambda t: f"{t[0]}{t[1]}{t[2]}"),
)


@settings(max_examples=500, deadline=None)
@given(sign=st.sampled_from(["", "+", "-"]), number=NUMBER, suffix=SUFFIX)
def test_every_quantity_reads_as_the_kubernetes_client_reads_it(
    sign: str, number: str, suffix: str
) -> None:
    text = f"{sign}{number}{suffix}"
    with localcontext(prec=100):  # the client computes in Decimal: 28 digits would round
        expected = kubernetes_parse(text)
    assert isinstance(expected, Decimal)
    assert parse_quantity(text) == Fraction(expected)
