"""The control plane as the sandbox runs it: the real ``meshinject-controlplane`` program, on the
node, reading the sandbox's registry file.

It runs in the node namespace on the node's address (every pod's gateway, which the pods'
hosts files give the control plane's name), verifies the pods' tokens with the sandbox's public
key and serves a certificate from the sandbox's mesh root. The supervisor starts it before any
pod (a proxy would only wait for it) and restarts it if it exits, as a kubelet would a static
pod.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from injector.sandbox import apiserver, netns, nssocket
from injector.sandbox.model import NODE_ADDRESS
from injector.sandbox.restarting import RestartingProcess
from injector.sandbox.state import StateDir
from mesh.contract import CONTROLPLANE_DEBUG_PORT, XDS_PORT
from mesh.errors import SandboxError

PROGRAM = "meshinject-controlplane"


def program() -> str:
    found = Path(sys.executable).parent / PROGRAM
    return str(found) if found.exists() else PROGRAM


class ControlPlane(RestartingProcess):
    def __init__(self, state: StateDir, node: netns.Netns) -> None:
        super().__init__(node=node, log=state.root / "controlplane.log")
        self.state = state

    def argv(self) -> list[str]:
        keys = apiserver.Keys(self.state)
        return [
            program(), "--registry-file", str(apiserver.registry_path(self.state)),
            "--token-key", str(keys.token_pub_file), "--ca-dir", str(keys.dir),
            "--listen", f"{NODE_ADDRESS}:{XDS_PORT}",
            "--debug-listen", f"{NODE_ADDRESS}:{CONTROLPLANE_DEBUG_PORT}",
            "--serving-ip", NODE_ADDRESS,
        ]

    def ready(self) -> bool:
        try:
            code, _ = nssocket.http_get(self.node.name, CONTROLPLANE_DEBUG_PORT, "/readyz",
                                        timeout=1, host=NODE_ADDRESS)
        except OSError:
            return False
        return code == 200

    def wait_ready(self, *, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise SandboxError(f"the control plane exited ({self.proc.returncode}); its log "
                                   f"is {self.log}")
            if self.ready():
                return
            time.sleep(0.05)
        raise SandboxError(f"the control plane was not ready after {timeout:.0f}s; see {self.log}")

    def status(self) -> dict[str, object]:
        alive = self.proc is not None and self.proc.poll() is None
        return {"pid": self.proc.pid if alive and self.proc else None, "restarts": self.restarts}
