"""The kustomize base: valid objects, a webhook scoped the way the policy decides, least RBAC."""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from injector import cli
from injector.core.policy import decide
from mesh.contract import SYSTEM_NAMESPACES
from tests.support.deletes import object_path, recording
from tests.support.kustomize import (
    Obj,
    injector_container,
    kubectl_kustomize,
    mesh_config,
    one,
    render,
    render_here,
)
from tests.support.paths import MANIFESTS, REPO

K8S_VERSION = "1.33"
DOCS = render()
WEBHOOK = one(DOCS, "MutatingWebhookConfiguration", "meshinject")
DEPLOYMENT = one(DOCS, "Deployment", "meshinject")
CONTAINER = injector_container(DOCS)
MESH = mesh_config(DOCS)


def _serve_args() -> Any:
    """The container's args parsed by the real ``meshinject serve`` parser."""
    module = importlib.import_module(cli.SUBCOMMANDS["serve"][0])
    parser = argparse.ArgumentParser()
    module.register(parser.add_subparsers(dest="command"), "serve")
    return parser.parse_args(CONTAINER["args"])


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_rendered_object_validates_against_the_kubernetes_schema(doc: Obj) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_python_renderer_agrees_with_kubectl_kustomize() -> None:
    by_kubectl = kubectl_kustomize(MANIFESTS / "base")
    if by_kubectl is None:
        pytest.skip("kubectl is not installed: only the Python renderer is exercised")
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(by_kubectl, key=key) == sorted(render_here(MANIFESTS / "base"), key=key)


def test_the_webhook_reviews_only_pod_creation_with_v1_and_no_side_effects() -> None:
    for hook in WEBHOOK["webhooks"]:
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["sideEffects"] == "None"
        assert hook["rules"] == [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ]


def test_the_webhook_fails_closed_quickly_and_is_reinvoked_if_needed() -> None:
    for hook in WEBHOOK["webhooks"]:
        assert hook["failurePolicy"] == "Fail"
        assert 1 <= hook["timeoutSeconds"] <= 5
        assert hook["reinvocationPolicy"] == "IfNeeded"


def test_the_webhook_calls_the_service_the_deployment_serves() -> None:
    service = one(DOCS, "Service", "meshinject")
    port = service["spec"]["ports"][0]
    assert port["port"] == 443
    assert port["targetPort"] == CONTAINER["ports"][0]["name"]
    assert CONTAINER["ports"][0]["containerPort"] == _serve_args().port == 8443
    assert (
        service["spec"]["selector"].items()
        <= DEPLOYMENT["spec"]["template"]["metadata"]["labels"].items()
    )
    for hook in WEBHOOK["webhooks"]:
        assert hook["clientConfig"]["service"] == {
            "name": "meshinject",
            "namespace": "meshinject-system",
            "path": "/mutate",
            "port": 443,
        }
        assert "caBundle" not in hook["clientConfig"]  # the cert store fills it in


def _matches(selector: Obj, labels: dict[str, str]) -> bool:
    """A LabelSelector, evaluated the way the API server does."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


NAMESPACES = {
    "enabled": {"meshinject.io/inject": "enabled"},
    "plain": {},
    "disabled": {"meshinject.io/inject": "disabled"},
    "kube-system": {"meshinject.io/inject": "enabled"},
    "kube-public": {"meshinject.io/inject": "enabled"},
    "kube-node-lease": {},
    "meshinject-system": {"meshinject.io/inject": "enabled"},
}
POD_LABELS = [None, "true", "false", "enabled", "disabled", "maybe"]


@pytest.mark.parametrize("namespace", list(NAMESPACES))
@pytest.mark.parametrize("pod_label", POD_LABELS)
def test_the_webhook_is_called_exactly_when_the_policy_would_inject(
    namespace: str, pod_label: str | None
) -> None:
    ns_labels = {**NAMESPACES[namespace], "kubernetes.io/metadata.name": namespace}
    pod_labels = {"app": "x"} | ({"meshinject.io/inject": pod_label} if pod_label else {})
    called = [
        h["name"]
        for h in WEBHOOK["webhooks"]
        if _matches(h["namespaceSelector"], ns_labels) and _matches(h["objectSelector"], pod_labels)
    ]
    pod = {"metadata": {"labels": pod_labels}, "spec": {"containers": [{"name": "app"}]}}
    decision = decide(pod, namespace=namespace, namespace_labels=ns_labels, config=MESH)
    assert len(called) == (1 if decision.inject else 0), (called, decision.reason)


def test_system_namespaces_and_the_injectors_own_are_excluded_by_name_in_every_entry() -> None:
    never = {*SYSTEM_NAMESPACES, MESH.injector_namespace}
    for hook in WEBHOOK["webhooks"]:
        by_name = [
            e
            for e in hook["namespaceSelector"]["matchExpressions"]
            if e["key"] == "kubernetes.io/metadata.name"
        ]
        assert by_name and by_name[0]["operator"] == "NotIn"
        assert never <= set(by_name[0]["values"])


def test_no_rbac_rule_uses_a_wildcard() -> None:
    for doc in DOCS:
        for rule in doc.get("rules", []):
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert "*" not in (rule.get(field) or []), (doc["metadata"]["name"], rule)
                assert not any("*" in v for v in rule.get(field) or []), rule


def _sa_rules() -> list[tuple[str, Obj]]:
    """(namespace or "", rule) for every rule bound to the injector's ServiceAccount."""
    rules = []
    for binding in (d for d in DOCS if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        subject = {"kind": "ServiceAccount", "name": "meshinject", "namespace": "meshinject-system"}
        if subject not in binding["subjects"]:
            continue
        role = one(DOCS, binding["roleRef"]["kind"], binding["roleRef"]["name"])
        ns = binding["metadata"].get("namespace", "")
        rules += [(ns, r) for r in role["rules"]]
    return rules


def allowed(verb: str, group: str, resource: str, name: str, namespace: str) -> bool:
    for ns, rule in _sa_rules():
        if ns and ns != namespace:
            continue
        names = rule.get("resourceNames")
        if (
            verb in rule["verbs"]
            and group in rule["apiGroups"]
            and resource in rule["resources"]
            and (not names or name in names)
        ):
            return True
    return False


def test_the_injector_may_touch_only_its_secret_and_its_webhook_configuration() -> None:
    args = _serve_args()
    ns, secret = args.cert_secret.split("/")
    assert allowed("get", "", "secrets", secret, ns) and allowed(
        "update", "", "secrets", secret, ns
    )
    assert allowed("create", "", "secrets", secret, ns)
    assert not allowed("get", "", "secrets", "someone-elses", ns)
    assert not allowed("create", "", "secrets", secret, "default")
    assert not allowed("list", "", "secrets", "", ns)
    hooks = "mutatingwebhookconfigurations"
    assert allowed("patch", "admissionregistration.k8s.io", hooks, args.webhook_config, "")
    assert not allowed("patch", "admissionregistration.k8s.io", hooks, "other", "")
    for resource in ("pods", "namespaces", "configmaps"):
        assert not allowed("get", "", resource, "", "meshinject-system")


def test_two_replicas_spread_over_nodes_and_one_always_stays() -> None:
    spec = DEPLOYMENT["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert "kubernetes.io/hostname" in keys
    pdb = one(DOCS, "PodDisruptionBudget", "meshinject")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]


def test_the_injector_runs_hardened_with_probes_and_requests() -> None:
    pod = DEPLOYMENT["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = CONTAINER["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert CONTAINER["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert CONTAINER["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in (CONTAINER["readinessProbe"], CONTAINER["livenessProbe"]):
        assert probe["httpGet"]["scheme"] == "HTTPS"
    assert {"cpu", "memory"} <= set(CONTAINER["resources"]["requests"])


def test_the_serve_flags_point_at_mounted_volumes() -> None:
    args = _serve_args()
    mounts = {m["mountPath"]: m["name"] for m in CONTAINER["volumeMounts"]}
    volumes = {v["name"]: v for v in DEPLOYMENT["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts[args.cert_dir]]
    config_dir = str(Path(args.config).parent)
    assert volumes[mounts[config_dir]]["configMap"]["name"] == "meshinject-config"
    assert args.cert_secret.split("/")[0] == DEPLOYMENT["metadata"]["namespace"]


def test_the_mesh_config_names_the_injectors_namespace_and_its_release_of_mesh_init() -> None:
    assert MESH.injector_namespace == DEPLOYMENT["metadata"]["namespace"]
    # mesh-init parses the args this injector renders: the two ship as one release
    assert MESH.init.image.rsplit(":", 1)[1] == CONTAINER["image"].rsplit(":", 1)[1]


def test_every_image_is_pinned_to_a_version() -> None:
    images = [c["image"] for c in DEPLOYMENT["spec"]["template"]["spec"]["containers"]]
    images += [MESH.proxy.image, MESH.init.image]
    for image in images:
        tag = image.rsplit("@", 1)[0].rsplit(":", 1)
        assert "@sha256:" in image or (len(tag) == 2 and tag[1] not in ("latest", "")), image


def test_the_cert_manager_overlay_serves_its_secret_and_drops_the_api_permissions() -> None:
    docs = kubectl_kustomize(MANIFESTS / "overlays" / "cert-manager")
    if docs is None:
        pytest.skip("kubectl is not installed: cannot render the overlay's component")
    deployment = one(docs, "Deployment", "meshinject")
    args = shlex.join(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "--tls-cert=" in args and "--cert-secret" not in args
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["certs"] == {
        "name": "certs",
        "secret": {"secretName": "meshinject-tls", "defaultMode": 0o440},
    }
    hook = one(docs, "MutatingWebhookConfiguration")
    assert hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        "meshinject-system/meshinject-serving"
    )
    serving = one(docs, "Certificate", "meshinject-serving")
    assert serving["spec"]["secretName"] == "meshinject-tls"
    webhook_bindings = [d["metadata"]["name"] for d in docs
                        if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
                        and any(s["name"] == "meshinject" for s in d.get("subjects") or [])]
    assert webhook_bindings == []
    for doc in docs:
        if doc["kind"] not in ("Certificate", "Issuer"):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_local_overlay_keeps_the_base_but_registers_the_webhook_by_url() -> None:
    """overlays/local (make cluster-up) changes the webhook's clientConfig to the URL the
    injector process listens on, and the injector's Deployment to zero replicas; nothing else
    (the control plane's runs on the sandbox node as the base has it)."""
    docs = kubectl_kustomize(MANIFESTS / "overlays" / "local")
    if docs is None:
        pytest.skip("kubectl is not installed: cannot render the overlay's patches")
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    base, local = {key(d): d for d in DOCS}, {key(d): d for d in docs}
    assert set(local) == set(base)
    hook = copy.deepcopy(local[("MutatingWebhookConfiguration", "meshinject")])
    urls = {h["clientConfig"].pop("url") for h in hook["webhooks"]}
    base_hook = copy.deepcopy(base[("MutatingWebhookConfiguration", "meshinject")])
    for entry in base_hook["webhooks"]:
        assert set(entry["clientConfig"].pop("service")) == {"name", "namespace", "path", "port"}
    assert hook == base_hook
    spec = importlib.util.spec_from_file_location(
        "localcluster_state", REPO / "scripts" / "cluster" / "localcluster" / "state.py")
    assert spec is not None and spec.loader is not None
    state = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = state  # dataclasses look their module up there
    spec.loader.exec_module(state)
    port = state.DEFAULT_PORT_BASE + state.INJECTOR_OFFSET
    assert urls == {f"https://127.0.0.1:{port}/mutate"}  # what `make cluster-up` listens on
    deployment = copy.deepcopy(local[("Deployment", "meshinject")])
    assert deployment["spec"].pop("replicas") == 0
    base_deployment = copy.deepcopy(DEPLOYMENT)
    base_deployment["spec"].pop("replicas")
    assert deployment == base_deployment
    changed = {("MutatingWebhookConfiguration", "meshinject"), ("Deployment", "meshinject")}
    for k in set(base) - changed:
        assert local[k] == base[k], k


@pytest.mark.parametrize("where", [MANIFESTS, MANIFESTS / "base",
                                   MANIFESTS / "overlays" / "cert-manager",
                                   MANIFESTS / "overlays" / "local"],
                         ids=["manifests", "base", "cert-manager", "local"])
def test_the_webhook_configuration_is_first_and_the_namespace_before_what_it_holds(
    where: Path
) -> None:
    docs = kubectl_kustomize(where) if "overlays" in where.parts else render(where)
    if docs is None:
        pytest.skip("kubectl is not installed: cannot render the overlay's component")
    assert docs[0]["kind"] == "MutatingWebhookConfiguration"  # deleted first, see below
    namespace = next(i for i, d in enumerate(docs) if d["kind"] == "Namespace")
    held = [i for i, d in enumerate(docs) if d["metadata"].get("namespace")]
    assert held and min(held) > namespace  # so apply -k still creates it first


def test_the_python_renderer_keeps_kubectls_order() -> None:
    by_kubectl = kubectl_kustomize(MANIFESTS)
    if by_kubectl is None:
        pytest.skip("kubectl is not installed: only the Python renderer is exercised")
    assert by_kubectl == render_here(MANIFESTS)


@pytest.mark.parametrize("where", [MANIFESTS, MANIFESTS / "overlays" / "cert-manager",
                                   MANIFESTS / "overlays" / "local"],
                         ids=["manifests", "cert-manager", "local"])
def test_kubectl_delete_k_removes_the_webhook_configuration_before_the_injector(
    where: Path, tmp_path: Path
) -> None:
    """With failurePolicy: Fail, a webhook configuration that outlives its injector refuses
    every pod in a labelled namespace; kubectl deletes in the rendered order (not reversed), so
    the configuration must come first. The real kubectl runs against a recorder of DELETEs."""
    kubectl = shutil.which("kubectl")
    docs = kubectl_kustomize(where)
    if kubectl is None or docs is None:
        pytest.skip("kubectl is not installed")
    with recording(docs, tmp_path) as (recorder, kubeconfig):
        done = subprocess.run(
            [kubectl, "--kubeconfig", str(kubeconfig), "delete", "-k", str(where),
             "--timeout=30s"], capture_output=True, text=True, timeout=90, check=False,
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert recorder.deleted == [object_path(d) for d in docs]
    assert recorder.deleted[0] == (
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/meshinject")
