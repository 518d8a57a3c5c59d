"""The control plane for the real-Envoy tests: the real program, fed a registry file.

Each test pod gets what a cluster gives an injected pod: a projected ServiceAccount token
(minted with a test key the control plane is told to trust), the mesh root, and a control plane
to dial. The control plane runs inside the pod's own namespace on 127.0.0.1 (the lab's pods have
no node to host it), so the tests inject with :data:`LAB_CONFIG`, which points the bootstrap
there; everything else about the proxy is the product's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from controlplane.identity.ca import MeshCA
from injector.sandbox import netns
from injector.sandbox.podspec import expand
from mesh.contract import (
    BOOTSTRAP_FILE,
    CA_DIR,
    CA_FILE,
    CONFIG_KEY,
    CONFIGMAP,
    CONTROLPLANE_DEBUG_PORT,
    INJECTOR_NAMESPACE,
    STATUS,
    TOKEN_DIR,
    TOKEN_FILE,
    XDS_PORT,
)
from mesh.envoy import bootstrap
from mesh.pki import jwt
from mesh.settings import MeshConfig

LAB_CONFIG = MeshConfig.model_validate({"controlPlane": {"address": f"127.0.0.1:{XDS_PORT}"}})
PROGRAM = str(Path(sys.executable).parent / "meshinject-controlplane")
Spawn = Callable[..., subprocess.Popen[bytes]]


class LabControl:
    """Keys, a registry file, and the control plane processes of one test."""

    def __init__(self, root: Path, *, config: MeshConfig = LAB_CONFIG) -> None:
        self.root = root
        self.config = config
        self.pki = root / "pki"
        self.pki.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        (self.pki / "token.pub").write_bytes(self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        ca = MeshCA.create(trust_domain="cluster.local")
        (self.pki / "ca.crt").write_bytes(ca.signer.cert_pem)
        (self.pki / "ca.key").write_bytes(ca.signer.key_pem)
        self.registry = root / "registry.json"
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.args: list[str] = []  # more flags for every control plane started from here
        self.write()

    # -- what the cluster would hold --------------------------------------------------------
    def put(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.objects[(obj["kind"], meta.get("namespace", ""), meta["name"])] = obj

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.objects.pop((kind, namespace, name), None)

    def write(self) -> None:
        config = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": CONFIGMAP, "namespace": INJECTOR_NAMESPACE},
                  "data": {CONFIG_KEY: yaml.safe_dump(self.config.model_dump(
                      mode="json", by_alias=True))}}
        listing = {"apiVersion": "v1", "kind": "List", "items": [config, *self.objects.values()]}
        tmp = self.registry.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(listing))
        os.replace(tmp, self.registry)

    def set_config(self, config: MeshConfig) -> None:
        self.config = config
        self.write()

    def register_pod(self, *, name: str, namespace: str, ip: str, annotations: dict[str, str],
                     service_account: str = "default", ports: Sequence[int] = (),
                     probes: Sequence[tuple[int, str]] = (),
                     labels: dict[str, str] | None = None) -> str:
        """An injected pod, as the registry shows it (``probes``: its app's HTTP readiness
        probes as (port, path)); returns its uid."""
        uid = str(uuid.uuid4())
        app: dict[str, Any] = {"name": "app", "ports": [{"containerPort": p} for p in ports]}
        if probes:
            port, path = probes[0]
            app["readinessProbe"] = {"httpGet": {"port": port, "path": path}}
        for port, path in probes[1:2]:
            app["livenessProbe"] = {"httpGet": {"port": port, "path": path}}
        self.put({"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": name, "namespace": namespace, "uid": uid,
                               "labels": labels or {},
                               "annotations": {STATUS: "{}", **annotations}},
                  "spec": {"serviceAccountName": service_account, "containers": [app]},
                  "status": {"podIP": ip}})
        self.write()
        return uid

    def service(self, *, name: str, namespace: str, cluster_ip: str,
                ports: Sequence[tuple[str, int, int]], endpoints: Sequence[str],
                annotations: dict[str, str] | None = None,
                not_ready: Sequence[str] = ()) -> None:
        """A Service (ports as (name, port, target port)) and its EndpointSlice."""
        self.put({"apiVersion": "v1", "kind": "Service",
                  "metadata": {"name": name, "namespace": namespace,
                               "annotations": annotations or {}},
                  "spec": {"clusterIP": cluster_ip, "ports": [
                      {"name": n, "port": p, "targetPort": t} for n, p, t in ports]}})
        self.endpoints(name=name, namespace=namespace, ports=ports, ready=endpoints,
                       not_ready=not_ready)

    def endpoints(self, *, name: str, namespace: str, ports: Sequence[tuple[str, int, int]],
                  ready: Sequence[str], not_ready: Sequence[str] = (),
                  terminating: Sequence[str] = ()) -> None:
        def entry(address: str, up: bool, serving: bool, ending: bool) -> dict[str, Any]:
            return {"addresses": [address],
                    "conditions": {"ready": up, "serving": serving, "terminating": ending}}

        self.put({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                  "metadata": {"name": f"{name}-1", "namespace": namespace,
                               "labels": {"kubernetes.io/service-name": name}},
                  "addressType": "IPv4",
                  "ports": [{"name": n, "port": t} for n, _, t in ports],
                  "endpoints": [entry(a, True, True, False) for a in ready]
                  + [entry(a, False, False, False) for a in not_ready]
                  + [entry(a, False, True, True) for a in terminating]})
        self.write()

    # -- what the kubelet would give the pod -------------------------------------------------
    def pod_files(self, *, name: str, namespace: str, uid: str, service_account: str = "default"
                  ) -> list[tuple[str, str]]:
        """The pod's token and root directories, as (host dir, mount path) pairs."""
        home = self.root / "pods" / f"{namespace}.{name}"
        token_dir, ca_dir = home / "token", home / "ca"
        for directory in (token_dir, ca_dir):
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o755)
        now = int(time.time())
        claims = {"sub": f"system:serviceaccount:{namespace}:{service_account}",
                  "aud": ["meshinject"], "iat": now, "exp": now + 3600,
                  "kubernetes.io": {"namespace": namespace, "pod": {"name": name, "uid": uid},
                                    "serviceaccount": {"name": service_account}}}
        (token_dir / TOKEN_FILE).write_text(jwt.mint(claims, self.key))
        (ca_dir / CA_FILE).write_bytes((self.pki / "ca.crt").read_bytes())
        (ca_dir / BOOTSTRAP_FILE).write_text(bootstrap.text(bootstrap.shared(self.config)))
        for path in (token_dir / TOKEN_FILE, ca_dir / CA_FILE, ca_dir / BOOTSTRAP_FILE):
            os.chmod(path, 0o644)
        for path in (self.root, self.root / "pods", home):
            os.chmod(path, 0o755)
        return [(str(token_dir), TOKEN_DIR), (str(ca_dir), CA_DIR)]

    def start_in(self, ns: netns.Netns, spawn: Spawn, *, log: Path,
                 address: str = "127.0.0.1", serving_ips: Sequence[str] = ("198.19.255.1",)
                 ) -> subprocess.Popen[bytes]:
        """A control plane on ``address`` inside ``ns``, ready before this returns; its
        certificate also names ``serving_ips`` (an address in front of several replicas)."""
        ips = [arg for ip in (address, *serving_ips) for arg in ("--serving-ip", ip)]
        proc = spawn(ns, [PROGRAM, "--registry-file", str(self.registry),
                          "--token-key", str(self.pki / "token.pub"),
                          "--ca-dir", str(self.pki), "--listen", f"{address}:{XDS_PORT}",
                          "--debug-listen", f"{address}:{CONTROLPLANE_DEBUG_PORT}",
                          *ips, "--debounce", "0.02", *self.args],
                     log_path=str(log))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the control plane exited: {log.read_text()[-2000:]}")
            done = ns.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                           f"http://{address}:{CONTROLPLANE_DEBUG_PORT}/readyz"], check=False)
            if done.stdout.strip() == "200":
                return proc
            time.sleep(0.05)
        raise RuntimeError(f"the control plane was not ready: {log.read_text()[-2000:]}")


def expand_args(args: Sequence[str], env: dict[str, str]) -> list[str]:
    """The proxy's args as the kubelet passes them: ``$(VAR)`` from its environment."""
    return [expand(a, env) for a in args]


def start_proxy(control: LabControl, ns: netns.Netns, spawn: Spawn, *, name: str,
                namespace: str, ip: str, annotations: dict[str, str], args: Sequence[str],
                log: Path, uid: int = 1337, gid: int = 1337,
                control_plane: bool = True) -> subprocess.Popen[bytes]:
    """An injected pod's Envoy as the kubelet starts it (its args ``$(VAR)``-expanded, its
    token and the mesh root mounted), with a control plane of its own in ``ns`` unless told
    otherwise (one already running there serves it too)."""
    pod_uid = control.register_pod(name=name, namespace=namespace, ip=ip,
                                   annotations=annotations)
    mounts = control.pod_files(name=name, namespace=namespace, uid=pod_uid)
    if control_plane:
        control.start_in(ns, spawn, log=log.with_name(f"controlplane-{name}.log"))
    env = {"POD_NAME": name, "POD_NAMESPACE": namespace, "POD_IP": ip,
           "SERVICE_ACCOUNT": "default"}
    from tests.support.envoy import need_envoy

    return spawn(ns, [need_envoy(), *expand_args(args, env)], uid=uid, gid=gid,
                 log_path=str(log), mounts=mounts)
