"""The xDS endpoint: a gRPC server over TLS whose certificate follows its files.

Proxies verify the server against the mesh's root and authenticate themselves with their
token (see ``ads.py``), so the port is never open to just anyone who can reach it. The serving
certificate is read again whenever its files change (checked on each new connection), so a
renewal needs no restart and drops no stream.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import grpc

from controlplane.grpc.ads import AdsServer

log = logging.getLogger("meshinject.xds")

# Streams are long-lived and mostly idle: let many share a connection, keep them alive through
# NATs, and notice dead peers within a minute.
_OPTIONS = [
    ("grpc.max_concurrent_streams", 100_000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


class CertFiles:
    """A key and certificate chain on disk, re-read when they change."""

    def __init__(self, cert_file: str | Path, key_file: str | Path) -> None:
        self.cert_file, self.key_file = Path(cert_file), Path(key_file)
        self._digest = b""
        self.reloads = 0

    def _read(self) -> tuple[bytes, bytes]:
        return self.key_file.read_bytes(), self.cert_file.read_bytes()

    def initial(self) -> Any:
        key, cert = self._read()
        self._digest = hashlib.sha256(key + cert).digest()
        return grpc.ssl_server_certificate_configuration([(key, cert)])

    def fetch(self) -> Any:
        """gRPC asks before each handshake: a new configuration, or None to keep the old."""
        try:
            key, cert = self._read()
        except OSError as err:
            log.warning("cannot read the serving certificate: %s", err)
            return None
        digest = hashlib.sha256(key + cert).digest()
        if digest == self._digest:
            return None
        self._digest = digest
        self.reloads += 1
        log.info("serving certificate reloaded from %s", self.cert_file)
        return grpc.ssl_server_certificate_configuration([(key, cert)])


async def start(ads: AdsServer, *, address: str, certs: CertFiles
                ) -> tuple[grpc.aio.Server, int]:
    """Serve ADS on ``address`` (host:port; port 0 picks one) until the returned server is
    stopped; returns it and the port it listens on."""
    server = grpc.aio.server(options=_OPTIONS)
    server.add_generic_rpc_handlers((ads.handler(),))
    credentials = grpc.dynamic_ssl_server_credentials(certs.initial(), certs.fetch)
    port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    log.info("xDS serving on %s (port %d)", address, port)
    return server, port
