"""``meshinject inject`` and ``check``: goldens, pass-through, errors, and the exit codes."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import kubernetes_validate
import pytest

from injector import cli
from injector.core import workloads
from injector.core.manifests import dump_documents, inject_documents, load_documents
from tests.support.paths import CORE_MANIFESTS, EXAMPLES, MESHINJECT
from tests.support.pods import CONFIG

MANIFESTS = sorted(CORE_MANIFESTS.glob("*.yaml"))
SAMPLE = EXAMPLES / "sample-app.yaml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("path", [*MANIFESTS, SAMPLE], ids=lambda p: p.name)
def test_injected_manifests_match_their_goldens(
    path: Path, capsys: pytest.CaptureFixture[str], golden: Callable[[str, str], None]
) -> None:
    code, out, err = run(capsys, "inject", "-f", str(path))
    assert code == 0, err
    golden(f"injector/core/{path.stem}.injected.yaml", out)
    golden(f"injector/core/{path.stem}.stderr.txt", err)
    assert run(capsys, "inject", "-f", str(path))[1] == out


def test_inject_reads_stdin_and_output_reinjects_to_the_same_bytes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run(capsys, "inject", "-f", str(SAMPLE))[1]
    monkeypatch.setattr(sys, "stdin", io.StringIO(first))
    code, again, _ = run(capsys, "inject", "-f", "-")
    assert (code, again) == (0, first)


def test_non_workloads_pass_through_in_order() -> None:
    docs = load_documents((CORE_MANIFESTS / "mixed-list.yaml").read_text())
    out, notes = inject_documents(docs, config=CONFIG)
    items = out[0]["items"]
    assert [i["kind"] for i in items] == ["Pod", "Service", "Pod", "DaemonSet", "Deployment"]
    assert items[1:] == docs[0]["items"][1:]
    assert len(notes) == 3


def test_workloads_are_found_in_every_kind_that_makes_pods() -> None:
    template = {"spec": {"containers": [{"name": "a", "image": "a"}]}}
    for kind, path in workloads.TEMPLATE_PATHS.items():
        head: dict[str, object] = {"kind": kind, "metadata": {"name": "x", "namespace": "n"}}
        doc = _nest(head, path, template) if path else {**head, **template}
        found = list(workloads.find(doc))
        assert [(w.kind, w.namespace, w.path) for w in found] == [(kind, "n", path)]
        pod = template if path else doc
        assert found[0].pod is pod
        if path:
            replaced = workloads.replace(doc, path, {"spec": {}})
            assert next(workloads.find(replaced)).pod == {"spec": {}}
            assert next(workloads.find(doc)).pod is template  # the original is untouched


def _nest(doc: dict[str, object], path: tuple[str, ...], value: object) -> dict[str, object]:
    out: dict[str, object] = dict(doc)
    cursor = out
    for key in path[:-1]:
        cursor[key] = {}
        cursor = cursor[key]  # type: ignore[assignment]
    cursor[path[-1]] = value
    return out


def test_invalid_yaml_is_a_clear_error_and_nothing_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Pod\nmetadata: {name: [unclosed\n")
    code, out, err = run(capsys, "inject", "-f", str(bad))
    assert (code, out) == (1, "")
    assert "not valid YAML" in err and "line" in err


def test_a_bad_annotation_names_document_annotation_and_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SAMPLE.read_text().replace("log-level: info", "log-level: loud"))
    code, out, err = run(capsys, "inject", "-f", str(bad))
    assert (code, out) == (1, "")
    assert "document 2 (Deployment demo/hello)" in err
    assert 'annotation proxy.meshinject.io/log-level="loud" is invalid' in err
    code, out, _ = run(capsys, "check", "-f", str(bad))
    assert code == 1
    assert 'proxy.meshinject.io/log-level="loud"' in out


def test_inject_and_check_print_the_warnings_of_an_injected_pod(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    manifest = tmp_path / "slow-drain.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: slow\n  namespace: shop\n"
        "  annotations: {proxy.meshinject.io/drain-time: 45s}\n"
        "spec:\n  terminationGracePeriodSeconds: 20\n  containers: [{name: a, image: a}]\n"
    )
    code, out, err = run(capsys, "inject", "-f", str(manifest))
    assert code == 0 and "mesh-proxy" in out
    assert err == ("warning: Pod shop/slow: the proxy's drain time is 45s "
                   "(proxy.meshinject.io/drain-time) but terminationGracePeriodSeconds is 20s: "
                   "the kubelet will stop the proxy before its drain ends; give the pod a grace "
                   "period above 45s\n")
    code, out, _ = run(capsys, "check", "-f", str(manifest))
    assert code == 0
    assert "; warning: the proxy's drain time is 45s" in out


def test_a_missing_file_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "inject", "-f", "/nonexistent/app.yaml")
    assert code == 1 and "cannot read /nonexistent/app.yaml" in err


def test_check_explains_each_workload(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "-f", str(CORE_MANIFESTS / "mixed-list.yaml"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["WORKLOAD", "INJECT", "REASON"]
    verdicts = {line.split()[1]: line.split()[2] for line in lines[1:]}
    assert verdicts == {"default/legacy": "yes", "default/no-mesh": "no",
                        "default/node-agent": "no", "kube-system/coredns-extra": "no"}


def test_check_with_namespace_labels_judges_like_the_webhook(
    capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "check", "-f", str(SAMPLE), "--namespace-label", "team=a")
    assert code == 0 and "no      namespace demo does not have label" in out
    code, out, _ = run(capsys, "check", "-f", str(SAMPLE),
                       "--namespace-label", "meshinject.io/inject=enabled", "hello")
    assert code == 0 and "Deployment demo/hello  yes" in out
    code, _, err = run(capsys, "check", "-f", str(SAMPLE), "--namespace-label", "oops")
    assert code == 1 and "--namespace-label 'oops'" in err


def test_check_uses_the_given_namespace_for_workloads_that_name_none(
    capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "check", "-f", str(CORE_MANIFESTS / "mixed-list.yaml"),
                       "-n", "meshinject-system")
    assert code == 0 and "Pod meshinject-system/legacy" in out
    assert "injector's own namespace" in out
    assert "Deployment kube-system/coredns-extra" in out  # named its own namespace


def test_a_mesh_config_file_changes_the_rendering(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text("nativeSidecars: false\nproxy: {image: my/envoy:1}\n")
    code, out, _ = run(capsys, "inject", "-f", str(SAMPLE), "--config", str(config))
    assert code == 0 and "image: my/envoy:1" in out
    config.write_text("proxy: {imag: typo}\n")
    code, out, err = run(capsys, "inject", "-f", str(SAMPLE), "--config", str(config))
    assert (code, out) == (2, "") and "proxy.imag" in err


def test_the_console_script_pipes_a_manifest_through() -> None:
    if not MESHINJECT.exists():
        pytest.skip("meshinject is not installed in .venv")
    text = SAMPLE.read_text()
    done = subprocess.run([str(MESHINJECT), "inject", "-f", "-"], input=text,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert dump_documents(load_documents(done.stdout)) == done.stdout
    assert "mesh-proxy" in done.stdout


@pytest.mark.parametrize("path", [*MANIFESTS, SAMPLE], ids=lambda p: p.name)
def test_injected_hand_made_manifests_validate_against_kubernetes_1_33(path: Path) -> None:
    injected, _ = inject_documents(load_documents(path.read_text()), config=CONFIG)
    for doc in injected:
        for item in doc["items"] if doc["kind"] == "List" else [doc]:  # List has no schema
            kubernetes_validate.validate(item, "1.33", strict=True)


@pytest.mark.parametrize(("spec", "field"), [
    ("spec: oops", "spec.template.spec must be a mapping"),
    ("spec: {containers: nginx}", "spec.template.spec.containers must be a list"),
    ("spec: {containers: [nginx]}", "spec.template.spec.containers must be a list"),
    ("metadata: {annotations: [a]}\n    spec: {containers: []}",
     "spec.template.metadata.annotations must be a mapping"),
])
def test_a_template_not_shaped_like_a_pod_is_a_clear_error(
    spec: str, field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Service\n---\nkind: Deployment\nmetadata: {name: w}\n"
                   f"spec:\n  template:\n    {spec}\n")
    code, out, err = run(capsys, "inject", "-f", str(bad))
    assert (code, out) == (1, "")
    assert "document 2" in err and "Deployment default/w" in err and field in err


BROKEN_NEIGHBOURS = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: app, image: nginx}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: typo
  namespace: shop
  annotations: {proxy.meshinject.io/log-level: loud}
spec: {containers: [{name: app, image: nginx}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: shapeless, namespace: shop}
spec: {template: {spec: {containers: nginx}}}
"""


def test_check_says_what_decided_a_pod_with_no_mesh_annotation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    manifest = tmp_path / "all.yaml"
    manifest.write_text(BROKEN_NEIGHBOURS)
    code, out, _ = run(capsys, "check", "-f", str(manifest), "web")
    assert code == 0
    [_, row] = out.splitlines()
    assert row.split(None, 3)[:3] == ["Deployment", "shop/web", "yes"]
    assert row.endswith("meshinject inject -f is the opt-in: the namespace's labels are not known "
                        "offline; pass --namespace-label to judge as the webhook would")
    assert "injection was requested" not in out


def test_check_of_one_workload_judges_only_that_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    manifest = tmp_path / "all.yaml"
    manifest.write_text(BROKEN_NEIGHBOURS)
    code, out, err = run(capsys, "check", "-f", str(manifest), "web")
    assert (code, err) == (0, "")
    assert "typo" not in out and "shapeless" not in out
    code, out, _ = run(capsys, "check", "-f", str(manifest), "typo")  # the asked one is bad
    assert code == 1 and 'proxy.meshinject.io/log-level="loud"' in out
    code, _, err = run(capsys, "check", "-f", str(manifest), "shapeless")
    assert code == 1 and "spec.template.spec.containers must be a list" in err
    code, _, _ = run(capsys, "check", "-f", str(manifest))  # all of them: the bad ones count
    assert code == 1


def test_check_of_a_workload_the_file_lacks_fails_saying_not_found(
    capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "check", "-f", str(SAMPLE), "nope")
    assert (code, out) == (1, "")
    assert err == (f"meshinject: error: workload 'nope' not found in {SAMPLE} "
                   "(it has: Deployment demo/hello)\n")


def test_inject_and_check_refuse_a_users_container_with_a_reserved_name(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    manifest = tmp_path / "reserved.yaml"
    manifest.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\n"
                        "spec: {containers: [{name: mesh-proxy, image: x}]}\n")
    code, out, err = run(capsys, "inject", "-f", str(manifest))
    assert (code, out) == (1, "")
    message = ("spec.containers[0] (mesh-proxy): the container name mesh-proxy is reserved for "
               "the container meshinject injects, and this one is not meshinject's: rename it")
    assert err == f"meshinject: error: document 1 (Pod shop/p): {message}\n"
    code, out, _ = run(capsys, "check", "-f", str(manifest))
    assert code == 1 and f"error   {message}" in out


def test_inject_and_check_warn_about_an_unknown_key_and_a_classic_job(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_text(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: once, namespace: shop}\nspec:\n"
        "  template:\n    metadata:\n      annotations:\n"
        "        proxy.meshinject.io/native-sidecar: 'false'\n"
        "        proxy.meshinject.io/retrys: '3'\n"
        "    spec: {restartPolicy: Never, containers: [{name: a, image: a}]}\n")
    code, out, err = run(capsys, "inject", "-f", str(manifest))
    assert code == 0 and "mesh-proxy" in out
    assert err.splitlines() == [
        "warning: Job shop/once: annotation proxy.meshinject.io/retrys is not one meshinject "
        "reads, so it changes nothing; did you mean proxy.meshinject.io/retries?",
        "warning: Job shop/once: the proxy is a classic sidecar "
        "(proxy.meshinject.io/native-sidecar=false) and never exits, so a pod with "
        "restartPolicy Never (a Job's, a CronJob's) never completes; use native sidecars "
        "(Kubernetes 1.29+)"]
    code, out, _ = run(capsys, "check", "-f", str(manifest))
    assert code == 0 and "did you mean proxy.meshinject.io/retries?" in out
    assert "never completes" in out


def test_inject_and_check_skip_a_windows_pod_saying_why(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    manifest = tmp_path / "win.yaml"
    manifest.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: w, namespace: shop}\n"
                        "spec:\n  nodeSelector: {kubernetes.io/os: windows}\n"
                        "  containers: [{name: a, image: a}]\n")
    code, out, err = run(capsys, "inject", "-f", str(manifest))
    assert code == 0 and "mesh-proxy" not in out
    assert err == ("skipped Pod shop/w: the pod runs on Windows (nodeSelector kubernetes.io/os: "
                   "windows), where mesh-init's iptables rules and the Linux proxy cannot run\n")
    code, out, _ = run(capsys, "check", "-f", str(manifest))
    assert code == 0 and "no      the pod runs on Windows" in out
