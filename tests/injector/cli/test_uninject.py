"""``meshinject uninject``: the exact inverse of ``inject``, byte for byte, and nothing more."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from injector import cli
from injector.core.manifests import dump_documents, load_documents
from tests.support.paths import CORE_MANIFESTS, EXAMPLES

MANIFESTS = [*sorted(CORE_MANIFESTS.glob("*.yaml")), EXAMPLES / "sample-app.yaml"]


def run(capsys: pytest.CaptureFixture[str], *argv: str, stdin: str | None = None,
        monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[int, str, str]:
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_uninject_of_inject_gives_back_the_manifest_byte_for_byte(
    path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = dump_documents(load_documents(path.read_text()))  # as our dumper writes it
    code, injected, _ = run(capsys, "inject", "-f", str(path))
    assert code == 0 and "mesh-proxy" in injected
    code, out, _ = run(capsys, "uninject", "-f", "-", stdin=injected, monkeypatch=monkeypatch)
    assert (code, out) == (0, original)


def test_a_manifest_that_was_never_injected_passes_through_with_a_note_per_workload(
    capsys: pytest.CaptureFixture[str]
) -> None:
    path = EXAMPLES / "sample-app.yaml"
    code, out, err = run(capsys, "uninject", "-f", str(path))
    assert code == 0
    assert out == dump_documents(load_documents(path.read_text()))
    assert err == "unchanged Deployment demo/hello: not injected\n"


def test_a_users_own_container_under_our_name_is_left_alone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    manifest = tmp_path / "own.yaml"
    text = ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n"
            "    meshinject.io/status: '{\"containers\":[\"app\",\"mesh-proxy\"]}'\n"
            "spec:\n  containers:\n  - name: app\n    image: a\n  - name: mesh-proxy\n"
            "    image: my/proxy\n")
    manifest.write_text(text)
    code, out, _ = run(capsys, "uninject", "-f", str(manifest))
    assert code == 0
    [pod] = load_documents(out)
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app", "mesh-proxy"]
    assert "annotations" not in pod["metadata"]  # the status was ours, and all there was


def test_a_bad_document_is_an_error_and_nothing_on_stdout(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Service\n---\nkind: Deployment\nmetadata: {name: w}\n"
                   "spec: {template: {spec: oops}}\n")
    code, out, err = run(capsys, "uninject", "-f", str(bad))
    assert (code, out) == (1, "")
    assert "document 2 (Deployment default/w): spec.template.spec must be a mapping" in err
