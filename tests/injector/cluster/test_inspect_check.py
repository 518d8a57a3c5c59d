"""``meshinject inspect`` and live ``check`` against a seeded fake cluster; outputs are goldens
(tests/golden/cluster/), which the README quotes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from injector import cli
from injector.cluster.inspect import summarize_stats
from tests.support.fakeserver import Running
from tests.support.livecluster import CONFIG, STATS, seed

Golden = Callable[[str, str], None]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _live(cluster: Running, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``_run`` against the fake cluster's kubeconfig."""
    return _run(capsys, *argv, "--kubeconfig", cluster.kubeconfig)


@pytest.fixture
def cluster(fake: Running, tmp_path: Path) -> Running:
    seed(fake, tmp_path)
    return fake


def test_inspect_lists_every_pod_of_mesh_enabled_namespaces_and_label_opt_ins(
    cluster: Running, capsys: pytest.CaptureFixture[str], golden: Golden
) -> None:
    code, out, _ = _live(cluster, capsys, "inspect", "-A")
    golden("injector/cluster/inspect_all.txt", out)
    assert code == 1  # a pod is missing its proxy
    rows = {line.split()[1]: line.split() for line in out.splitlines()[1:] if line.count(" ") > 6}
    assert rows["web-6d4b9-x2x9q"][2:] == ["yes", "ready", "native", "REDIRECT", "0", "current",
                                          "synced", rows["web-6d4b9-x2x9q"][-2], "PERMISSIVE"]
    assert rows["cart-5f7c8-k8d2m"][2:] == [
        "yes",
        "NOT",
        "READY",
        "native",
        "TPROXY",
        "3",
        "current",
        "NOT",
        "CONNECTED",
        "-",
        "-",
    ]
    assert rows["payments-7b5d-qq7zn"][-4:-2] == ["STALE", "NACK"]
    assert "NACK: shop/payments-7b5d-qq7zn refused its config" in out
    assert rows["reports-68f9-bx4lp"][2] == "MISSING"
    assert rows["batch-0"][2] == "no" and rows["node-agent-9zz"][2] == "no"
    assert rows["canary-1"][2] == "yes" and "plain-1" not in rows


def test_inspect_of_one_pod_shows_its_settings_and_live_proxy_stats(
    cluster: Running, capsys: pytest.CaptureFixture[str], golden: Golden
) -> None:
    code, out, _ = _live(cluster, capsys, "inspect", "-n", "shop", "web-6d4b9-x2x9q")
    golden("injector/cluster/inspect_pod.txt", out)
    assert code == 0
    assert "inbound-passthrough     connections 1204" in out
    assert ("GET", "/api/v1/namespaces/shop/pods/web-6d4b9-x2x9q:15090/proxy/stats/prometheus") in (
        cluster.api.requests
    )


def test_inspect_of_a_pod_whose_proxy_cannot_be_reached_says_so(
    cluster: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _live(cluster, capsys, "inspect", "-n", "shop", "cart-5f7c8-k8d2m")
    assert code == 1 and "unavailable: " in out and "HTTP 503" in out


def test_check_of_a_namespace_explains_each_pod_and_the_webhook(
    cluster: Running, capsys: pytest.CaptureFixture[str], golden: Golden
) -> None:
    code, out, _ = _live(cluster, capsys, "check", "-n", "shop")
    golden("injector/cluster/check_namespace.txt", out)
    assert code == 1
    assert "serving certificate (secret meshinject-system/meshinject-certs) verifies" in out
    assert "injector: 2/2 pods ready in meshinject-system" in out


def test_check_of_a_pod_missing_its_proxy_says_to_recreate_it(
    cluster: Running, capsys: pytest.CaptureFixture[str], golden: Golden
) -> None:
    code, out, _ = _live(cluster, capsys, "check", "reports-68f9-bx4lp", "-n", "shop")
    golden("injector/cluster/check_missing.txt", out)
    assert code == 1 and "NOT injected, but it should be" in out


def test_check_of_an_annotation_opt_in_says_the_webhook_selects_by_label(
    cluster: Running, capsys: pytest.CaptureFixture[str], golden: Golden
) -> None:
    code, out, _ = _live(cluster, capsys, "check", "annotated-1", "-n", "legacy")
    golden("injector/cluster/check_annotation.txt", out)
    assert "no entry selects this pod" in out and "use label meshinject.io/inject=true" in out
    assert code == 1


def test_check_of_an_opted_out_pod_passes(
    cluster: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _live(cluster, capsys, "check", "batch-0", "-n", "shop")
    assert code == 0
    assert "the pod opts out with label meshinject.io/inject=false" in out


def test_check_reports_a_webhook_whose_ca_bundle_is_missing(
    cluster: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    hook = cluster.api.get("mutatingwebhookconfigurations", "", "meshinject")
    assert hook is not None
    del hook["webhooks"][1]["clientConfig"]["caBundle"]
    cluster.api.put(hook)
    code, out, _ = _live(cluster, capsys, "check", "web-6d4b9-x2x9q", "-n", "shop")
    assert code == 1 and "caBundle is empty" in out


def test_check_without_a_cluster_exits_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "check", "-n", "shop", "--kubeconfig", str(tmp_path / "none"))
    assert code == 2 and "cannot load Kubernetes credentials" in err


def test_stats_summary_skips_zero_counters() -> None:
    text = "\n".join(summarize_stats(STATS))
    assert "blackhole" not in text and "connect failures 2" in text
    assert "uptime 3605 s, 12.4 MiB allocated" in text


def test_check_without_permission_to_read_the_secret_still_reports_the_ca(
    cluster: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.api.forbidden.add(
        ("GET", "/api/v1/namespaces/meshinject-system/secrets/meshinject-certs")
    )
    code, out, _ = _live(cluster, capsys, "check", "web-6d4b9-x2x9q", "-n", "shop")
    assert code == 0
    assert "CA CN=meshinject-ca.meshinject-system: 3650 days left" in out
    assert "not checked: no permission to read secret meshinject-system/meshinject-certs" in out


def test_check_can_judge_a_namespace_as_if_it_were_labelled(
    cluster: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    label = "meshinject.io/inject=enabled"
    code, out, _ = _live(cluster, capsys, "check", "-n", "legacy", "--namespace-label", label)
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines() if "/" in line[:30]}
    assert rows["legacy/plain-1"] == ["yes", "MISSING"]
    assert rows["legacy/canary-1"] == ["yes", "yes"]
    assert code == 1


def test_inspect_of_a_pod_left_alone_says_why(
    cluster: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _live(cluster, capsys, "inspect", "-n", "shop", "batch-0")
    assert code == 0
    assert out.splitlines() == [
        "pod shop/batch-0: not injected, as it should be",
        "  why         the pod opts out with label meshinject.io/inject=false",
    ]


def test_inspect_of_an_empty_namespace_says_so(
    cluster: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "empty"}})
    code, out, _ = _live(cluster, capsys, "inspect", "-n", "empty")
    assert (code, out) == (0, "no pods in namespace empty\n")


def test_check_flags_a_serving_cert_that_does_not_name_the_webhooks_service(
    cluster: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    hook = cluster.api.get("mutatingwebhookconfigurations", "", "meshinject")
    assert hook is not None
    for entry in hook["webhooks"]:
        entry["clientConfig"]["service"]["name"] = "renamed"
    cluster.api.put(hook)
    code, out, _ = _live(cluster, capsys, "check", "web-6d4b9-x2x9q", "-n", "shop")
    assert code == 1 and "does NOT name renamed.meshinject-system.svc" in out


def test_check_flags_a_ca_bundle_that_is_not_a_certificate(
    cluster: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    hook = cluster.api.get("mutatingwebhookconfigurations", "", "meshinject")
    assert hook is not None
    for entry in hook["webhooks"]:
        entry["clientConfig"]["caBundle"] = "bm90IGEgY2VydA=="
    cluster.api.put(hook)
    code, out, _ = _live(cluster, capsys, "check", "-n", "shop")
    assert code == 1 and "a certificate is not valid PEM" in out


def test_without_access_to_the_mesh_config_the_defaults_are_compared(
    cluster: Running, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    path = "/api/v1/namespaces/meshinject-system/configmaps/meshinject-config"
    cluster.api.forbidden.add(("GET", path))
    code, out, _ = _live(cluster, capsys, "inspect", "-n", "shop")
    assert code == 1 and "web-6d4b9-x2x9q" in out
    assert "cannot read the mesh config" in caplog.text


def test_proxy_config_prints_what_the_control_plane_gives_one_pod(
    cluster: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _live(cluster, capsys, "proxy-config", "web-6d4b9-x2x9q", "-n", "shop",
                         "--kind", "clusters")
    assert code == 0
    assert json.loads(out) == {"Cluster": CONFIG["Cluster"]}
    code, out, _ = _live(cluster, capsys, "proxy-config", "web-6d4b9-x2x9q", "-n", "shop")
    assert code == 0 and json.loads(out) == CONFIG
    asked = [path for method, path in cluster.api.requests if "debug/config" in path]
    assert asked, "asked no control plane replica"


def test_proxy_config_without_a_control_plane_says_so(
    cluster: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.api.objects.pop(("pods", "meshinject-system", "meshinject-controlplane-5d8-0"))
    code, _, err = _live(cluster, capsys, "proxy-config", "web-6d4b9-x2x9q", "-n", "shop")
    assert code == 2
    assert "no control plane replica answered: none is running" in err
