"""meshinject's one error tree, drawn in one place.

Every refusal of the product is a :class:`MeshError`, with a message meant for the person who
wrote the input; the edges (the webhook, the CLI, the sandbox) catch it and turn it into a
denial, a 400 or an exit code. Foreign exceptions (YAML, JSON, the Kubernetes client, ``ip``,
mesh-init's ``ConfigError``) are translated where they are caught, with ``raise ... from``, so a
traceback still shows the cause while callers need to know only this module.

::

    MeshError
    +-- AnnotationError      a pod annotation's (or label's) value (the webhook denies the pod)
    +-- SpecError            a pod's spec clashes with what injection adds (a name, port or uid)
    +-- PodErrors            every problem of one pod at once (each one of the above)
    +-- ManifestError        an offline manifest: which document, of what kind
    +-- ReviewError          an AdmissionReview we cannot parse (HTTP 400)
    +-- SettingsError        the mesh config: which field
    +-- PolicyError          an AccessPolicy: every problem, each naming its field
    +-- UsageError           a command-line flag or combination
    +-- KubeError            a Kubernetes API call (status 0: no answer)
    |   +-- NotFound         404
    |   +-- Conflict         409
    +-- SandboxError         the local sandbox cannot run or stop what it was asked to
        +-- NetnsError       an ``ip`` command failed
"""

from __future__ import annotations

import json
from collections.abc import Sequence


class MeshError(Exception):
    """Anything meshinject refuses, with a message meant for the person who wrote the input."""


class AnnotationError(MeshError):
    """A pod annotation has a value we cannot use; the message names the annotation and value.

    ``where`` is ``"label"`` for the one key we read from labels too (``meshinject.io/inject``),
    so the message names what the user must edit."""

    def __init__(self, annotation: str, value: str, why: str, *, where: str = "annotation"
                 ) -> None:
        quoted = json.dumps(value, ensure_ascii=False)
        super().__init__(f"{where} {annotation}={quoted} is invalid: {why}")
        self.annotation = annotation
        self.value = value
        self.why = why
        self.where = where


class SpecError(MeshError):
    """The pod's own spec clashes with what injection adds: a container named like ours, a port
    the proxy listens on, the uid the capture rules exempt. ``field`` says where (e.g.
    ``spec.containers[0] (app)``), so the user can find it."""

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}")
        self.field = field
        self.why = why


class PodErrors(MeshError):
    """Several problems of one pod, reported at once so one round of fixes is enough: the
    message joins them, ``errors`` keeps each. :func:`one_or_all` builds it, and keeps a single
    error as itself (its message unchanged)."""

    def __init__(self, errors: Sequence[MeshError]) -> None:
        joined = "; ".join(str(e) for e in errors)
        super().__init__(f"{len(errors)} problems: {joined}")
        self.errors = tuple(errors)


def one_or_all(errors: Sequence[MeshError]) -> MeshError:
    """The error to raise for these problems (at least one): itself when alone; several are
    flattened (a PodErrors inside is opened) into one PodErrors."""
    flat = [e for err in errors for e in (err.errors if isinstance(err, PodErrors) else (err,))]
    if not flat:
        raise ValueError("one_or_all needs at least one error")
    return flat[0] if len(flat) == 1 else PodErrors(flat)


class ManifestError(MeshError):
    """An offline manifest we cannot read: says which document, of what kind, and why."""

    def __init__(self, why: str, *, document: int | None = None, kind: str | None = None) -> None:
        if document is not None:
            prefix = f"document {document} ({kind})" if kind else f"document {document}"
        else:
            prefix = kind or ""
        super().__init__(f"{prefix}: {why}" if prefix else why)
        self.why = why
        self.document = document
        self.kind = kind


class ReviewError(MeshError):
    """An AdmissionReview we cannot parse; the webhook answers 400 with this message."""


class SettingsError(MeshError):
    """The mesh configuration cannot be used; the message names the field (and the file)."""


class PolicyError(MeshError):
    """An AccessPolicy that cannot be enforced as written; one line per problem, each naming
    the field (``spec.allow[0].from.serviceAccounts[1]``) and its value."""

    def __init__(self, name: str, problems: list[str]) -> None:
        self.name = name
        self.problems = problems
        super().__init__(f"AccessPolicy {name}: " + "; ".join(problems))


class UsageError(MeshError):
    """A flag combination or value a command cannot use; the message names the flag."""


class KubeError(MeshError):
    """A Kubernetes API call failed; ``status`` is the HTTP status (0: no answer at all)."""

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class NotFound(KubeError):
    """404: the object does not exist."""


class Conflict(KubeError):
    """409: the object already exists, or our resourceVersion is stale."""


class SandboxError(MeshError):
    """The sandbox cannot run (or stop) what it was asked to; the message names the pod, the
    container and the value, so the user can fix the manifest."""


class NetnsError(SandboxError):
    """An ``ip`` command failed; the message carries the command and its stderr."""
