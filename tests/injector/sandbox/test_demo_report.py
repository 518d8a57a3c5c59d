"""The demo's report, from counters and logs given here (pure; no namespace, no Envoy).

It may say "Every connection into and out of every pod went through its own Envoy" only when the
counters show it, and it reads them only once they are final: an access log that has not caught
up with its proxy's counters (Envoy writes it out once a second) is not read as the answer.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from injector.sandbox import demo, demo_manifest, stats
from injector.sandbox.plan import build_plan
from mesh.settings import MeshConfig

CLAIM = "Every connection into and out of every pod went through its own Envoy"
PLAN = build_plan(demo_manifest.documents(), config=MeshConfig(), namespace="demo")
SENT = 300
RETRIES = 74


def _entries(direction: str, authority: str, codes: dict[int, int], attempts: int = 1,
             ) -> list[dict[str, Any]]:
    return [{"direction": direction, "protocol": "HTTP/1.1", "authority": authority,
             "response_code": code, "upstream_attempts": attempts}
            for code, n in codes.items() for _ in range(n)]


def _counters(inbound: int, outbound: int = 0) -> dict[str, int]:
    return {"http.inbound_http.downstream_rq_completed": inbound,
            "http.outbound_http.downstream_rq_completed": outbound}


def _app(requests: dict[str, int], calls: dict[str, int] | None = None) -> str:
    """An app's log as demo_app writes it."""
    lines = ["listening on :8080 as uid 1000; proxy settings: none"]
    for peer, n in requests.items():
        lines += [f"{peer} GET / -> 200"] * n
    for host, n in (calls or {}).items():
        lines += [f"call {host}:80/x -> 200"] * n
    return "\n".join(lines) + "\n"


def demo_run(**changes: Any) -> tuple[demo.Snapshot, dict[str, str]]:
    """What a good run of the demo leaves: each proxy's counters and access log, each app's
    log. ``changes`` replace a pod's snapshot or app log (by pod key) to make them disagree."""
    retried = _entries("outbound", "reviews", {200: SENT - RETRIES}) + _entries(
        "outbound", "reviews", {200: RETRIES}, attempts=2)
    snapshot: demo.Snapshot = {
        "frontend-0.demo": (_counters(SENT, 2 * SENT), [
            *_entries("inbound", "frontend.demo", {200: SENT}),
            *_entries("outbound", "catalog", {200: SENT}), *retried]),
        "catalog-0.demo": (_counters(SENT), _entries("inbound", "catalog", {200: SENT})),
        "reviews-0.demo": (_counters(SENT + RETRIES),
                           _entries("inbound", "reviews", {200: SENT, 503: RETRIES})),
    }
    apps = {
        "frontend-0.demo": _app({"127.0.0.6": SENT}, {"catalog": SENT, "reviews": SENT}),
        "catalog-0.demo": _app({"127.0.0.6": SENT}),
        "reviews-0.demo": _app({"127.0.0.6": SENT + RETRIES}),
    }
    for key, value in changes.items():
        (snapshot if isinstance(value, tuple) else apps)[key.replace("_", "-") + ".demo"] = value
    return snapshot, apps


def seen(snapshot: demo.Snapshot, apps: dict[str, str]) -> list[demo.Seen]:
    return [demo.Seen(p.name, stats.summarize(*snapshot[p.key]), demo.app_log(apps[p.key]))
            for p in PLAN.pods]


def test_the_plan_is_the_demos_three_pods() -> None:
    assert [p.key for p in PLAN.pods] == ["frontend-0.demo", "catalog-0.demo", "reviews-0.demo"]


def test_counters_that_agree_with_the_apps_make_the_claim(capsys: pytest.CaptureFixture[str],
                                                          ) -> None:
    observed = seen(*demo_run())
    facts = demo.report(PLAN, observed)
    assert facts["retries"] == RETRIES
    assert demo.unproxied(observed) == []
    assert CLAIM in demo.verdict([], final=True)
    assert "catalog-0   in :  300 requests  300 x 200" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"catalog_0": (_counters(293), _entries("inbound", "catalog", {200: 293}))},
         "catalog-0: its app answered 300 requests, its proxy counted 293 in"),
        ({"reviews_0": _app({"127.0.0.6": SENT + RETRIES - 1, "198.18.0.10": 1})},
         "reviews-0: its app was called from 198.18.0.10, not only from its proxy"),
        ({"frontend_0": _app({"127.0.0.6": SENT}, {"catalog": SENT + 1, "reviews": SENT})},
         "frontend-0: its app called catalog 301 times, its proxy counted 300 out"),
        ({"frontend_0": _app({"127.0.0.6": SENT}, {"catalog": SENT, "reviews": SENT,
                                                   "example.com": 1})},
         "frontend-0: its app called example.com 1 times, its proxy counted 0 out"),
    ],
    ids=["a-request-in-the-proxy-missed", "an-app-called-directly", "a-call-out-missed",
         "a-call-to-an-unknown-host"],
)
def test_counters_that_disagree_withhold_the_claim_and_say_why(
    change: dict[str, Any], problem: str
) -> None:
    problems = demo.unproxied(seen(*demo_run(**change)))
    assert len(problems) == 1 and problems[0].startswith(problem), problems
    said = demo.verdict(problems, final=True)
    assert CLAIM not in said and problem in said


def test_an_access_log_behind_its_counters_is_not_final() -> None:
    """The one demo run in four that reported 293 where the app saw 300: Envoy had counted all
    300, its access log held 293 lines (written out once a second)."""
    good, _ = demo_run()
    lagging, _ = demo_run(catalog_0=(_counters(SENT), _entries("inbound", "catalog", {200: 293})))
    assert not demo.logged_all(*lagging["catalog-0.demo"])
    assert not demo.settled(lagging, lagging)
    assert not demo.settled(lagging, good)  # it moved between the two reads
    assert demo.settled(good, good)


def test_counters_still_moving_are_not_final() -> None:
    before, _ = demo_run(catalog_0=(_counters(299), _entries("inbound", "catalog", {200: 299})))
    after, _ = demo_run()
    assert demo.logged_all(*before["catalog-0.demo"])  # agreeing, but not yet done
    assert not demo.settled(before, after)


def test_the_report_waits_for_the_final_counters(monkeypatch: pytest.MonkeyPatch) -> None:
    """observe() reads until two reads agree and every log caught up, then reports that."""
    good, apps = demo_run()
    lagging, _ = demo_run(catalog_0=(_counters(SENT), _entries("inbound", "catalog", {200: 293})))
    reads = iter([lagging, lagging, good, good])
    monkeypatch.setattr(demo, "_snapshot", lambda *_: next(reads))
    monkeypatch.setattr(demo.time, "sleep", lambda _: None)
    state = _AppLogs(apps)
    observed, final = demo.observe(PLAN, state, {})  # type: ignore[arg-type]
    assert final and demo.unproxied(observed) == []
    assert sum(observed[1].proxy.requests_in.values()) == SENT


def test_counters_that_never_settle_are_reported_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    _, apps = demo_run()
    lagging, _ = demo_run(catalog_0=(_counters(SENT), _entries("inbound", "catalog", {200: 293})))
    monkeypatch.setattr(demo, "_snapshot", lambda *_: lagging)
    monkeypatch.setattr(demo, "SETTLE_SECONDS", 0.0)
    monkeypatch.setattr(demo.time, "sleep", lambda _: None)
    observed, final = demo.observe(PLAN, _AppLogs(apps), {})  # type: ignore[arg-type]
    problems = demo.unproxied(observed)
    assert not final and problems
    said = demo.verdict(problems, final=final)
    assert CLAIM not in said and "still moving" in said


class _AppLogs:
    """The part of a StateDir observe() reads the apps' logs through."""

    def __init__(self, apps: dict[str, str]) -> None:
        self.apps = apps

    def log_path(self, pod: str, container: str) -> Any:
        return _Text(self.apps[pod])


class _Text:
    def __init__(self, text: str) -> None:
        self.text = text

    def exists(self) -> bool:
        return True

    def read_text(self, errors: str = "strict") -> str:
        return self.text


def test_an_app_log_names_requests_and_calls_apart() -> None:
    log = demo.app_log(_app({"127.0.0.6": 2}, {"catalog": 1}) + json.dumps({"x": 1}) + "\n")
    assert log.peers == Counter({"127.0.0.6": 2}) and log.calls == Counter({"catalog": 1})
    assert log.proxy_settings == "none"
