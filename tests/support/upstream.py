"""A small upstream for the proxy tests: HTTP/1.1 keep-alive, or a server-first TCP banner.

Run as a script inside a test namespace. Behaviour by flags, so one file serves every case:
``--fail-every 3`` answers every third request 503, ``--status 503`` always, ``--delay-ms`` waits
before answering, ``--banner`` speaks first on connect (like SMTP or MySQL) and echoes a line.
``--reset-after-read`` reads each request and then resets the connection without an answer (an
app that crashed while handling it), ``--header NAME:VALUE`` adds a header to every answer,
``--echo-header NAME`` answers with the request's header NAME as ``x-echo-NAME``.
``GET /_count`` reports how many other requests arrived (to count upstream attempts).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct


class State:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.count = 0


async def _http(state: State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    args = state.args
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            length = 0
            echoed = ""
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
                if name.strip().lower() in args.echo_header:
                    echoed += f"x-echo-{name.strip().lower()}: {value.strip()}\r\n"
            if length:
                await reader.readexactly(length)
            if path == "/_count":
                status, body = 200, str(state.count).encode()
            else:
                state.count += 1
                if args.reset_after_read:
                    _reset(writer)
                    return
                if args.delay_ms:
                    await asyncio.sleep(args.delay_ms / 1000)
                status = args.status
                if args.fail_every and state.count % args.fail_every == 0:
                    status = 503
                body = b"x" * args.body_bytes
            extra = "".join(f"{h.replace(':', ': ', 1)}\r\n" for h in args.header) + echoed
            writer.write(
                f"HTTP/1.1 {status} X\r\n{extra}content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as the kernel does for a process that died."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        writer.write(b"220 hello from a server-first protocol\r\n")
        await writer.drain()
        line = await reader.readline()
        writer.write(b"echo " + line)
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--body-bytes", type=int, default=2)
    parser.add_argument("--banner", action="store_true")
    parser.add_argument("--reset-after-read", action="store_true")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--echo-header", action="append", default=[], type=str.lower)
    args = parser.parse_args()
    state = State(args)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await (_banner(reader, writer) if args.banner else _http(state, reader, writer))

    server = await asyncio.start_server(handle, args.host, args.port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
