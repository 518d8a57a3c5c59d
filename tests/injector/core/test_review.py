"""The review without HTTP: every kind of body gets the answer the module docstring promises."""

from __future__ import annotations

import base64
import copy
from typing import Any

import jsonpatch
import orjson
import pytest

from injector.core.patch import inject_pod
from injector.core.review import review
from mesh.settings import MeshConfig
from tests.support.corpus import admission_review, corpus_pods

CONFIG = MeshConfig()
POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"generateName": "web-", "labels": {"app": "web"}},
    "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]},
}


def answer(doc: Any) -> tuple[int, dict[str, Any], str]:
    out = review(orjson.dumps(doc), config=CONFIG)
    return out.status_code, orjson.loads(out.body), out.outcome


def with_annotations(**annotations: str) -> dict[str, Any]:
    pod = copy.deepcopy(POD)
    pod["metadata"]["annotations"] = annotations
    return pod


@pytest.mark.parametrize(("name", "pod"), corpus_pods(), ids=[n for n, _ in corpus_pods()])
def test_every_corpus_pod_gets_the_patch_inject_pod_makes(name: str, pod: dict[str, Any]) -> None:
    status, body, outcome = answer(admission_review(pod, namespace="shop", uid="u-1"))
    expected = inject_pod(pod, config=CONFIG, namespace="shop")
    response = body["response"]
    assert status == 200
    assert response["uid"] == "u-1"
    assert response["allowed"] is True
    if expected.decision.inject:
        assert outcome == "injected"
        assert response["patchType"] == "JSONPatch"
        ops = orjson.loads(base64.b64decode(response["patch"]))
        assert jsonpatch.apply_patch(pod, ops) == expected.pod
    else:
        assert outcome == f"skipped:{expected.decision.code}"
        assert "patch" not in response


def test_a_pod_opted_out_is_allowed_with_no_patch_and_the_reason_as_a_warning() -> None:
    pod = copy.deepcopy(POD)
    pod["metadata"]["labels"]["meshinject.io/inject"] = "false"
    status, body, outcome = answer(admission_review(pod))
    response = body["response"]
    assert (status, response["allowed"], outcome.startswith("skipped:")) == (200, True, True)
    assert "patch" not in response and "patchType" not in response
    [warning] = response["warnings"]
    expected = inject_pod(pod, config=CONFIG, namespace="default").decision.reason
    assert warning == f"meshinject: not injected: {expected}"


def test_a_pod_in_a_system_namespace_is_skipped_by_the_request_namespace() -> None:
    _, body, outcome = answer(admission_review(POD, namespace="kube-system"))
    assert body["response"]["allowed"] is True
    assert "patch" not in body["response"]
    assert outcome.startswith("skipped:")


def test_a_bad_annotation_denies_the_pod_naming_annotation_and_value() -> None:
    pod = with_annotations(**{"traffic.meshinject.io/interception-mode": "SIDEWAYS"})
    status, body, outcome = answer(admission_review(pod))
    response = body["response"]
    assert (status, response["allowed"], outcome) == (200, False, "denied")
    assert response["status"]["code"] == 400
    assert "traffic.meshinject.io/interception-mode" in response["status"]["message"]
    assert "SIDEWAYS" in response["status"]["message"]



def test_a_users_container_named_like_ours_denies_the_pod_naming_it() -> None:
    pod = copy.deepcopy(POD)
    pod["spec"]["containers"] = [{"name": "mesh-proxy", "image": "x"}]
    status, body, outcome = answer(admission_review(pod))
    response = body["response"]
    assert (status, response["allowed"], outcome) == (200, False, "denied")
    assert response["status"]["message"].startswith(
        "spec.containers[0] (mesh-proxy): the container name mesh-proxy is reserved")


def test_every_problem_of_a_pod_is_in_its_one_denial() -> None:
    pod = with_annotations(**{"traffic.meshinject.io/interception-mode": "SIDEWAYS",
                              "proxy.meshinject.io/retries": "lots",
                              "meshinject.io/inject": "maybe"})
    pod["spec"]["containers"][0]["ports"].append({"containerPort": 15001})
    _, body, outcome = answer(admission_review(pod))
    message = body["response"]["status"]["message"]
    assert outcome == "denied" and message.startswith("4 problems: ")
    for part in ('annotation meshinject.io/inject="maybe"', 'interception-mode="SIDEWAYS"',
                 'proxy.meshinject.io/retries="lots"', "containerPort 15001"):
        assert part in message, part


def test_an_unknown_key_under_our_prefix_is_injected_with_a_warning_naming_the_nearest() -> None:
    _, body, outcome = answer(admission_review(
        with_annotations(**{"proxy.meshinject.io/retrys": "3"})))
    assert outcome == "injected"
    assert body["response"]["warnings"] == [
        "meshinject: annotation proxy.meshinject.io/retrys is not one meshinject reads, so it "
        "changes nothing; did you mean proxy.meshinject.io/retries?"]


def test_a_windows_pod_is_allowed_untouched_with_the_reason() -> None:
    pod = copy.deepcopy(POD)
    pod["spec"]["os"] = {"name": "windows"}
    _, body, outcome = answer(admission_review(pod))
    assert outcome == "skipped:windows" and "patch" not in body["response"]
    assert body["response"]["warnings"] == [
        "meshinject: not injected: the pod runs on Windows (spec.os.name: windows), where "
        "mesh-init's iptables rules and the Linux proxy cannot run"]


def test_a_classic_sidecar_on_a_jobs_pod_is_injected_with_a_warning() -> None:
    pod = with_annotations(**{"proxy.meshinject.io/native-sidecar": "false"})
    pod["spec"]["restartPolicy"] = "Never"
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": "j",
                                           "uid": "1", "controller": True}]
    _, body, outcome = answer(admission_review(pod))
    assert outcome == "injected"
    [warning] = body["response"]["warnings"]
    assert "classic sidecar (proxy.meshinject.io/native-sidecar=false)" in warning
    assert "the Job's pod never completes" in warning


@pytest.mark.parametrize("odd", [
    {"container": {"ports": 5}}, {"container": {"ports": ["x"]}},
    {"container": {"securityContext": "root"}}, {"spec": {"securityContext": [1337]}},
    {"spec": {"os": "windows"}}, {"spec": {"nodeSelector": ["windows"]}},
    {"spec": {"restartPolicy": 3}}, {"metadata": {"ownerReferences": 7}},
    {"container": {"name": "mesh-proxy", "command": "envoy", "args": "--config-yaml"}},
])
def test_odd_shapes_where_the_new_checks_look_are_answered_never_failed(
    odd: dict[str, Any]
) -> None:
    pod = with_annotations(**{"proxy.meshinject.io/native-sidecar": "false"})
    pod["spec"]["containers"][0].update(odd.get("container", {}))
    pod["spec"].update(odd.get("spec", {}))
    pod["metadata"].update(odd.get("metadata", {}))
    status, _, outcome = answer(admission_review(pod))
    assert status == 200 and outcome in ("injected", "denied"), outcome

@pytest.mark.parametrize(
    ("operation", "kind"),
    [("UPDATE", "Pod"), ("DELETE", "Pod"), ("CONNECT", "Pod"), ("CREATE", "ConfigMap")],
)
def test_anything_but_a_pod_create_is_allowed_untouched(operation: str, kind: str) -> None:
    status, body, outcome = answer(admission_review(POD, operation=operation, kind=kind, uid="x"))
    assert (status, outcome) == (200, "ignored")
    assert body["response"] == {"uid": "x", "allowed": True}


def test_a_pod_subresource_is_allowed_untouched() -> None:
    doc = admission_review(POD)
    doc["request"]["subResource"] = "ephemeralcontainers"
    assert answer(doc)[2] == "ignored"


def test_a_dry_run_create_is_answered_like_any_other() -> None:
    doc = admission_review(POD)
    doc["request"]["dryRun"] = True
    assert answer(doc)[2] == "injected"


def test_the_namespace_comes_from_the_pod_when_the_request_has_none() -> None:
    pod = copy.deepcopy(POD)
    pod["metadata"]["namespace"] = "kube-system"
    doc = admission_review(pod)
    del doc["request"]["namespace"]
    assert answer(doc)[2].startswith("skipped:")


def broken(path: str, value: Any) -> dict[str, Any]:
    doc = admission_review(copy.deepcopy(POD))
    *parents, last = path.split(".")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    key: Any = int(last) if isinstance(node, list) else last
    if value is KeyError:
        del node[key]
    else:
        node[key] = value
    return doc


MALFORMED = [
    (b"", "not JSON"),
    (b"{", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[" * 5000 + b"]" * 5000, "not JSON"),
    (b"[]", "body must be an AdmissionReview object"),
    (b"null", "body must be an AdmissionReview object"),
    (orjson.dumps(broken("apiVersion", "admission.k8s.io/v1beta1")), "apiVersion"),
    (orjson.dumps(broken("kind", "Pod")), "kind must be AdmissionReview"),
    (orjson.dumps(broken("request", KeyError)), "request must be an object"),
    (orjson.dumps(broken("request.uid", KeyError)), "request.uid"),
    (orjson.dumps(broken("request.uid", 7)), "request.uid must be a string, got int 7"),
    (orjson.dumps(broken("request.uid", "")), "request.uid must not be empty"),
    (orjson.dumps(broken("request.operation", ["CREATE"])), "request.operation"),
    (orjson.dumps(broken("request.object", "pod")), "request.object must be a Pod"),
    (orjson.dumps(broken("request.object.metadata", [])), "request.object.metadata"),
    (orjson.dumps(broken("request.object.metadata.labels", {"a": 1})), "labels['a']"),
    (orjson.dumps(broken("request.object.spec", KeyError)), "request.object.spec"),
    (orjson.dumps(broken("request.object.spec.containers", {})), "spec.containers must be"),
    (orjson.dumps(broken("request.object.spec.containers", [])), "must not be empty"),
    (orjson.dumps(broken("request.object.spec.containers.0", "web")), "containers[0]"),
    (orjson.dumps(broken("request.object.spec.containers.0.name", 1)), "containers[0].name"),
    (orjson.dumps(broken("request.object.spec.hostNetwork", "yes")), "hostNetwork"),
    (orjson.dumps(broken("request.namespace", 3)), "request.namespace"),
]


@pytest.mark.parametrize(("body", "reason"), MALFORMED, ids=[r for _, r in MALFORMED])
def test_a_body_we_cannot_read_gets_400_with_the_reason(body: bytes, reason: str) -> None:
    out = review(body, config=CONFIG)
    assert (out.status_code, out.outcome) == (400, "bad-request")
    assert reason in orjson.loads(out.body)["detail"]


def test_an_unexpected_error_in_the_injector_denies_the_pod(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def explode(*_: object, **__: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("injector.core.review.patch_json", explode)
    status, body, outcome = answer(admission_review(POD, uid="u"))
    assert (status, outcome, body["response"]["allowed"]) == (200, "failed", False)
    assert body["response"]["status"]["code"] == 500
    assert "RuntimeError: boom" in body["response"]["status"]["message"]


def test_a_drain_longer_than_the_grace_period_is_injected_with_a_warning() -> None:
    status, body, outcome = answer(admission_review(
        with_annotations(**{"proxy.meshinject.io/drain-time": "45s"}), uid="w"))
    assert (status, outcome, body["response"]["allowed"]) == (200, "injected", True)
    [warning] = body["response"]["warnings"]
    assert warning.startswith("meshinject: the proxy's drain time is 45s "
                              "(proxy.meshinject.io/drain-time) but "
                              "terminationGracePeriodSeconds is 30s")


def test_an_already_injected_pod_is_allowed_unchanged() -> None:
    injected = inject_pod(POD, config=CONFIG, namespace="default").pod
    status, body, outcome = answer(admission_review(injected, uid="again"))
    assert (status, outcome) == (200, "unchanged")
    assert body["response"] == {"uid": "again", "allowed": True}


def test_a_patch_that_cannot_be_encoded_denies_the_pod_as_our_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def odd(*_: Any) -> list[dict[str, Any]]:
        return [{"op": "add", "value": {1j}}]

    monkeypatch.setattr("injector.core.patch.diff", odd)
    status, body, outcome = answer(admission_review(POD))
    assert (status, outcome, body["response"]["allowed"]) == (200, "failed", False)
    assert "internal error: TypeError" in body["response"]["status"]["message"]


def test_a_bug_while_reading_the_request_is_a_400_counted_as_ours(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def buggy(_: Any) -> Any:
        raise KeyError("oops")

    monkeypatch.setattr("injector.core.review._check_pod", buggy)
    out = review(orjson.dumps(admission_review(POD)), config=CONFIG)
    assert (out.status_code, out.outcome) == (400, "failed")
    assert "internal error: KeyError" in orjson.loads(out.body)["detail"]
