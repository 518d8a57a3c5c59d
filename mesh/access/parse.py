"""An AccessPolicy from the Kubernetes JSON, checked field by field, every problem at once.

The CRD's schema (manifests/base/accesspolicy.yaml) refuses most of these at ``kubectl apply``;
this parser refuses the same and a little more (it is what the control plane and ``meshinject
access`` trust), and never guesses: an unknown field is an error, because ``form:`` for
``from:`` would otherwise silently mean "any caller". Each problem names the field path and the
value, e.g. ``spec.allow[0].from.serviceAccounts[1]="shop": expected namespace/name``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from mesh.access.model import (
    OPERATORS,
    AccessPolicy,
    Callers,
    Operator,
    Requirement,
    Rule,
    Selector,
    Targets,
)
from mesh.access.paths import normalize
from mesh.contract import ACCESS_POLICY_GROUP, ACCESS_POLICY_KIND, ACCESS_POLICY_VERSION
from mesh.errors import PolicyError
from mesh.overrides.values import MtlsMode

T = TypeVar("T")

API_VERSION = f"{ACCESS_POLICY_GROUP}/{ACCESS_POLICY_VERSION}"
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*"
                           r"[a-z0-9])?)*")
LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?")
METHOD = re.compile(r"[A-Z]+(-[A-Z]+)*")
PATH = re.compile(r"/[!-~]*")  # printable ASCII, no space
SPEC_FIELDS = ("selector", "mtls", "allow")
RULE_FIELDS = ("from", "to")
FROM_FIELDS = ("serviceAccounts", "namespaces")
TO_FIELDS = ("ports", "methods", "paths")
MAX_PORT = 65535


def shown(value: Any) -> str:
    """A value as the message quotes it: JSON, cut short if long."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


class Fields:
    """The problems of one policy, gathered while every field is still read."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, where: str, value: Any, why: str) -> None:
        self.problems.append(f"{where}={shown(value)}: {why}")

    def mapping(self, where: str, value: Any) -> Mapping[str, Any] | None:
        if isinstance(value, Mapping):
            return value
        self.bad(where, value, "expected an object")
        return None

    def known(self, where: str, value: Mapping[str, Any], fields: Sequence[str]) -> None:
        for key in value:
            if key not in fields:
                self.bad(f"{where}.{key}", value[key],
                         f"unknown field (expected {', '.join(fields)})")

    def items(self, where: str, value: Any, item: Callable[[str, Any], T | None],
              *, empty_ok: bool = False) -> tuple[T, ...]:
        """A list, each entry read by ``item``; duplicates and (unless ``empty_ok``) an empty
        list are refused, as the CRD's list type "set" and minItems refuse them."""
        if not isinstance(value, list):
            self.bad(where, value, "expected a list")
            return ()
        if not value and not empty_ok:
            self.bad(where, value, "expected at least one entry (omit the field otherwise)")
        out: list[T] = []
        seen: set[tuple[str, Any]] = set()
        for i, entry in enumerate(value):
            if isinstance(entry, (str, int, float)):  # scalars: a set, as the CRD says
                marker = (type(entry).__name__, entry)
                if marker in seen:
                    self.bad(f"{where}[{i}]", entry, "listed twice")
                    continue
                seen.add(marker)
            read = item(f"{where}[{i}]", entry)
            if read is not None:
                out.append(read)
        return tuple(out)

    def string(self, where: str, value: Any, pattern: re.Pattern[str], why: str) -> str | None:
        if isinstance(value, str) and pattern.fullmatch(value):
            return value
        self.bad(where, value, why if isinstance(value, str) else "expected a string")
        return None


def _label_key(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    return bool(LABEL_NAME.fullmatch(name)) and (
        not slash or bool(DNS_SUBDOMAIN.fullmatch(prefix)))


def _selector(f: Fields, where: str, value: Any) -> Selector:
    found = f.mapping(where, value)
    if found is None:
        return Selector()
    f.known(where, found, ("matchLabels", "matchExpressions"))
    labels: list[tuple[str, str]] = []
    raw_labels = found.get("matchLabels", {})
    if f.mapping(f"{where}.matchLabels", raw_labels) is not None:
        for key, val in sorted(raw_labels.items()):
            at = f"{where}.matchLabels.{key}"
            if not _label_key(key):
                f.bad(at, val, "the key is not a valid label key")
            elif f.string(at, val, LABEL_VALUE, "expected a label value (at most 63 letters, "
                          "digits, '-', '_' or '.', starting and ending alphanumeric)"):
                labels.append((key, val))
    exprs = f.items(f"{where}.matchExpressions", found.get("matchExpressions", []),
                    lambda at, e: _requirement(f, at, e), empty_ok=True)
    return Selector(tuple(labels), exprs)


def _requirement(f: Fields, where: str, value: Any) -> Requirement | None:
    found = f.mapping(where, value)
    if found is None:
        return None
    f.known(where, found, ("key", "operator", "values"))
    key, op, values = found.get("key"), found.get("operator"), found.get("values")
    ok = True
    if not isinstance(key, str) or not _label_key(key):
        f.bad(f"{where}.key", key, "expected a label key")
        ok = False
    if op not in OPERATORS:
        f.bad(f"{where}.operator", op, f"expected one of {', '.join(OPERATORS)}")
        return None
    listed: tuple[str, ...] = ()
    if op in ("In", "NotIn"):
        if values is None:
            f.bad(f"{where}.values", values, f"{op} needs at least one value")
            ok = False
        else:
            listed = f.items(f"{where}.values", values, lambda at, v: f.string(
                at, v, LABEL_VALUE, "expected a label value"))
    elif values:
        f.bad(f"{where}.values", values, f"{op} takes no values")
        ok = False
    return Requirement(cast(str, key), cast(Operator, op), listed) if ok else None


def _service_account(f: Fields, where: str, value: Any) -> tuple[str, str] | None:
    if isinstance(value, str):
        ns, slash, name = value.partition("/")
        if slash and DNS_LABEL.fullmatch(ns) and DNS_SUBDOMAIN.fullmatch(name):
            return ns, name
        f.bad(where, value, "expected namespace/name (a service account, e.g. shop/frontend)")
        return None
    f.bad(where, value, "expected a string namespace/name")
    return None


def _callers(f: Fields, where: str, value: Any) -> Callers | None:
    found = f.mapping(where, value)
    if found is None:
        return None
    f.known(where, found, FROM_FIELDS)
    if not any(k in found for k in FROM_FIELDS):
        if not found:  # else an unknown field was named already
            f.bad(where, value, "names no caller: list serviceAccounts or namespaces, or omit "
                  "from to allow any caller (plaintext too)")
        return None
    accounts = f.items(f"{where}.serviceAccounts", found["serviceAccounts"],
                       lambda at, v: _service_account(f, at, v)) \
        if "serviceAccounts" in found else ()
    spaces = f.items(f"{where}.namespaces", found["namespaces"], lambda at, v: f.string(
        at, v, DNS_LABEL, "expected a namespace name")) if "namespaces" in found else ()
    return Callers(accounts, spaces)


def _port(f: Fields, where: str, value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_PORT:
        return value
    f.bad(where, value, f"expected a port number from 1 to {MAX_PORT}")
    return None


def _path(f: Fields, where: str, value: Any) -> str | None:
    found = f.string(where, value, PATH, 'expected a path starting with "/" (printable ASCII, '
                     'no spaces)')
    if found is None:
        return None
    prefix = found.endswith("*")
    body = found.removesuffix("*")
    # a prefix ends mid-segment: probe it with one more character, so "/api/.*" stays legal
    probe = body + "x" if prefix else body
    if "*" in body:
        f.bad(where, value, 'a "*" may only end a path (a prefix, like /api/*)')
    elif "?" in found or "#" in found:
        f.bad(where, value, "paths are compared without the query string or fragment")
    elif normalize(probe) != probe:
        meant = normalize(probe)[:-1] + "*" if prefix else normalize(probe)
        f.bad(where, value, "requests are compared after normalization (no //, . or .. "
              "segments, backslashes or escaped letters, digits or slashes), which would "
              f"never leave this path: write {meant}")
    else:
        return found
    return None


def _targets(f: Fields, where: str, value: Any) -> Targets | None:
    found = f.mapping(where, value)
    if found is None:
        return None
    f.known(where, found, TO_FIELDS)
    if not any(k in found for k in TO_FIELDS):
        if not found:
            f.bad(where, value, "names nothing: list ports, methods or paths, or omit to "
                  "to allow every port, method and path")
        return None

    def read(key: str, item: Callable[[str, Any], T | None]) -> tuple[T, ...]:
        return f.items(f"{where}.{key}", found[key], item) if key in found else ()

    return Targets(
        ports=read("ports", lambda at, v: _port(f, at, v)),
        methods=read("methods", lambda at, v: f.string(
            at, v, METHOD, "expected an upper-case HTTP method like GET (methods are "
            "case-sensitive)")),
        paths=read("paths", lambda at, v: _path(f, at, v)),
    )


def _rule(f: Fields, where: str, value: Any) -> Rule | None:
    found = f.mapping(where, value)
    if found is None:
        return None
    f.known(where, found, RULE_FIELDS)
    callers = _callers(f, f"{where}.from", found["from"]) if "from" in found else None
    targets = _targets(f, f"{where}.to", found["to"]) if "to" in found else None
    return Rule(callers, targets)


def _mtls(f: Fields, value: Any) -> MtlsMode | None:
    if value in ("STRICT", "PERMISSIVE"):
        return cast(MtlsMode, value)
    f.bad("spec.mtls", value, "expected STRICT or PERMISSIVE")
    return None


def _identity(f: Fields, obj: Mapping[str, Any]) -> tuple[str, str]:
    if obj.get("apiVersion", API_VERSION) != API_VERSION:
        f.bad("apiVersion", obj.get("apiVersion"), f"expected {API_VERSION}")
    if obj.get("kind", ACCESS_POLICY_KIND) != ACCESS_POLICY_KIND:
        f.bad("kind", obj.get("kind"), f"expected {ACCESS_POLICY_KIND}")
    meta = f.mapping("metadata", obj.get("metadata")) or {}
    ns, name = meta.get("namespace"), meta.get("name")
    f.string("metadata.namespace", ns, DNS_LABEL, "expected a namespace name")
    f.string("metadata.name", name, DNS_SUBDOMAIN, "expected a Kubernetes object name")
    return (ns if isinstance(ns, str) else "?"), (name if isinstance(name, str) else "?")


def parse_policy(obj: Mapping[str, Any]) -> AccessPolicy:
    """The policy ``obj`` (as the API server returns it) says, or PolicyError listing every
    problem. ``spec`` is required; an omitted ``selector`` selects every pod of the namespace,
    an omitted or empty ``allow`` allows them nothing."""
    f = Fields()
    if not isinstance(obj, Mapping):
        raise PolicyError("?", [f"expected an object, got {shown(obj)}"])
    ns, name = _identity(f, obj)
    if "spec" not in obj:
        f.bad("spec", None, "required (spec: {} protects every pod of the namespace and "
              "allows nothing)")
    spec = f.mapping("spec", obj.get("spec", {})) or {}
    f.known("spec", spec, SPEC_FIELDS)
    selector = _selector(f, "spec.selector", spec["selector"]) if "selector" in spec \
        else Selector()
    mtls = _mtls(f, spec["mtls"]) if "mtls" in spec else None
    allow = f.items("spec.allow", spec.get("allow", []), lambda at, r: _rule(f, at, r),
                    empty_ok=True)
    if f.problems:
        raise PolicyError(f"{ns}/{name}", f.problems)
    return AccessPolicy(ns, name, selector, mtls, allow)
