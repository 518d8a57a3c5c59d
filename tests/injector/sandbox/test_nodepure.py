"""The sandbox node's pure parts: a stored Pod read as a kubelet reads it, its env, its status,
the hosts file, the images it can run. No cluster, no root."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from injector.sandbox import images, nodeobjects, podenv, podspec, podstatus, services
from injector.sandbox.podspec import APP, INIT, SIDECAR
from injector.sandbox.podstatus import RUNNING, TERMINATED, Run
from mesh.errors import SandboxError

Obj = dict[str, Any]


def _pod(**spec: Any) -> Obj:
    return {
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1",
                     "labels": {"app": "web"}, "annotations": {"a": "b"}},
        "spec": {"serviceAccountName": "web", **spec},
        "status": {"conditions": [{"type": "PodScheduled", "status": "True",
                                   "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
    }


APP_SPEC = {"name": "app", "image": "example.com/app:1", "command": ["python3"],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"},
                               "periodSeconds": 2, "failureThreshold": 1},
            "lifecycle": {"preStop": {"sleep": {"seconds": 3}}},
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
SIDECAR_SPEC = {"name": "proxy", "image": "envoyproxy/envoy:v1.40.0", "restartPolicy": "Always",
                "startupProbe": {"tcpSocket": {"port": 15021}}}
INIT_SPEC = {"name": "init", "image": "ghcr.io/meshinject/mesh-init:0.1.0"}


def test_a_pod_is_read_in_the_kubelets_order_with_probes_hooks_and_mounts() -> None:
    view = podspec.view(_pod(initContainers=[INIT_SPEC, SIDECAR_SPEC], containers=[APP_SPEC],
                             terminationGracePeriodSeconds=7))
    assert [(c.name, c.role) for c in view.containers] == [
        ("init", INIT), ("proxy", SIDECAR), ("app", APP)]
    app = view.containers[2]
    assert app.readiness == podspec.Probe("http", port=8080, path="/ready", period=2,
                                          failure_threshold=1)
    assert app.pre_stop == podspec.Probe("sleep", seconds=3)
    assert app.mounts == (podspec.Mount("data", "/data"),)
    assert view.containers[1].startup is not None and view.containers[1].startup.port == 15021
    assert (view.grace_seconds, view.service_account, view.restart_policy) == (7, "web", "Always")


def test_what_the_node_cannot_do_is_named_for_each_case() -> None:
    view = podspec.view(_pod(hostNetwork=True, containers=[{
        **APP_SPEC, "volumeMounts": [{"name": "c", "mountPath": "/c", "subPath": "x"}]}],
        volumes=[{"name": "pvc", "persistentVolumeClaim": {"claimName": "x"}},
                 {"name": "p", "projected": {"sources": [{"clusterTrustBundle": {}}]}}]))
    problems = podspec.unsupported(view)
    assert len(problems) == 4
    assert any("persistentVolumeClaim volumes are not supported" in p for p in problems)
    assert any("projected clusterTrustBundle" in p for p in problems)
    assert any("uses subPath" in p for p in problems)
    assert any(p.startswith("hostNetwork") for p in problems)


def _facts(pod: Obj) -> podenv.Facts:
    return podenv.Facts(pod, pod_ip="198.18.0.12", host_ip="198.18.0.1", node_name="sandbox",
                        cpus=2, memory=4 << 30)


SERVICES = [
    {"metadata": {"name": "kubernetes", "namespace": "default"},
     "spec": {"clusterIP": "198.19.0.1", "ports": [{"name": "https", "port": 443}]}},
    {"metadata": {"name": "cart-db", "namespace": "shop"},
     "spec": {"clusterIP": "198.19.0.20", "ports": [{"name": "sql", "port": 5432}]}},
    {"metadata": {"name": "other", "namespace": "elsewhere"},
     "spec": {"clusterIP": "198.19.0.30", "ports": [{"port": 80}]}},
    {"metadata": {"name": "headless", "namespace": "shop"},
     "spec": {"clusterIP": "None", "ports": [{"port": 80}]}},
]


def test_service_variables_follow_enable_service_links() -> None:
    linked = podenv.service_env(SERVICES, namespace="shop", links=True)
    assert linked["CART_DB_SERVICE_HOST"] == "198.19.0.20"
    assert linked["CART_DB_PORT_5432_TCP"] == "tcp://198.19.0.20:5432"
    assert linked["KUBERNETES_SERVICE_HOST"] == "198.19.0.1"
    assert not any(k.startswith(("OTHER_", "HEADLESS_")) for k in linked)
    unlinked = podenv.service_env(SERVICES, namespace="shop", links=False)
    assert unlinked["KUBERNETES_SERVICE_PORT"] == "443"
    assert not any(k.startswith("CART_DB") for k in unlinked)


def test_env_has_the_downward_api_config_sources_and_var_expansion() -> None:
    pod = _pod(containers=[APP_SPEC])
    container = {"name": "app", "resources": {"limits": {"memory": "64Mi"}}, "envFrom": [
        {"configMapRef": {"name": "settings"}, "prefix": "CFG_"}], "env": [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "URL", "value": "http://$(POD_IP):$(CART_DB_SERVICE_PORT)/$(NOPE) $$(KEPT)"},
        {"name": "ACCOUNT", "valueFrom": {"fieldRef": {"fieldPath":
                                                       "spec.serviceAccountName"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                           "divisor": "1Mi"}}},
        {"name": "CPUS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
    ]}
    services_env = podenv.service_env(SERVICES, namespace="shop", links=True)
    env, problems = podenv.container_env(
        container, facts=_facts(pod), services=services_env,
        configmaps={"settings": {"mode": "fast"}},
        secrets={"db": podenv.decode_secret({"password": base64.b64encode(b"s3").decode()})})
    assert problems == []
    assert env["URL"] == "http://198.18.0.12:5432/$(NOPE) $(KEPT)"
    assert (env["ACCOUNT"], env["APP"], env["MEM"], env["CPUS"]) == ("web", "web", "64", "2")
    assert (env["CFG_mode"], env["PASS"]) == ("fast", "s3")


def test_a_missing_source_is_a_config_error_unless_optional() -> None:
    container = {"name": "app", "env": [
        {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}},
        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "db", "key": "nope"}}},
        {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k",
                                                        "optional": True}}}]}
    env, problems = podenv.container_env(container, facts=_facts(_pod()), services={},
                                         configmaps={"gone": None}, secrets={"db": {}})
    assert problems == ['configmap "gone" not found (env A)',
                        'secret "db" has no key "nope" (env B)']
    assert "C" not in env


def test_status_is_pending_until_init_is_done_then_ready_from_the_probes() -> None:
    view = podspec.view(_pod(initContainers=[INIT_SPEC, SIDECAR_SPEC], containers=[APP_SPEC]))
    runs = {"init": Run("init", state=RUNNING), "proxy": Run("proxy"), "app": Run("app")}
    before = podstatus.status(view, runs, pod_ip="198.18.0.12", host_ip="198.18.0.1",
                              start_time=0, sandbox_ready=True, init_failed=False, now=10)
    assert before["phase"] == "Pending"
    kinds = {c["type"]: c["status"] for c in before["conditions"]}
    assert kinds == {"PodScheduled": "True", "PodReadyToStartContainers": "True",
                     "Initialized": "False", "ContainersReady": "False", "Ready": "False"}
    runs["init"] = Run("init", state=TERMINATED, exit_code=0, reason="Completed")
    runs["proxy"] = Run("proxy", state=RUNNING, started=True, ready=True, started_at=5)
    runs["app"] = Run("app", state=RUNNING, started=True, ready=True, restarts=2,
                      last={"exitCode": 1, "reason": "Error"})
    after = podstatus.status(view, runs, pod_ip="198.18.0.12", host_ip="198.18.0.1",
                             start_time=0, sandbox_ready=True, init_failed=False, now=20)
    assert after["phase"] == "Running"
    assert {c["type"]: c["status"] for c in after["conditions"]}["Ready"] == "True"
    app = after["containerStatuses"][0]
    assert (app["ready"], app["restartCount"], app["lastState"]) == (
        True, 2, {"terminated": {"exitCode": 1, "reason": "Error"}})
    assert [s["name"] for s in after["initContainerStatuses"]] == ["init", "proxy"]
    assert after["initContainerStatuses"][0]["ready"] is True  # a completed init container
    assert after["podIPs"] == [{"ip": "198.18.0.12"}]


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    view = podspec.view(_pod(containers=[APP_SPEC]))
    runs = {"app": Run("app", state=RUNNING, started=True, ready=True)}
    first = podstatus.conditions(view, runs, sandbox_ready=True, previous=[], gates={},
                                 now="T1")
    again = podstatus.conditions(view, runs, sandbox_ready=True, previous=first, gates={},
                                 now="T2")
    assert {c["lastTransitionTime"] for c in again} == {"T1"}
    runs["app"].ready = False
    flipped = podstatus.conditions(view, runs, sandbox_ready=True, previous=again, gates={},
                                   now="T3")
    ready = next(c for c in flipped if c["type"] == "Ready")
    assert (ready["status"], ready["lastTransitionTime"], ready["reason"]) == (
        "False", "T3", "ContainersNotReady")


@pytest.mark.parametrize(("policy", "code", "phase"), [
    ("Never", 0, "Succeeded"), ("Never", 3, "Failed"), ("OnFailure", 0, "Succeeded"),
    ("Always", 0, "Running")])
def test_the_phase_of_finished_app_containers_follows_the_restart_policy(
    policy: str, code: int, phase: str
) -> None:
    view = podspec.view(_pod(containers=[APP_SPEC], restartPolicy=policy))
    runs = {"app": Run("app", state=TERMINATED, exit_code=code)}
    assert podstatus.phase(view, runs, init_failed=False) == phase


def test_hosts_name_every_service_with_a_cluster_ip_short_names_in_its_own_namespace() -> None:
    text = services.cluster_hosts(SERVICES, namespace="shop", pod_ip="198.18.0.12",
                                  hostname="web-1")
    lines = text.splitlines()
    assert "198.18.0.12\tweb-1" in lines
    assert ("198.19.0.20\tcart-db cart-db.shop cart-db.shop.svc cart-db.shop.svc.cluster.local"
            in lines)
    assert ("198.19.0.30\tother.elsewhere other.elsewhere.svc other.elsewhere.svc.cluster.local"
            in lines)
    assert "headless" not in text


def test_images_the_node_knows_run_this_environments_programs() -> None:
    plane = {"image": "ghcr.io/meshinject/meshinject:0.1.0",
             "command": ["meshinject-controlplane"], "args": ["--listen=$(ADDR)"]}
    argv = images.node_argv(plane, env={"ADDR": "0.0.0.0:15012"})
    assert argv == [str(images.tools_dir() / "meshinject-controlplane"), "--listen=0.0.0.0:15012"]
    bare = images.node_argv({"image": "ghcr.io/meshinject/meshinject:0.1.0"}, env={})
    assert bare[1:] == ["serve", "--help"]  # the image's ENTRYPOINT and CMD
    own = images.node_argv({"image": "example.com/x:1", "command": ["python3", "-c", "1"]},
                           env={})
    assert own[1:] == ["-c", "1"]


@pytest.mark.parametrize(("container", "said"), [
    ({"image": "nginx:1.27"}, "nginx:1.27 has no command the sandbox can run"),
    ({"image": "redis:7", "command": ["redis-server"]},
     "command 'redis-server' is not a program on this machine"),
])
def test_an_image_the_node_cannot_run_says_so(container: Obj, said: str) -> None:
    with pytest.raises(SandboxError, match="image not runnable in the sandbox") as caught:
        images.node_argv(container, env={})
    assert said in str(caught.value)


def test_the_node_and_its_lease_say_what_a_kubelets_do() -> None:
    node = nodeobjects.node("sandbox", pod_cidr="198.18.0.0/24", address="198.18.0.1", cpus=2,
                            memory=4 << 30, now=0, max_pods=110)
    assert node["spec"]["podCIDRs"] == ["198.18.0.0/24"]
    status = node["status"]
    assert status["addresses"] == [{"type": "InternalIP", "address": "198.18.0.1"}]
    assert status["daemonEndpoints"]["kubeletEndpoint"]["Port"] == nodeobjects.KUBELET_PORT
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    lease = nodeobjects.lease("sandbox", node_uid="n-1", now=1.5)
    assert lease["spec"]["renewTime"] == "1970-01-01T00:00:01.500000Z"
    assert lease["metadata"]["ownerReferences"][0]["uid"] == "n-1"
