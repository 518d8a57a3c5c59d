"""The node's two relays between the root namespace (where the API server runs, on 127.0.0.1)
and the node namespace (where the pods are), so neither side needs a route to the other.

- **Into the node, for the API server**: an HTTP CONNECT proxy on a Unix socket, which the API
  server uses for its ``cluster`` egress (``--egress-selector-config-file``). In Kubernetes
  1.37 that carries the kubelet client (``kubectl logs``/``exec``/``port-forward``, the
  ``nodes/proxy`` subresource), the ``pods/proxy`` and ``services/proxy`` subresources, and
  webhooks registered by Service reference; webhooks registered by URL, the authentication
  and audit webhooks go by ``controlplane`` and etcd by ``etcd``, which stay direct. Each
  CONNECT is dialled from a socket made inside the node namespace (:mod:`nssocket`): a pod's IP
  or the node's own kubelet API.
- **Out of the node, to the API server**: a listener on the node's ``RELAY_PORT`` in the node
  namespace whose connections are joined to the API server on 127.0.0.1 in the root namespace.
  It is the ``kubernetes`` Service's endpoint (pods reach 198.19.0.1:443 through kube-proxy's
  DNAT to it) and kube-proxy's own way to the API server. TLS passes through untouched: the
  API server's certificate names 198.19.0.1 and ``kubernetes.default.svc``.

Both run on one asyncio loop in a thread of the node agent; neither reads what it carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import threading
from pathlib import Path

from injector.sandbox import nssocket

log = logging.getLogger("meshinject.node.egress")
MAX_HEADER = 16 * 1024
DIAL_TIMEOUT = 10.0


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(64 * 1024):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def _join(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                b: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    try:
        await asyncio.gather(_pump(a[0], b[1]), _pump(b[0], a[1]))
    finally:
        for writer in (a[1], b[1]):
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


class Egress:
    def __init__(self, *, node_ns: str, socket_path: Path, relay_port: int,
                 api_port: int) -> None:
        self.node_ns, self.socket_path = node_ns, socket_path
        self.relay_port, self.api_port = relay_port, api_port
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.connects = 0  # CONNECTs served (for tests and the log)
        self._thread = threading.Thread(target=self._run, name="egress", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self.ready.wait(10)
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._listen())
        except BaseException as err:
            self.error = err
            self.ready.set()
            return
        self.ready.set()
        self.loop.run_forever()

    async def _listen(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        await asyncio.start_unix_server(self._connect, path=str(self.socket_path))
        os.chmod(self.socket_path, 0o600)  # the API server runs as root; nobody else
        relay = nssocket.socket_in(self.node_ns)
        relay.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        relay.bind(("0.0.0.0", self.relay_port))
        relay.listen(128)
        relay.setblocking(False)
        await asyncio.start_server(self._relay, sock=relay)

    # -- the API server's way in -------------------------------------------------------------
    async def _connect(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        method, _, rest = line.partition(" ")
        target = rest.rsplit(" ", 1)[0]
        host, _, port = target.rpartition(":")
        try:
            address = str(ipaddress.ip_address(host.strip("[]")))
            if method != "CONNECT" or not port.isdigit():
                raise ValueError(line)
        except ValueError:
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        try:
            upstream = await self._dial(address, int(port))
        except OSError as err:
            log.info("CONNECT %s: %s", target, err)
            message = f"the sandbox node could not reach {target}: {err}".encode()
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(message), message))
            writer.close()
            return
        self.connects += 1
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await _join((reader, writer), upstream)

    async def _dial(self, host: str, port: int
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = nssocket.socket_in(self.node_ns)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(self.loop.sock_connect(sock, (host, port)), DIAL_TIMEOUT)
        except TimeoutError as err:
            sock.close()
            raise OSError(f"no answer in {DIAL_TIMEOUT:g} s") from err
        except OSError:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    # -- the pods' way out ---------------------------------------------------------------------
    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.api_port), DIAL_TIMEOUT)
        except (OSError, TimeoutError) as err:
            log.warning("relay to the API server: %s", err)
            writer.close()
            return
        await _join((reader, writer), upstream)
