"""The webhook as the API server meets it: real uvicorn, real TLS, a verifying client."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from injector.core.patch import inject_pod
from mesh.settings import MeshConfig
from tests.support.corpus import admission_review, corpus_pods
from tests.support.paths import REPO
from tests.support.webhook_server import Server, serve

CONFIG = MeshConfig()
SAMPLE = {name: pod for name, pod in corpus_pods()}
SOME = ["AI_vllm-deployment_vllm-deployment.yaml:0", *sorted(SAMPLE)[::15]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(tmp_path_factory.mktemp("webhook"), ["--self-signed"]) as running:
        yield running


def post(server: Server, doc: Any) -> tuple[int, dict[str, Any]]:
    with server.client() as client:
        body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
        reply = client.post("/mutate", content=body)
    return reply.status_code, reply.json()


def offline_inject(pod: dict[str, Any]) -> dict[str, Any]:
    """What ``meshinject inject -f -`` makes of the same pod."""
    done = subprocess.run(
        [sys.executable, "-m", "injector.cli", "inject", "-f", "-"],
        input=yaml.safe_dump(pod),
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    result: dict[str, Any] = yaml.safe_load(done.stdout)
    return result


@pytest.mark.parametrize("name", SOME)
def test_the_patch_applied_to_the_pod_equals_inject_pod_and_the_offline_cli(
    server: Server, name: str
) -> None:
    pod = dict(SAMPLE[name], metadata={**SAMPLE[name]["metadata"], "namespace": "shop"})
    status, body = post(server, admission_review(pod, namespace="shop", uid=f"uid-{name}"))
    assert status == 200
    response = body["response"]
    assert (response["uid"], response["allowed"]) == (f"uid-{name}", True)
    expected = inject_pod(pod, config=CONFIG, namespace="shop")
    if not expected.decision.inject:
        assert "patch" not in response
        return
    patched = jsonpatch.apply_patch(pod, orjson.loads(base64.b64decode(response["patch"])))
    assert patched == expected.pod
    if (REPO / "injector" / "cmd_offline.py").exists():
        assert patched == offline_inject(pod)


def test_a_skipped_pod_gets_no_patch_and_a_warning(server: Server) -> None:
    pod = {
        "metadata": {"generateName": "x-"},
        "spec": {"hostNetwork": True, "containers": [{"name": "a", "image": "a"}]},
    }
    status, body = post(server, admission_review(pod))
    assert status == 200
    assert body["response"]["allowed"] is True
    assert "patch" not in body["response"]
    assert (
        "hostNetwork" in body["response"]["warnings"][0]
        or "host" in body["response"]["warnings"][0]
    )


def test_a_bad_annotation_is_denied_with_annotation_and_value(server: Server) -> None:
    pod = {
        "metadata": {"annotations": {"traffic.meshinject.io/exclude-inbound-ports": "http"}},
        "spec": {"containers": [{"name": "a", "image": "a"}]},
    }
    status, body = post(server, admission_review(pod))
    assert (status, body["response"]["allowed"]) == (200, False)
    message = body["response"]["status"]["message"]
    assert "traffic.meshinject.io/exclude-inbound-ports" in message and '"http"' in message


@pytest.mark.parametrize("body", [b"", b"{}", b"not json", b'{"apiVersion": 1}'])
def test_a_malformed_body_gets_400_with_a_reason(server: Server, body: bytes) -> None:
    with server.client() as client:
        reply = client.post("/mutate", content=body)
    assert reply.status_code == 400
    assert reply.json()["detail"]


def test_an_oversized_body_gets_413_declared_or_streamed(server: Server) -> None:
    big = b"x" * (3 * 1024 * 1024 + 1)
    with server.client() as client:
        assert client.post("/mutate", content=big).status_code == 413
    with server.client() as client:
        chunked = client.post("/mutate", content=iter([big[: 1 << 20]] * 4))
        assert chunked.status_code == 413
        assert "larger than" in chunked.json()["detail"]
        assert client.get("/healthz").status_code == 200


def test_a_non_create_request_is_allowed_without_a_patch(server: Server) -> None:
    pod = SAMPLE[SOME[0]]
    status, body = post(server, admission_review(pod, operation="UPDATE", uid="u"))
    assert (status, body["response"]) == (200, {"uid": "u", "allowed": True})


def counters(server: Server) -> dict[str, float]:
    with server.client() as client:
        text = client.get("/metrics").text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + "".join(f"|{k}={v}" for k, v in sorted(sample.labels.items()))
            values[key] = sample.value
    return values


def test_metrics_count_requests_by_outcome_and_the_review_time(server: Server) -> None:
    before = counters(server)
    pod = SAMPLE[SOME[0]]
    post(server, admission_review(pod))
    post(server, admission_review(pod))
    post(server, admission_review(pod, namespace="kube-system"))
    post(server, b"junk")
    after = counters(server)

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("meshinject_requests_total|outcome=injected") == 2
    assert delta("meshinject_injections_total") == 2
    assert delta("meshinject_skips_total|reason=system-namespace") == 1
    assert delta("meshinject_failures_total|reason=bad-request") == 1
    assert delta("meshinject_review_duration_seconds_count") == 4


def test_the_probes_answer(server: Server) -> None:
    with server.client() as client:
        assert client.get("/healthz").text == "ok"
        assert client.get("/readyz").text == "ok"


def test_a_client_checking_another_hostname_refuses_the_certificate(server: Server) -> None:
    import ssl

    import httpx

    ctx = server.ssl_context()
    with pytest.raises(httpx.ConnectError), httpx.Client(verify=ctx) as client:
        client.get(
            f"https://meshinject.example:{server.port}/healthz",
            extensions={"sni_hostname": "meshinject.example"},
        )
    assert isinstance(ctx, ssl.SSLContext)


def test_serve_refuses_two_certificate_sources(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "injector.cli", "serve", "--self-signed", "--tls-cert", "x"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 2
    assert "--tls-cert/--tls-key, --self-signed, --cert-secret" in done.stderr


def serve_fails(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "injector.cli", "serve", "--port", "1", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_a_bad_mesh_config_stops_serve_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text("proxy:\n  concurrency: lots\n")
    done = serve_fails("--self-signed", "--config", str(config))
    assert done.returncode == 2
    assert "proxy.concurrency" in done.stderr and "lots" in done.stderr


def test_a_cert_secret_without_a_namespace_is_refused() -> None:
    done = serve_fails("--cert-secret", "webhook-certs", "--cert-dir", "/tmp")
    assert done.returncode == 2
    assert "--cert-secret 'webhook-certs': expected NAMESPACE/NAME" in done.stderr


def test_extra_sans_and_the_check_interval_belong_to_the_cert_store() -> None:
    done = serve_fails("--self-signed", "--extra-san", "127.0.0.1")
    assert done.returncode == 2 and "--extra-san goes with --cert-secret" in done.stderr
    done = serve_fails("--cert-secret", "ns/s", "--cert-dir", "/tmp", "--cert-check-seconds", "0")
    assert done.returncode == 2 and "--cert-check-seconds 0: must be above 0" in done.stderr


def test_missing_certificate_files_stop_serve_with_the_reason(tmp_path: Path) -> None:
    done = serve_fails("--tls-cert", str(tmp_path / "no.crt"), "--tls-key", str(tmp_path / "k"))
    assert done.returncode == 1
    assert "cannot load the certificate" in done.stderr and "no.crt" in done.stderr


def test_a_client_that_never_finishes_its_headers_is_disconnected(tmp_path: Path) -> None:
    with serve(tmp_path, ["--self-signed", "--header-timeout", "1"]) as server:
        ctx = server.ssl_context()
        with (
            ctx.wrap_socket(
                socket.create_connection(("localhost", server.port)), server_hostname="localhost"
            ) as silent,
            ctx.wrap_socket(
                socket.create_connection(("localhost", server.port)), server_hostname="localhost"
            ) as half,
        ):
            half.sendall(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Ty")
            started = time.monotonic()
            for sock in (silent, half):
                sock.settimeout(5)
                assert sock.recv(1) == b""  # closed by the server, no answer
            assert time.monotonic() - started < 4
        with server.client() as client:
            assert client.get("/healthz").status_code == 200
