"""A bad L7 annotation is refused where every annotation is: by the webhook's review, by
``meshinject inject`` and ``check``, with a message naming the annotation and the value; a good
one reaches the proxy's config, which the control plane translates from the same annotations."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml

from controlplane.registry import objects
from controlplane.translate.proxy import translate, view_key
from injector.cli import main
from injector.core.patch import inject_pod
from injector.core.review import review
from mesh.errors import AnnotationError
from mesh.settings import MeshConfig
from tests.support.corpus import admission_review

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations:
        proxy.meshinject.io/retries: "3"
        proxy.meshinject.io/fault-abort: "%s"
    spec:
      containers: [{name: app, image: web:1}]
"""


def pod(fault: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "shop",
                         "annotations": {"proxy.meshinject.io/fault-abort": fault}},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}}


def test_the_core_refuses_a_bad_l7_annotation_at_injection() -> None:
    with pytest.raises(AnnotationError) as caught:
        inject_pod(pod("503@150"), config=MeshConfig(), namespace="shop")
    assert str(caught.value).startswith('annotation proxy.meshinject.io/fault-abort="503@150"')


def test_the_webhook_denies_the_pod_naming_annotation_and_value() -> None:
    outcome = review(orjson.dumps(admission_review(pod("503@x"))), config=MeshConfig())
    response = orjson.loads(outcome.body)["response"]
    assert response["allowed"] is False
    assert 'proxy.meshinject.io/fault-abort="503@x"' in response["status"]["message"]


def test_inject_and_check_print_the_annotation_and_value_and_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(MANIFEST % "abort")
    assert main(["inject", "-f", str(bad)]) == 1
    assert 'proxy.meshinject.io/fault-abort="abort"' in capsys.readouterr().err
    assert main(["check", "-f", str(bad)]) == 1
    assert 'proxy.meshinject.io/fault-abort="abort"' in capsys.readouterr().out


def test_a_good_one_reaches_the_proxy_over_xds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The injected pod, as the control plane's registry sees it, gets the annotation's fault
    filter and retries in the config it is sent."""
    good = tmp_path / "good.yaml"
    good.write_text(MANIFEST % "503@5")
    assert main(["inject", "-f", str(good)]) == 0
    template = yaml.safe_load(capsys.readouterr().out)["spec"]["template"]
    found = objects.workload({**template, "metadata": {
        **template["metadata"], "name": "web-1", "namespace": "shop"}})
    assert found is not None
    key = view_key(found, config=MeshConfig())
    resources = translate((), overrides=key.overrides, security=key.security)
    text = orjson.dumps(resources.by_type()).decode()
    assert "envoy.filters.http.fault" in text and '"num_retries":3' in text
