"""``meshinject-controlplane``: xDS for every proxy, from the cluster (or the sandbox).

In a cluster (the default): the registry watches the API server, proxies are authenticated by
TokenReview, the mesh root lives in the Secret ``meshinject-ca`` (made by the first replica)
and is published to every namespace; each replica serves a certificate from it. In the
sandbox: the registry is a file the sandbox's supervisor writes, tokens are checked against the
sandbox's public key, and the root is a directory.

Every replica is the same and holds no state of its own: a proxy may connect to any of them,
and a restarted one rebuilds everything from the registry.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from controlplane import heap
from controlplane.debug import DebugServer
from controlplane.grpc import server as xds
from controlplane.grpc.ads import AdsServer
from controlplane.identity import castore
from controlplane.identity.authn import Authenticator, KeyAuthenticator
from controlplane.identity.ca import MeshCA
from controlplane.identity.tokenreview import TokenReviewAuthenticator
from controlplane.metrics import ControlPlaneMetrics
from controlplane.registry.file import FileRegistry
from controlplane.registry.kube import KubeRegistry
from controlplane.runtime import Runtime
from controlplane.secrets import SecretIssuer, union
from mesh.contract import CONTROLPLANE_DEBUG_PORT, INJECTOR_NAMESPACE, TRUST_DOMAIN, XDS_PORT
from mesh.envoy import bootstrap
from mesh.errors import MeshError, SettingsError, UsageError
from mesh.kube.client import Kube
from mesh.settings import MeshConfig

log = logging.getLogger("meshinject.controlplane")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meshinject-controlplane",
        description="The meshinject control plane: xDS (ADS over TLS) for every injected proxy, "
                    "from the cluster's Services, EndpointSlices, Pods and the mesh config.")
    p.add_argument("--registry-file", metavar="FILE",
                   help="read the mesh from this List of objects (the sandbox) instead of a "
                        "cluster")
    p.add_argument("--kubeconfig", metavar="FILE", help="default: in-cluster, $KUBECONFIG")
    p.add_argument("--namespace", default=INJECTOR_NAMESPACE,
                   help=f"where the mesh config and the root Secret live ({INJECTOR_NAMESPACE})")
    p.add_argument("--listen", default=f"0.0.0.0:{XDS_PORT}", metavar="HOST:PORT",
                   help=f"the xDS address (default 0.0.0.0:{XDS_PORT})")
    p.add_argument("--debug-listen", default=f"0.0.0.0:{CONTROLPLANE_DEBUG_PORT}",
                   metavar="HOST:PORT", help="probes, metrics and /debug (default "
                                             f"0.0.0.0:{CONTROLPLANE_DEBUG_PORT})")
    p.add_argument("--ca-dir", metavar="DIR",
                   help="the mesh root as ca.crt and ca.key in DIR (default: the Secret "
                        f"{castore.ROOT_SECRET} in --namespace)")
    p.add_argument("--token-key", metavar="PEM",
                   help="verify proxy tokens with this public key (the sandbox's) instead of "
                        "TokenReview")
    p.add_argument("--serving-name", action="append", default=[], metavar="NAME",
                   help="an extra DNS name for the serving certificate (repeat)")
    p.add_argument("--serving-ip", action="append", default=[], metavar="IP",
                   help="an IP address for the serving certificate (repeat)")
    p.add_argument("--trust-domain", default=TRUST_DOMAIN, help=f"default {TRUST_DOMAIN}")
    p.add_argument("--svid-hours", type=float, default=24.0, metavar="HOURS",
                   help="how long a proxy's certificate is valid; renewed at half (default 24)")
    p.add_argument("--ca-poll", type=float, default=2.0, metavar="SECONDS",
                   help="how often --ca-dir is checked for a new CA (default 2)")
    p.add_argument("--rotation-settle", type=float, default=2.0, metavar="SECONDS",
                   help="a root rotation's least wait between its steps, for the proxies of "
                        "other replicas (default 2)")
    p.add_argument("--debounce", type=float, default=0.05, metavar="SECONDS",
                   help="wait this long for more changes before pushing (default 0.05)")
    p.add_argument("--registry-poll", type=float, default=0.1, metavar="SECONDS",
                   help="how often --registry-file is checked for changes (default 0.1)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"], help="default info")
    return p


def _split(address: str, flag: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"{flag} {address!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def _mesh_ca(args: argparse.Namespace, kube: Kube | None) -> MeshCA:
    if args.ca_dir:
        return ca_from_dir(Path(args.ca_dir))
    assert kube is not None
    return castore.load_or_create(kube, namespace=args.namespace, trust_domain=args.trust_domain)


def ca_from_dir(root: Path) -> MeshCA:
    """The CA in a directory (the sandbox's, the tests'): the files a Secret would hold."""
    try:
        files = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
    except OSError as err:
        raise UsageError(f"--ca-dir {root}: {err.strerror}") from err
    try:
        return MeshCA.from_files(files, where=f"--ca-dir {root}")
    except SettingsError as err:
        raise UsageError(str(err)) from err


def _authenticator(args: argparse.Namespace, kube: Kube | None,
                   runtime: Runtime) -> Authenticator:
    if args.token_key:
        try:
            key = serialization.load_pem_public_key(Path(args.token_key).read_bytes())
        except (OSError, ValueError) as err:
            raise UsageError(f"--token-key {args.token_key}: {err}") from err
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise UsageError(f"--token-key {args.token_key}: not an EC public key")
        return KeyAuthenticator(key)
    assert kube is not None

    def known_pod(namespace: str, name: str) -> dict[str, Any] | None:
        workload = runtime.state.workloads.get((namespace, name))
        if workload is not None:  # the registry's copy: no API call per connection
            return {"metadata": {"uid": workload.uid},
                    "spec": {"serviceAccountName": workload.service_account}}
        return authenticator.fetch_pod(namespace, name)

    authenticator = TokenReviewAuthenticator(kube, pod_lookup=known_pod)
    return authenticator


async def serve(args: argparse.Namespace) -> int:
    host, port = _split(args.listen, "--listen")
    debug_host, debug_port = _split(args.debug_listen, "--debug-listen")
    kube = None if args.registry_file else Kube.connect(kubeconfig=args.kubeconfig)
    runtime = Runtime(debounce=args.debounce, trust_domain=args.trust_domain)
    ca = _mesh_ca(args, kube)
    issuer = SecretIssuer(ca, runtime, lifetime=dt.timedelta(hours=args.svid_hours),
                          settle=args.rotation_settle)
    authenticator = _authenticator(args, kube, runtime)
    cert_dir = Path(tempfile.mkdtemp(prefix="meshinject-cp-"))
    stop_threads = threading.Event()
    try:
        pair = ca.serving(namespace=args.namespace, extra_names=tuple(args.serving_name),
                          ips=tuple(args.serving_ip))
        (cert_dir / "tls.key").touch(mode=0o600)
        (cert_dir / "tls.key").write_bytes(pair.key_pem)
        (cert_dir / "tls.crt").write_bytes(pair.cert_pem)
        metrics = ControlPlaneMetrics()
        ads = AdsServer(runtime=runtime, authenticator=authenticator, metrics=metrics)
        grpc_server, _ = await xds.start(ads, address=f"{host}:{port}",
                                      certs=xds.CertFiles(cert_dir / "tls.crt",
                                                          cert_dir / "tls.key"))
        debug = await DebugServer(runtime=runtime, ads=ads, metrics=metrics).start(
            host=debug_host, port=debug_port)
        registry: FileRegistry | KubeRegistry
        rotations = CaRotations(issuer, kube, runtime)
        tasks = [asyncio.create_task(runtime.run()), asyncio.create_task(issuer.keep_fresh()),
                 asyncio.create_task(heap.give_back(lambda: ads.written))]
        if args.registry_file:
            registry = FileRegistry(args.registry_file, interval=args.registry_poll,
                                    metrics=metrics)
        else:
            assert kube is not None
            registry = KubeRegistry(kube, config_namespace=args.namespace, metrics=metrics)
            tasks.append(asyncio.create_task(rotations.keep_published(stop_threads)))
            threading.Thread(target=castore.watch_secret, name="watch-ca", daemon=True,
                             kwargs={"kube": kube, "namespace": args.namespace,
                                     "on_change": rotations.threadsafe(), "stop": stop_threads}
                             ).start()
        if args.ca_dir:
            tasks.append(asyncio.create_task(rotations.poll_dir(Path(args.ca_dir),
                                                                interval=args.ca_poll)))
        tasks.append(asyncio.create_task(registry.run(runtime)))
        print(f"meshinject-controlplane: xDS on {host}:{port}, debug on {debug_host}:"
              f"{debug_port}", flush=True)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await stopping.wait()
        log.info("stopping: closing %d streams", len(ads.streams))
        ads.close_all()
        for _ in range(50):  # the streams end as soon as their generators see it
            if not ads.streams:
                break
            await asyncio.sleep(0.02)
        for task in tasks:
            task.cancel()
        debug.close()
        await grpc_server.stop(grace=1)
        return 0
    finally:
        stop_threads.set()
        shutil.rmtree(cert_dir, ignore_errors=True)


class CaRotations:
    """A changed CA (its directory's files, or its Secret) rotates every proxy to it, one
    rotation at a time. The xDS server keeps the certificate it started with: proxies verify it
    against the root file they loaded when they started (see docs/security.md).

    The root ConfigMap it publishes also carries the bootstrap every proxy shares, made from
    the mesh config: published once the registry delivered that config (a proxy reads the file
    once, at its start, so a default one published before would stay with it) and again
    whenever it changes."""

    def __init__(self, issuer: SecretIssuer, kube: Kube | None, runtime: Runtime) -> None:
        self.issuer = issuer
        self.kube = kube
        self.runtime = runtime
        self.lock = asyncio.Lock()
        self._rendered: tuple[MeshConfig | None, str] = (None, "")

    def bootstrap(self) -> str:
        """The shared bootstrap of the current mesh config, rendered once per config."""
        config = self.runtime.state.config
        if self._rendered[0] is not config:
            self._rendered = (config, bootstrap.text(bootstrap.shared(config)))
        return self._rendered[1]

    def contents(self, bundle: bytes | None = None) -> dict[str, str]:
        return castore.contents(self.issuer.bundle if bundle is None else bundle,
                                self.bootstrap())

    async def keep_published(self, stop: threading.Event, *, interval: float = 2.0) -> None:
        """Publish to every namespace (and each new one) once the mesh config is known, then
        again whenever the shared bootstrap changes."""
        assert self.kube is not None
        await self.runtime.synced.wait()
        self.runtime.flush()  # what the registry delivered, applied now rather than debounced
        published = self.bootstrap()
        threading.Thread(target=castore.keep_published, name="publish-root", daemon=True,
                         args=(self.kube, self.contents, stop)).start()
        while True:
            await asyncio.sleep(interval)
            if self.bootstrap() == published:
                continue
            async with self.lock:
                published = self.bootstrap()
                log.info("the shared bootstrap changed: publishing it to every namespace")
                await asyncio.to_thread(castore.publish_all, self.kube, self.contents())

    async def apply(self, new: MeshCA) -> None:
        async with self.lock:
            if new == self.issuer.ca:
                return
            if self.kube is not None:  # the mounted roots: both while the proxies move
                await asyncio.to_thread(castore.publish_all, self.kube,
                                        self.contents(union(self.issuer.bundle, new.bundle())))
            await self.issuer.rotate(new)
            if self.kube is not None:
                await asyncio.to_thread(castore.publish_all, self.kube,
                                        self.contents(new.bundle()))

    def threadsafe(self) -> Callable[[MeshCA], None]:
        """``apply`` for a watch thread to call."""
        loop = asyncio.get_running_loop()

        def from_thread(new: MeshCA) -> None:
            loop.call_soon_threadsafe(lambda: loop.create_task(self.apply(new)))
        return from_thread

    async def poll_dir(self, root: Path, *, interval: float) -> None:
        last = self.issuer.ca
        while True:
            await asyncio.sleep(interval)
            try:
                found = ca_from_dir(root)
            except UsageError as err:
                log.error("the CA in %s cannot be used; keeping the current one: %s", root, err)
                continue
            if found != last:
                last = found
                await self.apply(found)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not heap.map_big_blocks_apart():
        log.info("not glibc: big blocks share the heap")
    try:
        return asyncio.run(serve(args))
    except (UsageError, MeshError, OSError) as err:
        print(f"meshinject-controlplane: {err}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1


if __name__ == "__main__":
    raise SystemExit(main())
