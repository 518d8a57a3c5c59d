"""Where a cluster is: ports, addresses and files, as ``STATE/state.json`` holds them.

This is also what a node agent is handed (see :mod:`localcluster.nodes`): the API server's URL
and CA, the admin kubeconfig, the cluster CA's files to issue its own node certificate, and the
address ranges it must stay in.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parents[1]  # scripts/cluster
OVERLAY = REPO / "manifests" / "overlays" / "local"

# Addresses: only 198.18.0.0/15 and loopback (../shared/DESIGN.md). Services get the upper
# half; pods a /24 per node from the lower half, the first of which is the sandbox node's.
SERVICE_CIDR = "198.19.0.0/16"
CLUSTER_CIDR = "198.18.0.0/16"
SANDBOX_POD_CIDR = "198.18.0.0/24"
DEFAULT_PORT_BASE = 26400
INJECTOR_OFFSET = 43  # base 26400 -> the injector on 26443, the port the local overlay names


@dataclass
class Ports:
    etcd: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    injector: int

    @classmethod
    def from_base(cls, base: int) -> Ports:
        return cls(base + 1, base + 2, base + 3, base + 4, base + 5, base + INJECTOR_OFFSET)


@dataclass
class State:
    """Everything a client of the cluster needs to know, in one file."""

    state_dir: str
    bin_dir: str
    ports: Ports
    service_cidr: str = SERVICE_CIDR
    cluster_cidr: str = CLUSTER_CIDR
    sandbox_pod_cidr: str = SANDBOX_POD_CIDR
    injector_url: str = ""
    install_dir: str = ""  # what `kubectl apply -k` was given (delete -k it to uninstall)
    nodes: list[str] = field(default_factory=list)  # node agents asked for
    cert_check_seconds: float = 60.0
    token_refresh_seconds: float = 0.0  # the sandbox node renews tokens this soon (tests)

    # -- derived paths ---------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        return Path(self.state_dir)

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def kubeconfig(self) -> Path:
        """The admin's (client certificate, group system:masters)."""
        return self.dir / "kubeconfig"

    @property
    def injector_dir(self) -> Path:
        return self.dir / "injector"

    @property
    def egress_socket(self) -> Path:
        """Where the API server's ``cluster`` egress goes: the sandbox node's CONNECT proxy."""
        return self.dir / "egress.sock"

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    def binary(self, name: str) -> str:
        return str(Path(self.bin_dir) / name)

    # -- the file --------------------------------------------------------------------------
    def to_json(self) -> str:
        data = asdict(self)
        data["api_url"] = self.api_url
        data["kubeconfig"] = str(self.kubeconfig)
        data["ca_file"] = str(self.pki / "ca.crt")
        data["ca_key_file"] = str(self.pki / "ca.key")
        data["kubelet_client_ca_file"] = str(self.pki / "ca.crt")
        data["injector_kubeconfig"] = str(self.injector_dir / "kubeconfig")
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, state_dir: Path) -> State | None:
        path = state_dir / "state.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        names = set(cls.__dataclass_fields__)
        kept = {k: v for k, v in data.items() if k in names}
        kept["ports"] = Ports(**kept["ports"])
        return cls(**kept)
