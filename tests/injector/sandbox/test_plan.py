"""Planning a sandbox: manifests to injected pods, Services to addresses; no root needed."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from injector.sandbox import images, services
from injector.sandbox.plan import build_plan
from mesh.errors import SandboxError
from mesh.settings import MeshConfig

MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      securityContext: {runAsUser: 1000, runAsGroup: 1000}
      containers:
      - name: web
        image: python:3.11
        command: [python3, -m, http.server]
        args: ["$(PORT)"]
        env:
        - {name: PORT, value: "8080"}
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        ports: [{containerPort: 8080, name: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, annotations: {meshinject.io/inject: "false"}}
spec:
  containers: [{name: client, image: busybox, command: [sleep, infinity]}]
"""


def plan_of(text: str, **kwargs: Any) -> Any:
    return build_plan(list(yaml.safe_load_all(text)), config=MeshConfig(), **kwargs)


def test_a_deployment_becomes_its_replicas_each_injected_in_kubelet_order() -> None:
    plan = plan_of(MANIFEST)
    web = [p for p in plan.pods if p.name.startswith("web")]
    assert [p.key for p in web] == ["web-0.shop", "web-1.shop"]
    assert len({p.address for p in plan.pods}) == 3
    roles = [(c.name, c.role) for c in web[0].containers]
    assert roles == [("mesh-init", "init"), ("mesh-proxy", "sidecar"), ("web", "app")]


def test_mesh_images_run_the_programs_of_this_installation_as_their_uids() -> None:
    init, proxy, app = plan_of(MANIFEST).pods[0].containers
    assert init.argv[0] == str(images.tools_dir() / "meshinject-init") and init.uid == 0
    assert proxy.argv[0] == str(images.tools_dir() / "envoy")
    assert (proxy.uid, proxy.gid) == (1337, 1337)
    assert "--disable-hot-restart" in proxy.argv
    assert proxy.startup_probe is not None and proxy.startup_probe.port == 15021
    assert (app.uid, app.gid) == (1000, 1000)


def test_an_app_gets_its_env_its_args_expanded_and_the_downward_api_fields() -> None:
    pod = plan_of(MANIFEST).pods[1]
    app = pod.containers[-1]
    assert app.argv[1:] == ["-m", "http.server", "8080"]
    assert app.env["POD_IP"] == pod.address and app.env["HOSTNAME"] == "web-1"
    assert app.env["PATH"].startswith(str(images.tools_dir()))


def test_a_pod_that_opts_out_runs_without_a_proxy() -> None:
    client = plan_of(MANIFEST).pod("client")
    assert client is not None and not client.injected
    assert [c.name for c in client.containers] == ["client"]


def test_a_service_gets_a_virtual_address_its_pods_and_its_named_target_port() -> None:
    plan = plan_of(MANIFEST)
    (web,) = plan.services
    assert web.vip is not None and web.vip.startswith("198.19.")
    assert web.endpoints == [p.address for p in plan.pods[:2]]
    assert (web.ports[0].port, web.ports[0].target_port) == (80, 8080)
    rules = services.nat_rules(plan)
    assert "--probability 0.50000" in rules
    assert f"--to-destination {plan.pods[1].address}:8080" in rules


def test_hosts_files_give_short_names_only_inside_the_services_namespace() -> None:
    plan = plan_of(MANIFEST)
    mine = services.hosts_file(plan, pod=plan.pods[0])
    assert "web web.shop web.shop.svc web.shop.svc.cluster.local" in mine
    node = services.hosts_file(plan, pod=None)
    assert "\tweb.shop web.shop.svc" in node and " web " not in node


def test_a_command_this_machine_lacks_is_an_error_naming_pod_container_and_command() -> None:
    text = MANIFEST.replace("command: [sleep, infinity]", "command: [no-such-program-xyz]")
    with pytest.raises(SandboxError, match=r"'client'.*'client'.*'no-such-program-xyz'"):
        plan_of(text)


def test_a_container_without_a_command_is_an_error_naming_its_image() -> None:
    text = MANIFEST.replace("command: [sleep, infinity]", "args: [x]")
    with pytest.raises(SandboxError, match=r"image 'busybox' has no 'command'"):
        plan_of(text)


def test_a_bad_annotation_fails_the_plan_with_the_injectors_message() -> None:
    text = MANIFEST.replace(
        "metadata: {labels: {app: web}}",
        "metadata: {labels: {app: web}, "
        "annotations: {traffic.meshinject.io/interception-mode: SIDEWAYS}}",
    )
    with pytest.raises(SandboxError, match=r"'web-0'.*interception-mode.*SIDEWAYS"):
        plan_of(text)


def test_replicas_beyond_the_limit_are_cut_with_a_note() -> None:
    plan = plan_of(MANIFEST.replace("replicas: 2", "replicas: 10"), max_replicas=3)
    assert len([p for p in plan.pods if p.name.startswith("web")]) == 3
    assert plan.notes == ["Deployment web: runs 3 of 10 replicas"]


def test_a_pod_is_found_by_key_by_name_or_by_its_workload_when_unambiguous() -> None:
    plan = plan_of(MANIFEST.replace("replicas: 2", "replicas: 1"))
    assert plan.pod("web-0.shop") is plan.pod("web-0") is plan.pod("web") is plan.pods[0]
    assert plan_of(MANIFEST).pod("web") is None  # two replicas: say which
