"""``meshinject demo`` end to end: it runs, reports what the proxies carried and what the mesh
did (balancing, mutual TLS with identities, a live config change), and cleans up."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from injector.sandbox import demo, demo_live, demo_mesh
from injector.sandbox.state import StateDir

pytestmark = [pytest.mark.netns, pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(150)]


def test_the_demo_runs_end_to_end_and_leaves_nothing_behind(
    state: StateDir, capsys: pytest.CaptureFixture[str]
) -> None:
    code = demo.run(requests=60, seconds=2, state_dir=str(state.root))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "4/4 ready" in out and "60 requests: " in out
    for pod in ("frontend-0", "catalog-0", "catalog-1", "reviews-0"):
        assert f"  {pod}" in out
    # the apps saw only their own proxy's inbound passthrough
    assert out.count("requests from 127.0.0.6 -> ") == 4
    assert out.count("no proxy settings") == 4
    # the frontend's retry annotations hide every 503 of the flaky backend
    assert "60/60 requests succeeded although reviews answered 503" in out
    # said only when the counters, read once final, agree with the apps' own logs
    assert "Every connection into and out of every pod went through its own Envoy" in out
    # one keep-alive connection, answered by both replicas, as their proxies counted
    assert "frontend-0's app called catalog 60 times over 1 connection" in out
    replies = re.search(r"the replies came from: catalog-0 (\d+), catalog-1 (\d+)", out)
    assert replies and int(replies[1]) > 0 and int(replies[2]) > 0, out
    assert f"=> {demo_mesh.BALANCED_CLAIM}" in out
    # TLS on the wire both ways, plaintext only from the node outside the mesh; identities
    assert re.search(r"frontend-0 -> catalog-0:8080 +\d+ segments, \d+ B, 0 with HTTP in clear; "
                     r"the first: 16 03 0\d \(TLS handshake\)", out), out
    assert re.search(r"node -> frontend-0:8080 +60 segments, \d+ B, 60 with HTTP in clear", out)
    assert ("catalog-1  By=spiffe://cluster.local/ns/demo/sa/catalog  "
            "URI=spiffe://cluster.local/ns/demo/sa/frontend") in out
    assert f"=> {demo_mesh.TLS_CLAIM}" in out
    # the mesh ConfigMap edited live: new versions ACKed and run, the same Envoy processes
    assert "the mesh ConfigMap's traffic.timeout 0s -> 3s" in out
    assert out.count("timeout 0s -> 3s, pid ") == 4
    assert re.search(r"frontend-0  .*RouteConfiguration [0-9a-f]{8} -> [0-9a-f]{8}", out)
    assert demo_mesh.LIVE_CLAIM in out
    # a control plane without AccessPolicies makes the demo say nothing about policies; one
    # with them denies the caller the policy does not allow
    assert ("AccessPolicy" in out) == (demo_mesh.POLICY_CLAIM in out)
    if "AccessPolicy" in out:
        assert "reviews-0 -> catalog.demo: 403" in out and "frontend-0 -> catalog.demo: 200" in out
    assert "not shown" not in out
    assert "removed everything" in out
    assert not Path(state.root).exists()


def test_a_demo_that_fails_midway_still_removes_every_namespace_and_process(
    state: StateDir, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Broken on purpose after the pods run and the capture started: everything goes."""
    seen: dict[str, object] = {}

    def broken(*args: object, **kwargs: object) -> list[str]:
        status = StateDir(state.root).status()
        seen["owner"] = status["owner"]
        seen["pids"] = [c["pid"] for p in status["pods"].values()
                        for c in p["containers"].values() if c.get("pid")]
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(demo_live, "mesh_report", broken)
    with pytest.raises(RuntimeError, match="broken on purpose"):
        demo.run(requests=10, seconds=1, state_dir=str(state.root))
    assert "removed everything" in capsys.readouterr().out
    assert not Path(state.root).exists()
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert f"mi-{seen['owner']}-" not in listing.stdout
    pids = seen["pids"]
    assert isinstance(pids, list) and len(pids) >= 8  # each pod's Envoy and app
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
