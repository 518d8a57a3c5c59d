"""The webhook as the API server meets it: real uvicorn, real TLS, a verifying client."""

from __future__ import annotations

import argparse
import base64
import contextlib
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from injector.cli import serve as serve_command
from injector.core.patch import inject_pod
from injector.core.policy import decide
from injector.webhook.server import HEADER_SECONDS, ServeOptions
from mesh.settings import MeshConfig
from tests.support.corpus import admission_review, corpus_pods
from tests.support.paths import REPO
from tests.support.webhook_server import Server, serve

CONFIG = MeshConfig()
SAMPLE = {name: pod for name, pod in corpus_pods()}
SOME = ["AI_vllm-deployment_vllm-deployment.yaml:0", *sorted(SAMPLE)[::15]]
OTHER_NAME = "meshinject.example"  # never looked up: every dial below goes to 127.0.0.1
X509_V_ERR_HOSTNAME_MISMATCH = 62


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(tmp_path_factory.mktemp("webhook"), ["--self-signed"]) as running:
        yield running


def post(server: Server, doc: Any) -> tuple[int, dict[str, Any]]:
    with server.client() as client:
        body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
        reply = client.post("/mutate", content=body)
    return reply.status_code, reply.json()


def _in_shop(pod: dict[str, Any]) -> dict[str, Any]:
    return dict(pod, metadata={**pod["metadata"], "namespace": "shop"})


@pytest.fixture(scope="module")
def offline() -> dict[str, dict[str, Any]]:
    """What ``meshinject inject -f -`` makes of the same pods (one run for all of them)."""
    done = subprocess.run(
        [sys.executable, "-m", "injector.cli", "inject", "-f", "-"],
        input=yaml.safe_dump_all([_in_shop(SAMPLE[name]) for name in SOME]),
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    out = [doc for doc in yaml.safe_load_all(done.stdout) if doc is not None]
    assert len(out) == len(SOME), done.stderr
    return dict(zip(SOME, out, strict=True))


@pytest.mark.parametrize("name", SOME)
def test_the_patch_applied_to_the_pod_equals_inject_pod_and_the_offline_cli(
    server: Server, offline: dict[str, dict[str, Any]], name: str
) -> None:
    pod = _in_shop(SAMPLE[name])
    status, body = post(server, admission_review(pod, namespace="shop", uid=f"uid-{name}"))
    assert status == 200
    response = body["response"]
    assert (response["uid"], response["allowed"]) == (f"uid-{name}", True)
    expected = inject_pod(pod, config=CONFIG, namespace="shop")
    if expected.decision.inject:
        patched = jsonpatch.apply_patch(pod, orjson.loads(base64.b64decode(response["patch"])))
    else:
        assert "patch" not in response
        patched = pod
    assert patched == expected.pod == offline[name]


def test_a_skipped_pod_gets_no_patch_and_a_warning(server: Server) -> None:
    pod = {
        "metadata": {"generateName": "x-"},
        "spec": {"hostNetwork": True, "containers": [{"name": "a", "image": "a"}]},
    }
    status, body = post(server, admission_review(pod))
    assert status == 200
    assert body["response"]["allowed"] is True
    assert "patch" not in body["response"]
    decision = decide(pod, namespace="default", namespace_labels=None, config=CONFIG)
    assert decision.code == "host-network" and "(hostNetwork: true)" in decision.reason
    assert body["response"]["warnings"] == [f"meshinject: not injected: {decision.reason}"]


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


def _whole(answer: bytes) -> bool:
    """Whether an HTTP/1.1 answer has its head and all the body its Content-Length says."""
    head, found, body = answer.partition(b"\r\n\r\n")
    length = head.lower().partition(b"content-length: ")[2].split(b"\r\n")[0]
    return bool(found) and len(body) >= int(length or 0)


def _answer_records(server: Server, request: bytes) -> tuple[bytes, int]:
    """Send one request over TLS 1.2 (no post-handshake messages to tell apart) and read the
    answer; it and how many TLS application-data records it came in."""
    ctx = server.ssl_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                incoming.write(raw.recv(65536))
        tls.write(request)
        raw.sendall(outgoing.read())
        wire, plain, records = b"", b"", 0
        while not _whole(plain):
            chunk = raw.recv(65536)
            assert chunk, f"the server closed after {plain!r}"
            wire += chunk
            while len(wire) >= 5 and len(wire) >= 5 + int.from_bytes(wire[3:5], "big"):
                size = 5 + int.from_bytes(wire[3:5], "big")
                records += wire[0] == 23  # application data
                incoming.write(wire[:size])
                wire = wire[size:]
            with contextlib.suppress(ssl.SSLWantReadError):
                while data := tls.read(65536):
                    plain += data
    return plain, records


@pytest.mark.parametrize("request_line", [
    b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    b"Content-Length: 2\r\n\r\n{}",
])
def test_an_answer_goes_out_in_one_tls_record(server: Server, request_line: bytes) -> None:
    """Its head and body written as one (injector.webhook.server.CoalescedWrites): one record,
    one send, where uvicorn alone makes two of each."""
    answer, records = _answer_records(server, request_line)
    assert answer.startswith(b"HTTP/1.1 "), answer
    assert records == 1, (records, answer)


def _handshake(port: int, ctx: ssl.SSLContext, name: str) -> dict[str, Any]:
    """Dial 127.0.0.1 itself (no name is looked up) and check the certificate against ``name``."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=name) as tls,
    ):
        peer: dict[str, Any] = tls.getpeercert()  # type: ignore[assignment]
        return peer


def test_a_client_checking_another_hostname_refuses_the_certificate(server: Server) -> None:
    """As the API server would refuse a webhook answering under another Service's name: the
    TLS handshake itself fails on the name, with the chain otherwise trusted."""
    ctx = server.ssl_context()
    assert ("DNS", "localhost") in _handshake(server.port, ctx, "localhost")["subjectAltName"]
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        _handshake(server.port, ctx, OTHER_NAME)
    assert caught.value.verify_code == X509_V_ERR_HOSTNAME_MISMATCH, caught.value
    assert f"Hostname mismatch, certificate is not valid for '{OTHER_NAME}'" in str(caught.value)


def test_a_certificate_that_names_the_other_host_is_accepted_under_it(tmp_path: Path) -> None:
    """The control for the test above: what made it fail was the name, nothing else."""
    with serve(tmp_path, ["--self-signed", "--dns-name", OTHER_NAME]) as named:
        peer = _handshake(named.port, named.ssl_context(), OTHER_NAME)
    assert ("DNS", OTHER_NAME) in peer["subjectAltName"]


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


def test_without_the_flag_serve_cuts_half_sent_headers_after_10_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's 10 s: what ``meshinject serve`` runs with when no --header-timeout is given
    (tests/reliability/test_fuzz_server.py times the cut of a default server: 10 s)."""
    used: list[ServeOptions] = []

    def record(options: ServeOptions, **_: object) -> int:
        used.append(options)
        return 0

    monkeypatch.setattr(serve_command, "serve", record)
    monkeypatch.setattr(serve_command, "exit_cleanly_on_stop", lambda: None)
    parser = argparse.ArgumentParser()
    serve_command.register(parser.add_subparsers(dest="command"), "serve")
    args = parser.parse_args(["serve", "--self-signed", "--cert-dir", str(tmp_path)])
    assert serve_command.run(args) == 0
    assert [o.header_timeout for o in used] == [HEADER_SECONDS] and HEADER_SECONDS == 10.0


def _wait_for(what: str, ready: Callable[[], bool], *, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.02)


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_server_answers_the_review_in_flight_removes_its_key_and_exits_0(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """How the kubelet stops the webhook (SIGTERM), and Ctrl-C: the review in flight is
    answered, new connections are refused, the --self-signed key directory is gone, exit 0.
    (``serve`` also checks, for every server the suite starts, that its temporary directory is
    empty once it stopped.)"""
    body = orjson.dumps(admission_review(_in_shop(SAMPLE[SOME[0]]), namespace="shop",
                                         uid="in-flight"))
    head = (b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    with serve(tmp_path, ["--self-signed"]) as server:
        key_dir = server.ca_file.parent
        assert (key_dir / "tls.key").is_file()
        ctx = server.ssl_context()
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(head)
            # the app asked for the body: the review is in flight
            assert tls.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
            server.proc.send_signal(signum)
            _wait_for("the server starts its shutdown", lambda: "Shutting down" in server.log())
            _wait_for("new connections are refused", lambda: _refused(server.port))
            tls.sendall(body)
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
        assert server.proc.wait(timeout=30) == 0, server.log()[-3000:]
        status, _, payload = answer.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 200 "), answer[:300]
        assert orjson.loads(payload)["response"]["uid"] == "in-flight"
        assert not key_dir.exists()
