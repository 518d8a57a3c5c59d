"""``meshinject inspect`` and live ``check`` against the real local cluster, seeded with one pod
per case (:mod:`tests.support.livecluster`); outputs are goldens (tests/golden/injector/cluster/),
which the README quotes. The webhook is the local install's, registered by URL.

What is read through the API server's pod proxy (a proxy's live counters, each control plane
replica's view: the XDS columns, ``proxy-config``) is read from pods that run on the sandbox
node (``examples/shop.yaml``). Only a NACK is shown against the fake API server (see there).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from injector import cli
from injector.cluster import xds
from injector.cluster.inspect import summarize_stats
from mesh.contract import WEBHOOK_NAME
from tests.support import livecluster, meshapp
from tests.support.fakeserver import Running
from tests.support.livecluster import STATS
from tests.support.realcluster import NS, LocalCluster

Golden = Callable[[str, str], None]
on_cluster = pytest.mark.cluster
HOOK_PATH = f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{WEBHOOK_NAME}"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def seeded(cluster: LocalCluster) -> Iterator[LocalCluster]:
    livecluster.seed(cluster)
    try:
        yield cluster
    finally:
        livecluster.unseed(cluster)


def _live(cluster: LocalCluster, capsys: pytest.CaptureFixture[str], *argv: str,
          kubeconfig: str | None = None) -> tuple[int, str, str]:
    """``_run`` against the cluster, as admin unless another kubeconfig is given."""
    return _run(capsys, *argv, "--kubeconfig", kubeconfig or cluster.kubeconfig)


@pytest.fixture
def webhook_edit(seeded: LocalCluster) -> Iterator[Callable[[Callable[[dict[str, object]],
                                                                      None]], None]]:
    """Edit the installed webhook configuration for one test, with the injector stopped (its
    cert store would put the caBundle back within a second); both restored after."""
    with seeded.api() as api:
        original = api.get(HOOK_PATH).raise_for_status().json()
    seeded.injector("stop")

    def edit(change: Callable[[dict[str, object]], None]) -> None:
        with seeded.api() as api:
            hook = api.get(HOOK_PATH).raise_for_status().json()
            for entry in hook["webhooks"]:
                change(entry["clientConfig"])
            api.put(HOOK_PATH, json=hook).raise_for_status()

    try:
        yield edit
    finally:
        with seeded.api() as api:
            hook = api.get(HOOK_PATH).raise_for_status().json()
            hook["webhooks"] = original["webhooks"]
            api.put(HOOK_PATH, json=hook).raise_for_status()
        seeded.injector("start")


def _viewer_kubeconfig(cluster: LocalCluster, tmp_path: Path, *, config_role: bool) -> str:
    """A ServiceAccount bound to what manifests/base/rbac-viewer.yaml grants a person: the
    ClusterRole, and (``config_role``) the Role on the mesh ConfigMap."""
    name = "viewer-config" if config_role else "viewer"
    with cluster.api() as api:
        api.post("/api/v1/namespaces/default/serviceaccounts",
                 json={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}})
        subject = [{"kind": "ServiceAccount", "name": name, "namespace": "default"}]
        api.post("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", json={
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": f"test-{name}"}, "subjects": subject,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "meshinject-viewer"}})
        if config_role:
            api.post(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings", json={
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": f"test-{name}"}, "subjects": subject,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                            "name": "meshinject-viewer"}})
        token = api.post(f"/api/v1/namespaces/default/serviceaccounts/{name}/token", json={
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600}}).raise_for_status().json()["status"]["token"]
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    config["users"] = [{"name": name, "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = name
    path = tmp_path / f"{name}.kubeconfig"
    path.write_text(json.dumps(config))
    return str(path)


@on_cluster
def test_inspect_lists_every_pod_of_mesh_enabled_namespaces_and_label_opt_ins(
    seeded: LocalCluster, capsys: pytest.CaptureFixture[str], golden: Golden
) -> None:
    code, out, _ = _live(seeded, capsys, "inspect", "-A")
    golden("injector/cluster/inspect_all.txt", out)
    assert code == 1  # a pod is missing its proxy
    rows = {line.split()[1]: line.split() for line in out.splitlines()[1:] if line.count(" ") > 6}
    # no control plane replica runs (no node yet): every proxy is NOT CONNECTED
    assert rows["web-6d4b9-x2x9q"][2:] == ["yes", "ready", "native", "REDIRECT", "0", "current",
                                          "NOT", "CONNECTED", "-", "-"]
    assert rows["cart-5f7c8-k8d2m"][2:] == [
        "yes", "NOT", "READY", "native", "TPROXY", "3", "current", "NOT", "CONNECTED", "-", "-",
    ]
    assert rows["payments-7b5d-qq7zn"][-5] == "STALE"
    assert rows["reports-68f9-bx4lp"][2] == "MISSING"
    assert rows["batch-0"][2] == "no" and rows["node-agent-9zz"][2] == "no"
    assert rows["canary-1"][2] == "yes" and "plain-1" not in rows


@on_cluster
def test_inspect_of_a_pod_whose_proxy_cannot_be_reached_says_so(
    seeded: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _live(seeded, capsys, "inspect", "-n", "shop", "cart-5f7c8-k8d2m")
    assert code == 1 and "unavailable: " in out and "through the API server proxy" in out


@on_cluster
def test_check_of_a_namespace_explains_each_pod_and_the_webhook(
    seeded: LocalCluster, capsys: pytest.CaptureFixture[str], golden: Golden
) -> None:
    code, out, _ = _live(seeded, capsys, "check", "-n", "shop")
    golden("injector/cluster/check_namespace.txt", out)
    assert code == 1
    assert "serving certificate (secret meshinject-system/meshinject-certs) verifies" in out
    assert f"injector: called at {seeded.injector_url} (clientConfig.url)" in out


@on_cluster
def test_check_of_a_pod_missing_its_proxy_says_to_recreate_it(
    seeded: LocalCluster, capsys: pytest.CaptureFixture[str], golden: Golden
) -> None:
    code, out, _ = _live(seeded, capsys, "check", "reports-68f9-bx4lp", "-n", "shop")
    golden("injector/cluster/check_missing.txt", out)
    assert code == 1 and "NOT injected, but it should be" in out


@on_cluster
def test_check_of_an_annotation_opt_in_says_the_webhook_selects_by_label(
    seeded: LocalCluster, capsys: pytest.CaptureFixture[str], golden: Golden
) -> None:
    code, out, _ = _live(seeded, capsys, "check", "annotated-1", "-n", "legacy")
    golden("injector/cluster/check_annotation.txt", out)
    assert "no entry selects this pod" in out and "use label meshinject.io/inject=true" in out
    assert code == 1


@on_cluster
def test_check_of_an_opted_out_pod_passes(
    seeded: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _live(seeded, capsys, "check", "batch-0", "-n", "shop")
    assert code == 0
    assert "the pod opts out with label meshinject.io/inject=false" in out


@on_cluster
def test_check_reports_a_webhook_whose_ca_bundle_is_missing(
    seeded: LocalCluster, capsys: pytest.CaptureFixture[str], webhook_edit: Callable[..., None]
) -> None:
    webhook_edit(lambda client: client.pop("caBundle"))
    code, out, _ = _live(seeded, capsys, "check", "web-6d4b9-x2x9q", "-n", "shop")
    assert code == 1 and "caBundle is empty" in out


@on_cluster
def test_check_flags_a_serving_cert_that_does_not_name_the_webhooks_host(
    seeded: LocalCluster, capsys: pytest.CaptureFixture[str], webhook_edit: Callable[..., None]
) -> None:
    def elsewhere(client: dict[str, object]) -> None:
        client["url"] = str(client["url"]).replace("127.0.0.1", "injector.example")

    webhook_edit(elsewhere)
    code, out, _ = _live(seeded, capsys, "check", "web-6d4b9-x2x9q", "-n", "shop")
    assert code == 1 and "does NOT name injector.example" in out


@on_cluster
def test_check_flags_a_ca_bundle_that_is_not_a_certificate(
    seeded: LocalCluster, capsys: pytest.CaptureFixture[str], webhook_edit: Callable[..., None]
) -> None:
    webhook_edit(lambda client: client.update(caBundle=base64.b64encode(b"not a cert").decode()))
    code, out, _ = _live(seeded, capsys, "check", "-n", "shop")
    assert code == 1 and "a certificate is not valid PEM" in out


def test_check_without_a_cluster_exits_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "check", "-n", "shop", "--kubeconfig", str(tmp_path / "none"))
    assert code == 2 and "cannot load Kubernetes credentials" in err


@pytest.mark.parametrize(("kinds", "state"), [
    (("Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration", "Secret"), "synced"),
    (("Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration"), "synced"),
    (("Cluster", "Listener", "Secret"), "syncing"),  # still asking for its routes, endpoints
])
def test_a_proxy_is_synced_once_it_acked_every_type_it_asked_for(
    kinds: tuple[str, ...], state: str
) -> None:
    types = {k: {"acked": "1", "latest": "1", "current": True} for k in kinds}
    assert xds.ProxySync("cp-0", {"types": types}).state == state
    if state == "synced":
        types[kinds[-1]]["current"] = False  # one type behind
        assert xds.ProxySync("cp-0", {"types": types}).state == "syncing"


def test_stats_summary_skips_zero_counters() -> None:
    text = "\n".join(summarize_stats(STATS))
    assert "blackhole" not in text and "connect failures 2" in text
    assert "uptime 3605 s, 12.4 MiB allocated" in text


@on_cluster
def test_check_as_a_viewer_without_secret_access_still_reports_the_ca(
    seeded: LocalCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    viewer = _viewer_kubeconfig(seeded, tmp_path, config_role=True)
    code, out, _ = _live(seeded, capsys, "check", "web-6d4b9-x2x9q", "-n", "shop",
                         kubeconfig=viewer)
    assert code == 0, out
    assert "CA CN=meshinject-ca.meshinject-system: 3650 days left" in out
    assert "not checked: no permission to read secret meshinject-system/meshinject-certs" in out


@on_cluster
def test_check_can_judge_a_namespace_as_if_it_were_labelled(
    seeded: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    label = "meshinject.io/inject=enabled"
    code, out, _ = _live(seeded, capsys, "check", "-n", "legacy", "--namespace-label", label)
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines() if "/" in line[:30]}
    assert rows["legacy/plain-1"] == ["yes", "MISSING"]
    assert rows["legacy/canary-1"] == ["yes", "yes"]
    assert code == 1


@on_cluster
def test_inspect_of_a_pod_left_alone_says_why(
    seeded: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _live(seeded, capsys, "inspect", "-n", "shop", "batch-0")
    assert code == 0
    assert out.splitlines() == [
        "pod shop/batch-0: not injected, as it should be",
        "  why         the pod opts out with label meshinject.io/inject=false",
    ]


@on_cluster
def test_inspect_of_an_empty_namespace_says_so(
    seeded: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    with seeded.namespace("empty") as ns:
        code, out, _ = _live(seeded, capsys, "inspect", "-n", ns)
    assert (code, out) == (0, f"no pods in namespace {ns}\n")


@on_cluster
def test_as_a_viewer_without_the_mesh_config_the_defaults_are_compared(
    seeded: LocalCluster, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    viewer = _viewer_kubeconfig(seeded, tmp_path, config_role=False)
    code, out, _ = _live(seeded, capsys, "inspect", "-n", "shop", kubeconfig=viewer)
    assert code == 1 and "web-6d4b9-x2x9q" in out
    assert "cannot read the mesh config" in caplog.text and "HTTP 403" in caplog.text


# -- through the pod proxy: pods that run on the sandbox node --------------------------------
@pytest.fixture(scope="module")
def shop(cluster: LocalCluster) -> Iterator[tuple[LocalCluster, str]]:
    """examples/shop.yaml, running and Ready, in a labelled namespace of its own."""
    with cluster.namespace("live", labels={"meshinject.io/inject": "enabled"}) as ns:
        meshapp.deploy(cluster, ns)
        yield cluster, ns


@on_cluster
def test_inspect_of_one_pod_shows_its_settings_and_live_proxy_stats(
    shop: tuple[LocalCluster, str], capsys: pytest.CaptureFixture[str]
) -> None:
    cluster, ns = shop
    web = meshapp.pods(cluster, ns, "web")[0]["metadata"]["name"]
    json.loads(meshapp.proxy_get(cluster, ns, web, 8080, "/"))  # one request through it
    code, out, _ = _live(cluster, capsys, "inspect", "-n", ns, web)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == f"pod {ns}/{web}: injected, as it should be"
    assert f"live proxy stats (pods/{web}:15090/proxy/stats/prometheus):" in lines
    assert any(line.startswith("  server    live 1, uptime ") for line in lines), out
    assert any(line.startswith("  http      outbound_http           requests ")
               for line in lines), out
    xds_line = next(line for line in lines if line.startswith("  xds "))
    assert xds_line.startswith("  xds         synced, config "), xds_line
    assert " on meshinject-controlplane-" in xds_line
    for kind in ("Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration"):
        assert any(line.startswith(f"    {kind} ") and line.endswith(", current")
                   for line in lines), (kind, out)


@on_cluster
def test_inspect_shows_each_proxys_xds_state_from_the_control_plane_replicas(
    shop: tuple[LocalCluster, str], capsys: pytest.CaptureFixture[str]
) -> None:
    cluster, ns = shop
    code, out, _ = _live(cluster, capsys, "inspect", "-n", ns)
    assert code == 0, out
    rows = {line.split()[1]: line.split()[2:] for line in out.splitlines()
            if line.startswith(ns)}
    assert len(rows) == 3 and all(r[6] == "synced" and r[7] != "-" for r in rows.values()), out
    assert "no answer" not in out  # both replicas answered through the pod proxy


@on_cluster
def test_proxy_config_prints_what_the_control_plane_gives_one_pod(
    shop: tuple[LocalCluster, str], capsys: pytest.CaptureFixture[str]
) -> None:
    cluster, ns = shop
    web = meshapp.pods(cluster, ns, "web")[0]["metadata"]["name"]
    code, out, _ = _live(cluster, capsys, "proxy-config", web, "-n", ns, "--kind", "clusters")
    assert code == 0, out
    clusters = json.loads(out)
    assert list(clusters) == ["Cluster"]
    assert f"outbound|80||catalog.{ns}.svc.cluster.local" in clusters["Cluster"]
    code, out, _ = _live(cluster, capsys, "proxy-config", web, "-n", ns)
    assert code == 0 and set(json.loads(out)) == {
        "Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration"}


@on_cluster
def test_proxy_config_without_a_control_plane_says_so(
    seeded: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    deploy = "deployment/meshinject-controlplane"
    seeded.kubectl("scale", deploy, "-n", NS, "--replicas=0")
    try:
        meshapp.wait_for("no control plane pod", lambda: not meshapp.pods(
            seeded, NS, "meshinject-controlplane") and not json.loads(seeded.kubectl(
                "get", "pods", "-n", NS, "-l", "app.kubernetes.io/name=meshinject-controlplane",
                "-o", "json").stdout)["items"], timeout=90)
        code, _, err = _live(seeded, capsys, "proxy-config", "web-6d4b9-x2x9q", "-n", "shop")
    finally:
        seeded.kubectl("scale", deploy, "-n", NS, "--replicas=2")
        seeded.kubectl("rollout", "status", deploy, "-n", NS, "--timeout=120s", timeout=150)
    assert code == 2
    assert "no control plane replica answered: none is running" in err


# -- a NACK: the one thing only a fake control plane replica can answer ----------------------
# A NACK needs a config Envoy refuses, and the control plane computes none from what a user can
# write (annotations are validated before they reach it); tests/dataplane/test_xds.py makes a
# real Envoy NACK a listener the real control plane was fed. Here the fake API server's pod
# proxy answers for a replica with a NACK in its /debug/proxies, to show how inspect reports it.
@pytest.fixture
def with_nack(fake: Running) -> Running:
    livecluster.seed_fake_proxy(fake)
    return fake


def test_inspect_names_a_refused_config_with_envoys_reason(
    with_nack: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "inspect", "-n", "shop", "--kubeconfig", with_nack.kubeconfig)
    assert code == 0, out
    rows = {line.split()[1]: line.split() for line in out.splitlines()[1:] if line.count(" ") > 6}
    assert rows["web-6d4b9-x2x9q"][-3:] == ["synced", "4abd5a67", "PERMISSIVE"]
    assert rows["payments-7b5d-qq7zn"][-3:] == ["NACK", "4abd5a67", "STRICT"]
    assert rows["cart-5f7c8-k8d2m"][-4:] == ["NOT", "CONNECTED", "-", "-"]
    assert ("NACK: shop/payments-7b5d-qq7zn refused its config and runs its last good one: "
            "Listener version 5: Error adding/updating listener(s) inbound: malformed IP "
            "address: 10.0.0.256") in out
