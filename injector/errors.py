"""The injector's small error hierarchy, drawn in one place.

The pure core raises only these; the edges (the webhook, the CLI) catch :class:`MeshInjectError`
and turn it into a denial, a 400 or an exit code. Foreign exceptions (YAML, JSON, mesh-init's
``ConfigError``) are translated where they are caught, with ``raise ... from``, so a traceback
still shows the cause while callers need to know only this module.
"""

from __future__ import annotations

import json


class MeshInjectError(Exception):
    """Anything the injector refuses, with a message meant for the person who wrote the input."""


class AnnotationError(MeshInjectError):
    """A pod annotation has a value we cannot use; the message names the annotation and value."""

    def __init__(self, annotation: str, value: str, why: str) -> None:
        quoted = json.dumps(value, ensure_ascii=False)
        super().__init__(f"annotation {annotation}={quoted} is invalid: {why}")
        self.annotation = annotation
        self.value = value
        self.why = why


class ManifestError(MeshInjectError):
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


class ReviewError(MeshInjectError):
    """An AdmissionReview we cannot parse; the webhook answers 400 with this message."""
