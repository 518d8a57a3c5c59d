"""The ADS server for real (grpc over TLS, in this process) against a client that speaks as
Envoy does: who may connect, what is sent when, and what ACK and NACK do."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric import ec

from controlplane.grpc import server as xds
from controlplane.grpc.ads import AdsServer
from controlplane.identity.authn import KeyAuthenticator
from controlplane.identity.ca import MeshCA
from controlplane.metrics import ControlPlaneMetrics
from controlplane.model.state import Change
from controlplane.model.values import Endpoint, Service, ServicePort, Workload
from controlplane.runtime import Runtime
from mesh.pki import jwt
from tests.support.adsclient import CLUSTER, ENDPOINT, LISTENER, AdsClient, endpoints_of

WEB = Service("shop", "web", "198.19.0.10", (ServicePort(80, "http"),))
WEB_CLUSTER = "outbound|80||web.shop.svc.cluster.local"


def eps(*addresses: str) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(a, (("http", 8080),)) for a in addresses)


class World:
    def __init__(self, tmp: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        ca = MeshCA.create(trust_domain="cluster.local")
        pair = ca.serving(namespace="meshinject-system", ips=("127.0.0.1",))
        (tmp / "tls.crt").write_bytes(pair.cert_pem)
        (tmp / "tls.key").write_bytes(pair.key_pem)
        self.root = ca.signer.cert_pem
        self.tmp = tmp
        self.runtime = Runtime(debounce=0.01, max_delay=0.05)
        self.metrics = ControlPlaneMetrics()
        self.ads = AdsServer(runtime=self.runtime, metrics=self.metrics,
                             authenticator=KeyAuthenticator(self.key.public_key()))
        self.channels: list[grpc.aio.Channel] = []

    def token(self, pod: str, *, namespace: str = "shop", account: str = "default") -> str:
        return jwt.mint({"sub": f"system:serviceaccount:{namespace}:{account}",
                         "aud": ["meshinject"], "exp": time.time() + 600,
                         "kubernetes.io": {"pod": {"name": pod, "uid": "u"}}}, self.key)

    def client(self, pod: str, *, token: str | None = None, **kwargs: Any) -> AdsClient:
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{self.port}", grpc.ssl_channel_credentials(self.root),
            options=[("grpc.ssl_target_name_override", "meshinject-controlplane."
                                                       "meshinject-system.svc")])
        self.channels.append(channel)
        return AdsClient(channel, namespace="shop", pod=pod,
                         token=self.token(pod) if token is None else token, **kwargs)

    async def start(self) -> None:
        self.runtime.submit_all([Change("service", WEB.key, WEB),
                                 Change("endpoints", WEB.key, eps("198.18.0.1")),
                                 Change("workload", ("shop", "a"), Workload("shop", "a")),
                                 Change("workload", ("shop", "b"), Workload("shop", "b"))])
        self.runtime.flush()
        self.task = asyncio.create_task(self.runtime.run())
        self.server, self.port = await xds.start(
            self.ads, address="127.0.0.1:0",
            certs=xds.CertFiles(self.tmp / "tls.crt", self.tmp / "tls.key"))

    async def stop(self) -> None:
        for channel in self.channels:
            await channel.close()
        await self.server.stop(0)
        self.task.cancel()


async def until(check: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def run(tmp_path: Path, scenario: Callable[[World], Awaitable[None]]) -> None:
    async def main() -> None:
        world = World(tmp_path)
        await world.start()
        try:
            await scenario(world)
        finally:
            await world.stop()
    asyncio.run(main())



def test_a_stream_without_a_valid_token_is_closed_unauthenticated(tmp_path: Path) -> None:
    async def scenario(world: World) -> None:
        for token in ("", "not-a-jwt", jwt.mint({"sub": "x"}, ec.generate_private_key(
                ec.SECP256R1()))):
            client = world.client("a", token=token)
            await asyncio.wait_for(client.run(silent=True), 5)
            assert client.status == grpc.StatusCode.UNAUTHENTICATED
            assert client.got.responses == []
        assert world.metrics.refused.labels("unauthenticated")._value.get() == 3
    run(tmp_path, scenario)


def test_a_token_for_one_pod_cannot_ask_for_anothers_config(tmp_path: Path) -> None:
    async def scenario(world: World) -> None:
        client = world.client("b", token=world.token("a"))
        await asyncio.wait_for(client.run(), 5)
        assert client.status == grpc.StatusCode.PERMISSION_DENIED
        assert "shop/a" in client.details
    run(tmp_path, scenario)


def test_clusters_then_endpoints_then_acks_and_only_a_changed_assignment_is_sent(
    tmp_path: Path
) -> None:
    async def scenario(world: World) -> None:
        client = world.client("a")
        task = asyncio.create_task(client.run())
        await until(lambda: ENDPOINT in client.got.versions and LISTENER in client.got.versions)
        kinds = [r.type_url for r in client.got.responses]
        assert kinds.index(CLUSTER) < kinds.index(ENDPOINT)
        stream = next(iter(world.ads.streams))
        await until(lambda: all(t["current"] for t in stream.status()["types"].values()))
        sent = len(client.got.responses)
        world.runtime.submit(Change("endpoints", WEB.key, eps("198.18.0.1", "198.18.0.2")))
        await until(lambda: len(client.got.responses) > sent)
        await asyncio.sleep(0.1)
        pushed = client.got.responses[sent:]
        assert [r.type_url for r in pushed] == [ENDPOINT]  # nothing else was touched
        assert endpoints_of(pushed[0]) == {WEB_CLUSTER: ["198.18.0.1", "198.18.0.2"]}
        client.close()
        await task
    run(tmp_path, scenario)


def test_the_time_of_each_ack_is_recorded_and_shown_per_type(tmp_path: Path) -> None:
    """``ackedAt`` is what the real-Envoy benchmark times a push by: it must move forward with
    the ACK of the assignment a change caused, and never precede that change."""
    async def scenario(world: World) -> None:
        client = world.client("a")
        task = asyncio.create_task(client.run())
        await until(lambda: bool(world.ads.streams))
        stream = next(iter(world.ads.streams))
        await until(lambda: len(stream.types) >= 4 and all(
            t["current"] for t in stream.status()["types"].values()))
        before = stream.status()["types"]["ClusterLoadAssignment"]
        assert before["ackedAt"] is not None and before["ackedAt"] <= time.time()
        await asyncio.sleep(0.05)
        changed = time.time()
        world.runtime.submit(Change("endpoints", WEB.key, eps("198.18.0.1", "198.18.0.3")))
        await until(lambda: stream.status()["types"]["ClusterLoadAssignment"]["acked"]
                    != before["acked"])
        after = stream.status()["types"]["ClusterLoadAssignment"]
        assert after["ackedAt"] > before["ackedAt"]
        assert after["ackedAt"] >= changed
        assert stream.status()["types"]["Listener"]["ackedAt"] < changed  # not pushed again
        client.close()
        await task
    run(tmp_path, scenario)


def test_a_nack_is_recorded_counted_and_the_same_version_not_sent_again(tmp_path: Path) -> None:
    async def scenario(world: World) -> None:
        client = world.client("a", nack=frozenset({LISTENER}))
        task = asyncio.create_task(client.run())
        stream = None
        await until(lambda: bool(world.ads.streams))
        stream = next(iter(world.ads.streams))
        await until(lambda: stream is not None and stream.types.get(LISTENER) is not None
                    and stream.types[LISTENER].nack is not None)
        status = stream.status()["types"]["Listener"]
        assert status["nack"]["message"] == "refused by the test" and not status["current"]
        assert world.metrics.nacks.labels("Listener")._value.get() == 1
        listeners = [r for r in client.got.responses if r.type_url == LISTENER]
        await asyncio.sleep(0.3)
        assert [r for r in client.got.responses if r.type_url == LISTENER] == listeners
        client.close()
        await task
    run(tmp_path, scenario)


def test_an_idle_stream_keeps_no_copy_of_what_it_was_sent(tmp_path: Path) -> None:
    """gRPC copies every response; a thousand idle proxies must not each keep their last one
    alive (half a megabyte each at a thousand Services). Counted as the big blocks Python
    holds once one proxy synced and again once four more did: the sets and their framed bytes
    are shared, so the count must not grow with the proxies."""
    services = [Service("shop", f"s{i}", f"198.19.1.{i + 1}", (ServicePort(80, "http"),))
                for i in range(200)]

    def big_blocks() -> int:
        gc.collect()
        return sum(1 for trace in tracemalloc.take_snapshot().traces if trace.size >= 32_768)

    async def scenario(world: World) -> None:
        world.runtime.submit_all([Change("service", s.key, s) for s in services])
        clients = [world.client("a")] + [world.client(f"p{i}") for i in range(4)]
        world.runtime.submit_all([Change("workload", ("shop", f"p{i}"), Workload("shop", f"p{i}"))
                                  for i in range(4)])
        tasks = []
        for count, client in enumerate(clients, 1):
            tasks.append(asyncio.create_task(client.run()))
            await until(lambda count=count, client=client: len(world.ads.streams) == count
                        and len(client.got.versions) >= 4 and all(
                            all(t["current"] for t in s.status()["types"].values())
                            for s in world.ads.streams), timeout=30)  # tracemalloc is slow
            if count == 1:
                one = big_blocks()
        assert big_blocks() <= one
        for client in clients:
            client.close()
        await asyncio.gather(*tasks)

    tracemalloc.start()
    try:
        run(tmp_path, scenario)
    finally:
        tracemalloc.stop()
