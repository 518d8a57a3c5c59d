"""Parsers for single annotation values: durations, counts, percentages, booleans, ports,
quantities.

Each takes the annotation's name and its text and returns a plain value, or raises
:class:`~mesh.errors.AnnotationError` naming both, with what was expected. The port and CIDR
parsers are mesh-init's own (:mod:`initcontainer.config`), their ``ConfigError`` restated as the
annotation's, so the injector can never accept a value mesh-init would refuse.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from initcontainer import config as capture_config
from initcontainer.config import ConfigError, PortRange
from mesh.errors import AnnotationError, MeshError, PodErrors, one_or_all
from mesh.quantity import parse_quantity as exact_quantity

T = TypeVar("T")

UINT32 = 2**32 - 1
_DURATION = re.compile(r"([0-9]{1,9}(?:\.[0-9]{1,9})?|\.[0-9]{1,9})(ms|s|m|h)")
_PERCENT = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,6})?|\.[0-9]{1,6}")
_DIGITS = re.compile(r"[0-9]{1,10}")  # ASCII only: "²".isdigit() is true, int("²") fails
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_MAX_MS = 24 * 3_600_000
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
CPU = re.compile(r"^(\d+(\.\d+)?|\.\d+)m?$", re.ASCII)
MEMORY = re.compile(r"^(\d+(\.\d+)?|\.\d+)([eE]\d+|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$", re.ASCII)


def is_duration(text: str) -> bool:
    return _DURATION.fullmatch(text.strip()) is not None


def parse_duration_ms(name: str, value: str, *, allow_zero: bool = True) -> int:
    """``"250ms"`` -> 250, ``"2s"`` -> 2000; whole milliseconds, at most a day."""
    match = _DURATION.fullmatch(value.strip())
    if not match:
        raise AnnotationError(name, value, 'expected a duration like "250ms" or "2s"')
    ms = float(match.group(1)) * _UNIT_MS[match.group(2)]
    if ms != int(ms):
        raise AnnotationError(name, value, "durations are whole milliseconds")
    if ms > _MAX_MS:
        raise AnnotationError(name, value, "at most 24h")
    if ms == 0 and not allow_zero:
        raise AnnotationError(name, value, "must be more than zero")
    return int(ms)


def parse_count(name: str, value: str, *, low: int = 0, high: int = UINT32) -> int:
    text = value.strip()
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise AnnotationError(name, value, f"expected a whole number from {low} to {high}")
    return int(text)


def is_count(text: str) -> bool:
    return _DIGITS.fullmatch(text) is not None


def parse_percent(name: str, value: str) -> float:
    text = value.strip()
    if not _PERCENT.fullmatch(text) or not 0 <= float(text) <= 100:
        raise AnnotationError(name, value, "expected a percentage from 0 to 100")
    return float(text)


def parse_bool(name: str, value: str) -> bool:
    """The one boolean of our annotations: true/false, yes/no, on/off, 1/0, any case."""
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise AnnotationError(name, value, "expected true or false (or on/off)")


def parse_ports(name: str, value: str, *, example: str) -> tuple[PortRange, ...]:
    """mesh-init's port parser, its error restated as the annotation's, with an example."""
    try:
        return capture_config.parse_ports(name, value)
    except ConfigError as err:
        raise AnnotationError(name, value, f"expected ports like {example} ({err.why})") from err


MtlsMode = Literal["STRICT", "PERMISSIVE"]


def parse_mtls_mode(name: str, value: str) -> MtlsMode:
    """``strict`` or ``permissive`` (any case): whether plaintext from outside the mesh is
    refused or still accepted."""
    text = value.strip().upper()
    if text == "STRICT":
        return "STRICT"
    if text == "PERMISSIVE":
        return "PERMISSIVE"
    raise AnnotationError(name, value, 'expected "strict" or "permissive"')


def parse_quantity(name: str, value: str, *, pattern: re.Pattern[str], example: str) -> str:
    """A Kubernetes quantity (CPU or memory, by ``pattern``), stripped."""
    text = value.strip()
    # a quantity must fit Kubernetes' int64 milli-units; a few dozen characters is plenty
    if len(text) > 24 or not pattern.match(text):
        raise AnnotationError(name, value, f"expected a Kubernetes quantity like {example}")
    try:  # the pattern admits the shape; the exact reading bounds the exponent ("0E100")
        exact_quantity(text)
    except ValueError:
        raise AnnotationError(name, value, "the exponent is out of range; expected a Kubernetes "
                              f"quantity like {example}") from None
    return text


def by_mesh_init(name: str, value: str, parse: Callable[[str, str], T]) -> T:
    """Run one of mesh-init's parsers on an annotation, restating its error as the
    annotation's."""
    try:
        return parse(name, value)
    except ConfigError as err:
        raise AnnotationError(name, value, err.why) from err


class Problems:
    """The bad values of one pod, collected so that all of them are reported at once.

    ``take(fallback, parse, *args)`` runs one parser; a refusal is kept and ``fallback`` stands
    in, so the next annotation is still read. ``raise_any()`` raises what was kept: the one error
    itself (its message unchanged), or a :class:`~mesh.errors.PodErrors` of all."""

    def __init__(self) -> None:
        self.errors: list[MeshError] = []

    def take(self, fallback: T, parse: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return parse(*args, **kwargs)
        except (AnnotationError, PodErrors) as err:
            self.errors.append(err)
            return fallback

    def raise_any(self) -> None:
        if self.errors:
            raise one_or_all(self.errors)
