"""Injection end to end on single pods: what is added, the patch, re-injection, upgrades."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import kubernetes_validate
import pytest
from kubernetes.utils.quantity import parse_quantity as kubernetes_quantity

from initcontainer import config as capture_config
from injector.core.patch import diff, inject_pod, patch_json, strip_injection
from mesh.errors import AnnotationError, SpecError
from mesh.overrides.pod import parse_overrides
from mesh.settings import MeshConfig, ProxySettings
from tests.support.pods import CONFIG, apply, names, pod


def inject(p: dict[str, Any], config: MeshConfig = CONFIG) -> dict[str, Any]:
    result = inject_pod(p, config=config, namespace="shop")
    assert result.decision.inject, result.decision.reason
    assert apply(result.patch, p) == result.pod
    return result.pod


def status(p: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(p["metadata"]["annotations"]["meshinject.io/status"])
    return loaded


def test_a_native_injection_puts_init_then_proxy_before_the_users_init_containers() -> None:
    spec = {"initContainers": [{"name": "migrate", "image": "m"}],
            "containers": [{"name": "app", "image": "a"}]}
    out = inject(pod(spec=spec))
    assert names(out["spec"]["initContainers"]) == ["mesh-init", "mesh-proxy", "migrate"]
    assert names(out["spec"]["containers"]) == ["app"]
    assert out["spec"]["initContainers"][1]["restartPolicy"] == "Always"
    assert status(out) == {"initContainers": ["mesh-init", "mesh-proxy"], "containers": [],
                           "volumes": ["meshinject-token", "meshinject-ca"],
                           "configHash": status(out)["configHash"]}


def test_classic_mode_puts_the_proxy_first_among_containers() -> None:
    spec = {"containers": [{"name": "app", "image": "a"}, {"name": "log", "image": "l"}]}
    out = inject(pod(spec=spec, annotations={"proxy.meshinject.io/native-sidecar": "false"}))
    assert names(out["spec"]["initContainers"]) == ["mesh-init"]
    assert names(out["spec"]["containers"]) == ["mesh-proxy", "app", "log"]
    assert "restartPolicy" not in out["spec"]["containers"][0]
    assert status(out)["containers"] == ["mesh-proxy"]
    assert names(inject(pod(spec=spec), MeshConfig(native_sidecars=False))["spec"]["containers"]) \
        == ["mesh-proxy", "app", "log"]


def test_the_users_containers_and_probes_are_left_exactly_as_they_were() -> None:
    app = {"name": "app", "image": "a", "ports": [{"containerPort": 8080}],
           "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
           "livenessProbe": {"tcpSocket": {"port": 8080}}}
    spec = {"containers": [app, {"name": "side", "image": "s"}], "volumes": [{"name": "v",
            "emptyDir": {}}]}
    out = inject(pod(spec=spec))
    assert out["spec"]["containers"] == spec["containers"]
    # the user's volumes first, untouched; the proxy's credentials after them
    assert out["spec"]["volumes"][:1] == spec["volumes"]
    assert names(out["spec"]["volumes"][1:]) == ["meshinject-token", "meshinject-ca"]


def test_the_proxy_container_runs_envoy_locked_down() -> None:
    proxy = inject(pod())["spec"]["initContainers"][1]
    assert proxy["command"] == ["envoy"]
    args = proxy["args"]
    assert args[0] == "--config-yaml" and json.loads(args[1])["node"]
    assert args[2:4] == ["--config-path", "/var/run/secrets/meshinject.io/ca/bootstrap.json"]
    assert args[4:] == ["--disable-hot-restart", "--log-level", "warning", "--concurrency", "1",
                        "--drain-time-s", "5", "--drain-strategy", "immediate",
                        "--file-flush-interval-msec", "1000"]
    # drained before the kubelet's SIGTERM (Envoy exits at once on it)
    assert proxy["lifecycle"]["preStop"]["exec"]["command"][:2] == ["/bin/bash", "-c"]
    assert proxy["securityContext"] == {
        "runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": True,
        "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]}}
    assert {p["containerPort"] for p in proxy["ports"]} == {15021, 15090}
    for probe in ("startupProbe", "readinessProbe"):
        assert proxy[probe]["httpGet"] == {"path": "/healthz/ready", "port": 15021}


def test_the_init_container_is_root_with_only_net_admin_and_net_raw() -> None:
    init = inject(pod())["spec"]["initContainers"][0]
    assert init["command"] == ["meshinject-init"]
    security = init["securityContext"]
    assert (security["runAsUser"], security["runAsNonRoot"]) == (0, False)
    assert security["capabilities"] == {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}
    assert init["resources"] == {"limits": {"cpu": "100m", "memory": "64Mi"},
                                 "requests": {"cpu": "10m", "memory": "32Mi"}}


def test_resource_annotations_override_the_proxys_resources() -> None:
    annotations = {"proxy.meshinject.io/cpu": "250m", "proxy.meshinject.io/memory-limit": "1Gi"}
    proxy = inject(pod(annotations=annotations))["spec"]["initContainers"][1]
    assert proxy["resources"] == {"limits": {"cpu": "2", "memory": "1Gi"},
                                  "requests": {"cpu": "250m", "memory": "64Mi"}}


@pytest.mark.parametrize("annotations", [
    {},
    {"traffic.meshinject.io/exclude-inbound-ports": "22,9000-9100",
     "traffic.meshinject.io/include-outbound-ip-ranges": "10.0.0.0/8,fd00::/8"},
    {"traffic.meshinject.io/include-inbound-ports": "8080",
     "traffic.meshinject.io/exclude-outbound-ports": "5432,6379",
     "traffic.meshinject.io/exclude-outbound-ip-ranges": "169.254.169.254/32",
     "traffic.meshinject.io/interception-mode": "TPROXY"},
    {"traffic.meshinject.io/include-outbound-ports": "80,443"},
])
def test_the_init_args_parse_back_to_the_capture_config_that_rendered_them(
    annotations: dict[str, str],
) -> None:
    init = inject(pod(annotations=annotations))["spec"]["initContainers"][0]
    parsed, options = capture_config.parse(init["args"])
    assert parsed == parse_overrides(annotations, config=CONFIG).capture
    assert not options.dry_run and not options.cleanup


def test_injecting_twice_equals_injecting_once_with_an_empty_patch() -> None:
    once = inject(pod(spec={"initContainers": [{"name": "i", "image": "i"}],
                            "containers": [{"name": "a", "image": "a"}]}))
    again = inject_pod(once, config=CONFIG, namespace="shop")
    assert again.pod == once
    assert again.patch == []


def test_changing_an_injected_pod_in_place_never_changes_the_next_injection() -> None:
    expected = copy.deepcopy(inject(pod()))
    changed = inject(pod())
    changed["spec"]["initContainers"][0]["securityContext"]["privileged"] = True
    changed["spec"]["initContainers"][1]["args"].append("--component-log-level")
    assert inject(pod()) == expected


@pytest.mark.parametrize("native", [True, False])
def test_the_webhooks_serialized_patch_equals_inject_pods(native: bool) -> None:
    config = MeshConfig(native_sidecars=native)
    for subject in (pod(), pod(annotations={"a": "b"}, spec={
            "initContainers": [{"name": "i", "image": "i"}],
            "containers": [{"name": "a", "image": "a"}]})):
        expected = inject_pod(subject, config=config, namespace="shop")
        answer = patch_json(subject, config=config, namespace="shop")
        assert answer.decision == expected.decision
        assert json.loads(answer.patch) == expected.patch
        assert answer.warnings == expected.warnings


def test_strip_undoes_injection_exactly() -> None:
    for original in (pod(), pod(annotations={"a": "b"}, spec={
            "initContainers": [{"name": "i", "image": "i"}],
            "containers": [{"name": "a", "image": "a"}]})):
        assert strip_injection(inject(original)) == original
        classic = inject(original, MeshConfig(native_sidecars=False))
        assert strip_injection(classic) == original


def test_a_config_change_upgrades_an_injected_pod_in_place() -> None:
    old = inject(pod())
    newer = MeshConfig(proxy=ProxySettings(image="envoyproxy/envoy:v1.41.0"),
                       native_sidecars=False)
    result = inject_pod(old, config=newer, namespace="shop")
    assert names(result.pod["spec"]["initContainers"]) == ["mesh-init"]
    assert names(result.pod["spec"]["containers"]) == ["mesh-proxy", "app"]
    assert result.pod["spec"]["containers"][0]["image"] == "envoyproxy/envoy:v1.41.0"
    assert status(result.pod)["configHash"] != status(old)["configHash"]
    assert apply(result.patch, old) == result.pod


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("second", [True, False])
def test_every_switch_between_native_and_classic_patches_correctly(
    first: bool, second: bool
) -> None:
    spec = {"initContainers": [{"name": "i", "image": "i"}],
            "containers": [{"name": "a", "image": "a", "env": [{"name": "X", "value": "1"}]},
                           {"name": "b", "image": "b"}]}
    before = inject(pod(spec=spec), MeshConfig(native_sidecars=first))
    result = inject_pod(before, config=MeshConfig(native_sidecars=second), namespace="shop")
    assert apply(result.patch, before) == result.pod
    assert result.pod == inject(pod(spec=spec), MeshConfig(native_sidecars=second))
    assert (result.patch == []) == (first == second)


def test_changing_an_annotation_changes_the_config_hash() -> None:
    plain = status(inject(pod()))["configHash"]
    tuned = status(inject(pod(annotations={"proxy.meshinject.io/timeout": "3s"})))["configHash"]
    assert plain != tuned


def test_a_pod_without_annotations_gets_the_annotations_map_added_whole() -> None:
    result = inject_pod(pod(), config=CONFIG, namespace="shop")
    adds = [op for op in result.patch if op["path"].startswith("/metadata")]
    assert adds == [{"op": "add", "path": "/metadata/annotations",
                     "value": result.pod["metadata"]["annotations"]}]


def test_a_pod_with_annotations_gets_only_the_status_key_added() -> None:
    result = inject_pod(pod(annotations={"a": "b"}), config=CONFIG, namespace="shop")
    paths = [op["path"] for op in result.patch]
    assert paths == ["/metadata/annotations/meshinject.io~1status", "/spec/initContainers",
                     "/spec/volumes"]


def test_a_template_without_metadata_gets_metadata_added() -> None:
    template: dict[str, Any] = {"spec": {"containers": [{"name": "a", "image": "a"}]}}
    result = inject_pod(template, config=CONFIG, namespace="shop")
    assert result.patch[0]["path"] == "/metadata"
    assert apply(result.patch, template) == result.pod


def test_a_pod_without_metadata_differs_from_its_stripped_self_by_nothing() -> None:
    bare = {"spec": {"containers": [{"name": "a", "image": "a"}]}}
    assert diff(bare, strip_injection(bare)) == []


def test_managed_fields_are_not_part_of_the_patch() -> None:
    p = pod()
    p["metadata"]["managedFields"] = [{"manager": "kubectl", "operation": "Update"}]
    result = inject_pod(p, config=CONFIG, namespace="shop")
    assert not any("managedFields" in op["path"] for op in result.patch)


def test_a_skipped_pod_is_returned_unchanged_with_an_empty_patch() -> None:
    p = pod(labels={"meshinject.io/inject": "false"},
            annotations={"traffic.meshinject.io/interception-mode": "bogus"})
    result = inject_pod(p, config=CONFIG, namespace="shop")
    assert (result.decision.code, result.pod, result.patch) == ("opted-out", p, [])


def test_a_bad_annotation_on_a_pod_to_inject_raises() -> None:
    with pytest.raises(AnnotationError, match="interception-mode"):
        inject_pod(pod(annotations={"traffic.meshinject.io/interception-mode": "bogus"}),
                   config=CONFIG, namespace="shop")


def test_the_input_pod_is_never_modified() -> None:
    p = pod(annotations={"a": "b"}, spec={"initContainers": [{"name": "i", "image": "i"}],
                                          "containers": [{"name": "a", "image": "a"}]})
    snapshot = json.dumps(p)
    inject_pod(p, config=MeshConfig(native_sidecars=False), namespace="shop")
    assert json.dumps(p) == snapshot


@pytest.mark.parametrize("native", [True, False])
def test_a_pod_with_2000_env_vars_injects_in_well_under_50_ms(native: bool) -> None:
    env = [{"name": f"VAR_{i}", "value": f"value-{i}"} for i in range(2000)]
    p = pod(spec={"containers": [{"name": "app", "image": "a", "env": env}]})
    config = MeshConfig(native_sidecars=native)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        inject_pod(p, config=config, namespace="shop")
        times.append(time.perf_counter() - start)
    assert min(times) < 0.050


def test_our_container_names_are_reserved_even_without_a_status() -> None:
    copied = inject(pod())
    del copied["metadata"]["annotations"]["meshinject.io/status"]
    result = inject_pod(copied, config=CONFIG, namespace="shop")
    assert names(result.pod["spec"]["initContainers"]) == ["mesh-init", "mesh-proxy"]


@pytest.mark.parametrize("garbage", ["{not json", "[" * 100_000, "[]", '{"containers": 5}'])
def test_an_unreadable_status_is_replaced_not_trusted(garbage: str) -> None:
    broken = inject(pod())
    broken["metadata"]["annotations"]["meshinject.io/status"] = garbage
    result = inject_pod(broken, config=CONFIG, namespace="shop")
    assert result.pod == inject(pod())


def test_absurd_nesting_in_two_equal_user_containers_still_gives_a_working_patch() -> None:
    def deep() -> Any:
        value: Any = "x"
        for _ in range(2000):
            value = {"d": value}
        return value

    user = pod(spec={"initContainers": [{"name": "a", "image": "i", "x": deep()},
                                        {"name": "a", "image": "i", "x": deep()}],
                     "containers": [{"name": "c", "image": "c"}]})
    result = inject_pod(user, config=CONFIG, namespace="shop")
    assert names(result.pod["spec"]["initContainers"]) == ["mesh-init", "mesh-proxy", "a", "a"]
    assert [op["path"] for op in result.patch if "initContainers" in op["path"]] == [
        "/spec/initContainers/0", "/spec/initContainers/1"]


def test_absurd_nesting_in_a_stripped_container_still_gives_a_working_patch() -> None:
    deep: Any = "x"
    for _ in range(400):
        deep = {"d": deep}
    injected = inject(pod())
    injected["spec"]["initContainers"][1]["env"] = [{"name": "A", "value": "v", "x": deep}]
    result = inject_pod(injected, config=CONFIG, namespace="shop")
    assert result.pod == inject(pod())
    assert apply(result.patch, injected) == result.pod


@pytest.mark.parametrize(("spec", "field"), [
    ({"containers": [{"name": "mesh-proxy", "image": "x"}]}, "spec.containers[0] (mesh-proxy)"),
    ({"initContainers": [{"name": "mesh-init", "image": "x"}],
      "containers": [{"name": "app", "image": "a"}]}, "spec.initContainers[0] (mesh-init)"),
    # our command but not our shape: an Envoy of the user's own, under our name
    ({"containers": [{"name": "app", "image": "a"},
                     {"name": "mesh-proxy", "image": "envoy", "command": ["envoy"],
                      "args": ["-c", "/etc/envoy.yaml"]}]}, "spec.containers[1] (mesh-proxy)"),
    # a mesh-init among the regular containers is never one injection rendered
    ({"containers": [{"name": "mesh-init", "image": "x", "command": ["meshinject-init"]}]},
     "spec.containers[0] (mesh-init)"),
])
def test_a_users_container_with_a_reserved_name_is_refused_naming_it_not_deleted(
    spec: dict[str, Any], field: str
) -> None:
    subject = pod(spec=spec)
    with pytest.raises(SpecError) as caught:
        inject_pod(subject, config=CONFIG, namespace="shop")
    assert str(caught.value).startswith(f"{field}: the container name ")
    assert "is reserved" in str(caught.value)
    with pytest.raises(SpecError):
        patch_json(subject, config=CONFIG, namespace="shop")


def test_a_reserved_name_on_a_pod_that_is_not_injected_is_its_own_business() -> None:
    subject = pod(labels={"meshinject.io/inject": "false"},
                  spec={"containers": [{"name": "mesh-proxy", "image": "x"}]})
    result = inject_pod(subject, config=CONFIG, namespace="shop")
    assert (result.decision.code, result.patch) == ("opted-out", [])


@pytest.mark.parametrize("status_text", [
    '{"initContainers":["migrate"],"containers":["app"],"volumes":["data"],"configHash":"x"}',
    '{"initContainers":["mesh-init","mesh-proxy","migrate"],"containers":["app","side"],'
    '"volumes":["data"]}',
])
def test_a_status_annotation_naming_the_users_containers_deletes_none_of_them(
    status_text: str
) -> None:
    spec = {"initContainers": [{"name": "migrate", "image": "m"}],
            "containers": [{"name": "app", "image": "a"}, {"name": "side", "image": "s"}],
            "volumes": [{"name": "data", "emptyDir": {}}]}
    copied = pod(annotations={"meshinject.io/status": status_text}, spec=copy.deepcopy(spec))
    out = inject(copied)
    assert names(out["spec"]["initContainers"]) == ["mesh-init", "mesh-proxy", "migrate"]
    assert out["spec"]["containers"] == spec["containers"]
    # the user's volumes all kept, untouched; the proxy's credentials after them
    count = len(spec["volumes"])
    assert out["spec"]["volumes"][:count] == spec["volumes"]
    assert names(out["spec"]["volumes"][count:]) == ["meshinject-token", "meshinject-ca"]
    assert out == inject(pod(spec=spec))  # the copied status is replaced, not trusted
    assert strip_injection(out) == pod(spec=spec)


def test_an_injected_proxy_is_recognised_by_its_shape_under_any_config_and_mode() -> None:
    spec = {"containers": [{"name": "app", "image": "a"}]}
    for old in (MeshConfig(), MeshConfig(native_sidecars=False),
                MeshConfig(proxy=ProxySettings(image="other/envoy:9", concurrency=4))):
        injected = inject(pod(spec=spec), old)
        del injected["metadata"]["annotations"]  # even without the status annotation
        for new in (MeshConfig(), MeshConfig(native_sidecars=False)):
            assert inject_pod(injected, config=new, namespace="shop").pod == \
                inject(pod(spec=spec), new)


@pytest.mark.parametrize("empty", [
    {"metadata": {"name": "web", "annotations": {}}},
    {"metadata": {"name": "web", "annotations": None}},
    {"metadata": {}},
    {"metadata": None},
    {"spec": {"initContainers": [], "containers": [{"name": "app", "image": "a"}]}},
    {"spec": {"initContainers": None, "containers": [{"name": "app", "image": "a"}]}},
])
def test_strip_gives_back_empty_and_null_maps_and_lists_exactly(empty: dict[str, Any]) -> None:
    original = {**pod(), **empty}
    for config in (CONFIG, MeshConfig(native_sidecars=False)):
        once = inject(original, config)
        assert strip_injection(once) == original
        assert inject_pod(once, config=config, namespace="shop").patch == []


@pytest.mark.parametrize("annotations", [
    {"proxy.meshinject.io/cpu-limit": "10m"},
    {"proxy.meshinject.io/memory": "512Mi"},
    {"proxy.meshinject.io/cpu": "4", "proxy.meshinject.io/memory-limit": "16Mi"},
    {"proxy.meshinject.io/cpu": "250m", "proxy.meshinject.io/cpu-limit": "0.25"},
])
def test_the_proxy_never_gets_a_request_above_its_limit(annotations: dict[str, str]) -> None:
    injected = inject(pod(annotations=annotations))
    kubernetes_validate.validate(injected, "1.33", strict=True)
    resources = injected["spec"]["initContainers"][1]["resources"]
    for name, request in resources["requests"].items():
        limit = resources["limits"][name]
        assert kubernetes_quantity(request) <= kubernetes_quantity(limit), (name, resources)


def test_injecting_a_fresh_pod_adds_its_items_without_diffing_the_lists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Init containers go in front, volumes behind: the adds are written at once. jsonpatch's
    list diff was most of a review's time for a pod with its own init container and volume."""
    import jsonpatch

    subject = pod(spec={
        "initContainers": [{"name": "migrate", "image": "m"}],
        "containers": [{"name": "a", "image": "a"}],
        "volumes": [{"name": "config", "configMap": {"name": "c"}}]})

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("jsonpatch.make_patch was called")

    monkeypatch.setattr(jsonpatch, "make_patch", refuse)
    result = inject_pod(subject, config=CONFIG, namespace="shop")
    assert apply(result.patch, subject) == result.pod
    init = [op for op in result.patch if op["path"].startswith("/spec/initContainers")]
    assert [op["path"] for op in init] == ["/spec/initContainers/0", "/spec/initContainers/1"]


def test_the_direct_adds_are_the_patch_jsonpatch_makes(monkeypatch: pytest.MonkeyPatch) -> None:
    """For lists only added to (front, back, both, from empty) the adds are exactly
    jsonpatch's; for anything else (an item removed or changed) jsonpatch still decides."""
    from injector.core import patch as patch_module

    a, b, c, x, y = ({"name": n} for n in "abcxy")
    cases = [([], [x]), ([a], [x, a]), ([a], [a, x, y]), ([a, b], [x, y, a, b, c]),
             ([a, b], [a, b]), ([a, b], [b]), ([a, b], [x, b]), ([a, b, c], [a, c, b])]
    for before, after in cases:
        direct = patch_module._subtree_patch(before, after, prefix="/spec/volumes")
        monkeypatch.setattr(patch_module, "_spliced", lambda *args, **kwargs: None)
        through_jsonpatch = patch_module._subtree_patch(before, after, prefix="/spec/volumes")
        monkeypatch.undo()
        assert direct == through_jsonpatch, (before, after)
        assert apply(direct, {"spec": {"volumes": copy.deepcopy(before)}}) == {
            "spec": {"volumes": after}}
