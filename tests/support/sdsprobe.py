"""Ask the control plane for a proxy's certificate as Envoy does, from inside the sandbox node.

``python -m tests.support.sdsprobe --address IP:PORT --ca FILE --token-file FILE --namespace NS
--pod POD`` (run in the node's network namespace with ``ip netns exec``: the control plane's
pods are reachable only there) opens one ADS stream with the token as its bearer credential and
the node metadata a proxy of that pod would send, subscribes to its SDS secrets (the SVID and
the trust bundle) and prints, as one JSON object, how it went: the gRPC status and details the
stream ended with, and the URI SANs of any certificate it was sent. A probe that got its
certificate closes the stream itself, after ``--wait`` seconds without one it gives up; either
way its status is null (the server had not ended the stream).

:func:`probe` runs it from a test against the real cluster.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from mesh.contract import SVID_SECRET, TRUST_BUNDLE_SECRET
from mesh.pki import certs
from tests.support.paths import REPO

SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def _spiffe_ids(response: discovery_pb2.DiscoveryResponse) -> tuple[list[str], bool]:
    """(the URI SANs of the certificate in a Secret response, whether it had a bundle)."""
    ids: list[str] = []
    bundle = False
    for item in response.resources:
        secret = secret_pb2.Secret()
        item.Unpack(secret)
        if secret.HasField("tls_certificate"):
            ids += certs.uri_sans(secret.tls_certificate.certificate_chain.inline_string.encode())
        if secret.HasField("validation_context"):
            bundle = True
    return ids, bundle


def _run(args: argparse.Namespace) -> dict[str, Any]:
    """The stream, with gRPC's blocking API: with the asyncio client, a request written as the
    server refuses the stream (a bad token is refused before any request is read) can end the
    call INTERNAL "Internal error from Core" on the client instead of the server's status
    (grpc/grpc#36066; 34 of 300 streams here), the blocking client reports the server's."""
    credentials = grpc.ssl_channel_credentials(root_certificates=Path(args.ca).read_bytes())
    options = [("grpc.ssl_target_name_override", args.server_name)]
    result: dict[str, Any] = {"status": None, "details": "", "spiffe_ids": [], "bundle": False}
    metadata = struct_pb2.Struct()
    metadata.update({"namespace": args.namespace, "pod": args.pod})
    first = discovery_pb2.DiscoveryRequest(
        type_url=SECRET, resource_names=[SVID_SECRET, TRUST_BUNDLE_SECRET],
        node=base_pb2.Node(id=f"sidecar~{args.pod}.{args.namespace}", metadata=metadata))
    done, gave_up = threading.Event(), threading.Event()

    def requests() -> Iterator[discovery_pb2.DiscoveryRequest]:
        yield first
        done.wait()  # keep the stream open until the answer is read

    token = Path(args.token_file).read_text().strip()
    with grpc.secure_channel(args.address, credentials, options=options) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        call = stub.StreamAggregatedResources(
            requests(), metadata=(("authorization", f"Bearer {token}"),))

        def give_up() -> None:
            gave_up.set()
            call.cancel()

        timer = threading.Timer(args.wait, give_up)
        timer.start()
        try:
            for response in call:
                ids, bundle = _spiffe_ids(response)
                result["bundle"] = result["bundle"] or bundle
                if ids:
                    result["spiffe_ids"] = ids
                    break
        except grpc.RpcError:
            pass  # the call's own status, below, says how the server ended it
        finally:
            timer.cancel()
        if not result["spiffe_ids"] and not gave_up.is_set():  # the server ended the stream
            result["status"] = call.code().name
            result["details"] = call.details() or ""
        call.cancel()
        done.set()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sdsprobe")
    p.add_argument("--address", required=True)
    p.add_argument("--server-name", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--pod", required=True)
    p.add_argument("--wait", type=float, default=10.0)
    args = p.parse_args(argv)
    print(json.dumps(_run(args)))
    return 0


def probe(*, node_ns: str, address: str, server_name: str, ca: Path, token: Path,
          namespace: str, pod: str, wait: float = 10.0) -> dict[str, Any]:
    """Run the probe in the node's network namespace; its JSON answer."""
    proc = subprocess.run(
        ["ip", "netns", "exec", node_ns, sys.executable, "-m", "tests.support.sdsprobe",
         "--address", address, "--server-name", server_name, "--ca", str(ca),
         "--token-file", str(token), "--namespace", namespace, "--pod", pod,
         "--wait", str(wait)],
        capture_output=True, text=True, timeout=wait + 30, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr
    answer: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return answer


if __name__ == "__main__":
    sys.exit(main())
