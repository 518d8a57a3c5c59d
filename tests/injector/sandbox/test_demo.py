"""``meshinject demo`` end to end: it runs, reports what the proxies carried, and cleans up."""

from __future__ import annotations

from pathlib import Path

import pytest

from injector.sandbox import demo
from injector.sandbox.state import StateDir

pytestmark = [pytest.mark.netns, pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(120)]


def test_the_demo_runs_end_to_end_and_leaves_nothing_behind(
    state: StateDir, capsys: pytest.CaptureFixture[str]
) -> None:
    code = demo.run(requests=60, seconds=2, state_dir=str(state.root))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3/3 ready" in out and "60 requests: " in out
    for pod in ("frontend-0", "catalog-0", "reviews-0"):
        assert f"  {pod}" in out
    # the apps saw only their own proxy's inbound passthrough
    assert out.count("requests from 127.0.0.6 -> ") == 3
    assert out.count("no proxy settings") == 3
    # the frontend's retry annotations hide every 503 of the flaky backend
    assert "60/60 requests succeeded although reviews answered 503" in out
    # said only when the counters, read once final, agree with the apps' own logs
    assert "Every connection into and out of every pod went through its own Envoy" in out
    assert "removed everything" in out
    assert not Path(state.root).exists()
