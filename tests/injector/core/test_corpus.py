"""Real manifests nobody here wrote: each injects, validates against Kubernetes 1.33, and
re-injects to the same bytes.

A few corpus documents are invalid before we touch them (placeholder values, fields of removed
volume plugins) or have no 1.33 schema (removed API versions). For those the test asserts that
injection adds no error of its own: the injected document fails exactly as the original did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from injector.core import workloads
from injector.core.manifests import (
    dump_documents,
    inject_documents,
    load_documents,
    uninject_documents,
)
from tests.support.pods import CONFIG, CORPUS

FILES = sorted(p for p in CORPUS.glob("*") if p.suffix in (".yaml", ".yml"))
VERSION = "1.33"


def problem(doc: Any) -> str | None:
    """The validation error of ``doc`` (None when valid); missing schemas count as one error."""
    try:
        kubernetes_validate.validate(doc, VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return "no schema"
    except kubernetes_validate.ValidationError as err:
        return str(err.message)
    return None


def test_the_corpus_is_there() -> None:
    assert len(FILES) > 100


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_a_corpus_manifest_injects_validates_and_reinjects_to_the_same_bytes(path: Path) -> None:
    docs = load_documents(path.read_text())
    injected, notes = inject_documents(docs, config=CONFIG)
    assert len(injected) == len(docs)
    for before, after in zip(docs, injected, strict=True):
        assert problem(after) == problem(before)
        if not list(workloads.find(before)):
            assert after is before  # passed through untouched
    text = dump_documents(injected)
    again, _ = inject_documents(load_documents(text), config=CONFIG)
    assert dump_documents(again) == text
    found = [w for doc in docs for w in workloads.find(doc)]
    assert len(notes) + sum(
        1 for doc in injected for w in workloads.find(doc)
        if "meshinject.io/status" in ((w.pod.get("metadata") or {}).get("annotations") or {})
    ) == len(found)


def test_most_corpus_workloads_are_injected_and_the_rest_say_why() -> None:
    injected = skipped = 0
    for path in FILES:
        _, notes = inject_documents(load_documents(path.read_text()), config=CONFIG)
        skipped += len(notes)
        injected += sum(1 for doc in load_documents(path.read_text())
                        for _ in workloads.find(doc)) - len(notes)
        for note in notes:
            assert "hostNetwork" in note or "system namespace" in note, note
    assert injected > 100 and skipped < 10


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_a_corpus_manifest_uninjects_to_the_very_bytes_it_was(path: Path) -> None:
    docs = load_documents(path.read_text())
    original = dump_documents(docs)
    injected, _ = inject_documents(docs, config=CONFIG)
    back, _ = uninject_documents(load_documents(dump_documents(injected)))
    assert dump_documents(back) == original
    untouched, _ = uninject_documents(docs)  # nothing injected: nothing changes
    assert untouched == docs
