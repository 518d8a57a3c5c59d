"""Why ``sandbox up`` says a pod is not ready, for the states that need no probe to tell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from injector.sandbox.control import not_ready
from injector.sandbox.model import ContainerPlan, PodPlan, Probe, SandboxPlan
from injector.sandbox.state import StateDir


def _pod() -> PodPlan:
    def c(name: str, role: str, **kw: Any) -> ContainerPlan:
        return ContainerPlan(name=name, role=role, image="x", argv=["true"], env={}, **kw)

    return PodPlan(name="web-0", namespace="shop", labels={}, address="198.18.0.10",
                   injected=True, reason="test", containers=[
                       c("mesh-init", "init"),
                       c("mesh-proxy", "sidecar",
                         startup_probe=Probe(kind="http", port=15021, path="/healthz/ready")),
                       c("web", "app", readiness_probe=Probe(kind="http", port=8080, path="/hz")),
                   ])


def _state(tmp_path: Path, pod: PodPlan) -> StateDir:
    state = StateDir(tmp_path / "state")
    state.create(SandboxPlan(pods=[pod], services=[]))
    log = state.log_path(pod.key, "mesh-init")
    log.parent.mkdir(parents=True)
    log.write_text("mesh-init: failed: iptables-restore: line 7 failed\n")
    return state


def _info(**states: dict[str, Any]) -> dict[str, Any]:
    return {"phase": "Pending", "netns": "", "containers": states}


def test_an_init_container_that_failed_is_named_with_its_exit_code_and_log(
    tmp_path: Path,
) -> None:
    pod = _pod()
    info = _info(**{"mesh-init": {"state": "terminated", "exit_code": 1, "restarts": 3}})
    text = not_ready(_state(tmp_path, pod), pod, info)
    assert text.startswith("pod web-0.shop: container mesh-init (init): init container exited "
                           "with code 1 (restarts: 3); its log ends:\n")
    assert "    | mesh-init: failed: iptables-restore: line 7 failed" in text


def test_containers_after_a_running_init_container_wait_for_it(tmp_path: Path) -> None:
    pod = _pod()
    state = _state(tmp_path, pod)
    running = not_ready(state, pod, _info(**{"mesh-init": {"state": "running"}}))
    assert "container mesh-init (init): init container still running" in running
    done = _info(**{"mesh-init": {"state": "completed"},
                    "mesh-proxy": {"state": "terminated", "exit_code": 2, "restarts": 0}})
    assert "container mesh-proxy (sidecar): exited with code 2 (restarts: 0); its log ends:\n"\
        "    (no log yet)" in not_ready(state, pod, done)
    waiting = _info(**{"mesh-init": {"state": "completed"},
                       "mesh-proxy": {"state": "running", "started": True}})
    assert "container web (app): not started yet" in not_ready(state, pod, waiting)
