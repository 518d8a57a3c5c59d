"""What crossed the node's bridge between two addresses: TLS records or plaintext HTTP.

Every pod's traffic is routed through the node (its /32 address has the node as gateway), so a
packet socket on the node's bridge sees each TCP segment between two pods, without tcpdump and
without touching the pods. The demo captures while its traffic runs and reports, per flow, how
many segments carried data, what the first one started with (a TLS record header is ``16 03 0x``
for a handshake) and how many held HTTP in clear. A routed packet is seen twice on the bridge
(in from one pod, out to the other); only the incoming copy is kept, except for the node's own
packets, which only go out. The socket asks for every protocol (``ETH_P_ALL``): a socket bound
to IPv4 alone is given only what comes in, never what the node sends.

:func:`segment` and :class:`Flow` are pure; :class:`Capture` owns the socket and its thread.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field

from injector.sandbox import nssocket

ETH_P_ALL, ETH_P_IP = 0x0003, 0x0800
PACKET_OUTGOING = 4
PLAINTEXT_MARKS = (b"HTTP/1.", b"GET /", b"POST /")  # HTTP/1.x, requests and replies
TLS_CONTENT = {0x14: "TLS change cipher spec", 0x15: "TLS alert", 0x16: "TLS handshake",
               0x17: "TLS application data"}
MAX_SEGMENTS = 100_000  # a bound on what one capture counts (the demo sends a few thousand)


def segment(packet: bytes) -> tuple[str, int, str, int, bytes] | None:
    """(source, source port, destination, destination port, payload) of an IPv4 TCP packet;
    None for anything else."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_TCP:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack_from("!H", packet, 2)[0]
    if len(packet) < ihl + 20:
        return None
    sport, dport = struct.unpack_from("!HH", packet, ihl)
    offset = (packet[ihl + 12] >> 4) * 4
    payload = packet[ihl + offset:total]
    return (socket.inet_ntoa(packet[12:16]), sport, socket.inet_ntoa(packet[16:20]), dport,
            payload)


def record_kind(payload: bytes) -> str:
    """What a payload starts with: a TLS record (its content type, version 3.x), or not."""
    if len(payload) >= 3 and payload[0] in TLS_CONTENT and payload[1] == 3:
        return TLS_CONTENT[payload[0]]
    return "not a TLS record"


@dataclass
class Flow:
    """The data segments from one address to another, to one port, summed up."""

    segments: int = 0
    data_bytes: int = 0
    first: bytes = b""  # the first data segment's first bytes
    plaintext: int = 0  # segments holding HTTP in clear

    def add(self, payload: bytes) -> None:
        if not payload:
            return
        if not self.segments:
            self.first = payload[:8]
        self.segments += 1
        self.data_bytes += len(payload)
        self.plaintext += any(mark in payload for mark in PLAINTEXT_MARKS)

    @property
    def tls(self) -> bool:
        """Every sign of TLS and none of plaintext: it began with a handshake record and no
        segment held HTTP in clear."""
        return self.segments > 0 and self.plaintext == 0 and record_kind(
            self.first) == "TLS handshake"

    def describe(self) -> str:
        head = " ".join(f"{b:02x}" for b in self.first[:3])
        return (f"{self.segments} segments, {self.data_bytes} B, {self.plaintext} with HTTP in "
                f"clear; the first: {head or '-'} ({record_kind(self.first)})")


@dataclass
class Capture:
    """A packet socket on ``interface`` in ``namespace``, counting the flows between
    ``addresses`` to or from ``port`` until :meth:`stop`."""

    namespace: str
    interface: str
    addresses: frozenset[str]
    port: int
    node: str  # the node's own address: its packets are only seen going out
    flows: dict[tuple[str, str], Flow] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _sock: socket.socket | None = None

    def start(self) -> None:
        self._sock = nssocket.socket_in(self.namespace, family=socket.AF_PACKET,
                                        kind=socket.SOCK_DGRAM, proto=socket.htons(ETH_P_ALL))
        self._sock.bind((self.interface, 0))
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._read, name="wire-capture", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._sock is not None
        seen = 0
        while not self._stop.is_set() and seen < MAX_SEGMENTS:
            try:
                packet, where = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            found = segment(packet) if where[1] == ETH_P_IP else None
            if found is None:
                continue
            src, sport, dst, dport, payload = found
            if where[2] == PACKET_OUTGOING and src != self.node:
                continue  # the routed copy going out to the other pod
            if {src, dst} <= self.addresses and self.port in (sport, dport):
                self.flows.setdefault((src, dst), Flow()).add(payload)
                seen += 1

    def stop(self) -> dict[tuple[str, str], Flow]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        return self.flows
