"""``meshinject access check|list`` against the fake API server: the answer decide() gives, the
policy and rule that decide it, the pod's mTLS mode and where it comes from, and policies that
do not parse shown and left out, as the control plane leaves them out."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest

from injector import cli
from mesh.contract import MTLS_MODE, STATUS
from tests.support.accesspolicies import DOCS, FRONTEND_ONLY, WEB_API, docs_examples, policy_obj
from tests.support.fakeserver import Running

BAD = policy_obj("broken", {"mtls": "strict"})


def _pod(name: str, *, labels: dict[str, str], annotations: dict[str, str] | None = None
         ) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "labels": labels,
                         "annotations": {STATUS: "{}", **(annotations or {})}},
            "spec": {"serviceAccountName": "web", "containers": [{"name": "app"}]}}


@pytest.fixture
def shop(fake: Running) -> Running:
    fake.api.put({"apiVersion": "v1", "kind": "Namespace",
                  "metadata": {"name": "shop", "labels": {MTLS_MODE: "strict"}}})
    fake.api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ops"}})
    fake.api.put(_pod("web-1", labels={"app": "web"}))
    fake.api.put(_pod("web-2", labels={"app": "web"},
                      annotations={MTLS_MODE: "permissive"}))
    fake.api.put(_pod("db-1", labels={"app": "db"}))
    for obj in (FRONTEND_ONLY, WEB_API, BAD):
        fake.api.put(dict(obj))
    return fake


def run(capsys: pytest.CaptureFixture[str], fake: Running, *argv: str) -> tuple[int, str]:
    code = cli.main(["access", *argv, "--kubeconfig", fake.kubeconfig])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_an_allowed_caller_is_told_which_policy_and_rule_let_it_in(
    shop: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, shop, "check", "--from", "shop/frontend", "--to", "web-1",
                    "-n", "shop", "--port", "8080", "--method", "GET", "--path", "/anything")
    assert code == 0
    assert out.splitlines()[0] == "allowed by AccessPolicy shop/frontend-only (spec.allow[0])"
    assert "mTLS mode STRICT (AccessPolicy shop/web.api says STRICT)" in out
    assert "  shop/web.api spec.allow[0]: does not allow it: path /anything matches none" in out
    assert "ignored: AccessPolicy shop/broken does not parse" in out


def test_a_denied_caller_is_told_why_rule_by_rule_and_exits_1(
    shop: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, shop, "check", "--from", "shop/other", "--to", "web-1", "-n",
                    "shop", "--port", "9090")
    assert code == 1
    assert out.splitlines()[0].startswith(
        "denied: caller shop/other, port 9090, a TCP connection; AccessPolicy "
        "shop/frontend-only, shop/web.api select this pod and no rule allows it")
    assert "shop/web.api spec.allow[1]: does not allow it: caller shop/other is not one of " \
           "from: namespace ops" in out


def test_an_http_request_defaults_its_method_and_path(
    shop: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, shop, "check", "--from", "shop/mobile", "--to", "web-1", "-n",
                    "shop", "--port", "8080", "--path", "/api/items")
    assert code == 0 and "allowed by AccessPolicy shop/web.api (spec.allow[0])" in out


def test_plaintext_under_strict_is_refused_before_any_policy(
    shop: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, shop, "check", "--plaintext", "--to", "web-1", "-n", "shop",
                    "--port", "8080", "--path", "/healthz")
    assert code == 1 and out.startswith("refused before authorization: the pod's mTLS mode is "
                                        "STRICT")
    # web-2's annotation makes it PERMISSIVE: then the rule without from admits plaintext
    code, out = run(capsys, shop, "check", "--plaintext", "--to", "web-2", "-n", "shop",
                    "--port", "8080", "--path", "/healthz")
    assert code == 0 and "allowed by AccessPolicy shop/web.api (spec.allow[2])" in out
    assert f"mTLS mode PERMISSIVE (annotation {MTLS_MODE} on the pod)" in out


def test_a_pod_no_policy_selects_accepts_everyone_in_its_namespaces_mode(
    shop: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, shop, "check", "--from", "ops/ci", "--to", "db-1", "-n", "shop",
                    "--port", "5432")
    assert code == 0
    assert out.splitlines()[:2] == [
        "allowed: no AccessPolicy selects this pod, so it accepts every caller",
        f"pod shop/db-1: mTLS mode STRICT (label {MTLS_MODE}=strict on the namespace)"]


def test_list_shows_each_policy_the_pods_it_selects_and_the_invalid_ones(
    shop: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, shop, "list", "-n", "shop")
    lines = out.splitlines()
    assert code == 1  # one policy does not parse
    assert lines[0].split() == ["NAMESPACE", "POLICY", "MTLS", "RULES", "PODS"]
    assert lines[1].split() == ["shop", "frontend-only", "-", "1", "web-1,", "web-2"]
    assert lines[2].split() == ["shop", "web.api", "STRICT", "3", "web-1,", "web-2"]
    assert lines[3].startswith("INVALID shop/broken (ignored: protects nothing until fixed): ")
    assert 'spec.mtls="strict"' in lines[3]


def test_list_of_a_namespace_without_policies_says_everyone_gets_in(
    shop: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, shop, "list", "-n", "ops") == (
        0, "No AccessPolicies in namespace ops: every pod accepts every caller.\n")


@pytest.mark.parametrize(("argv", "fragment"), [
    (["check", "--from", "frontend", "--to", "w", "--port", "80"],
     "expected NAMESPACE/SERVICEACCOUNT"),
    (["check", "--from", "a/b", "--to", "w", "--port", "0"], "0 is not a port"),
    (["check", "--to", "w", "--port", "80"], "one of the arguments --from --plaintext is "
     "required"),
    (["check", "--from", "a/b", "--plaintext", "--to", "w", "--port", "80"], "not allowed "
     "with argument"),
])
def test_bad_arguments_are_usage_errors_naming_the_value(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["access", *argv]) == 2
    assert fragment in capsys.readouterr().err


def test_a_missing_pod_exits_2_naming_it(
    shop: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, shop, "check", "--from", "a/b", "--to", "nope", "-n", "shop",
                    "--port", "80")
    assert code == 2 and "nope" in out


def test_the_docs_example_prints_what_the_docs_show(
    fake: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    [block] = re.findall(r"```text\n\$ (meshinject access check .*?)\n(.*?)```",
                         DOCS.read_text(), flags=re.S)
    command, shown = block
    fake.api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    fake.api.put(_pod("web-1", labels={"app": "web"}))
    for obj in docs_examples():
        fake.api.put(dict(obj))
    code, out = run(capsys, fake, *shlex.split(command)[2:])
    assert code == 0 and out == shown
