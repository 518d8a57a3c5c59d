"""What crossed a link, as the wire saw it: TCP payloads captured with a raw packet socket.

The capture runs as a small Python program inside a namespace (``AF_PACKET`` on one interface,
every frame in both directions), writing one JSON line per TCP segment that carried data; the
test stops it and reads the lines. No tcpdump needed, nothing outside the namespace touched.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from injector.sandbox import netns
from tests.support.lab import PY

PROGRAM = r"""
import json, socket, struct, sys
iface, out = sys.argv[1], open(sys.argv[2], "w", buffering=1)
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
sock.bind((iface, 0))
out.write('{"ready": true}\n')
while True:
    frame = sock.recv(65535)
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        continue  # IPv4 TCP only
    ihl = (frame[14] & 0x0F) * 4
    tcp = 14 + ihl
    sport, dport = struct.unpack("!HH", frame[tcp:tcp + 4])
    total = struct.unpack("!H", frame[16:18])[0]
    data = frame[tcp + (frame[tcp + 12] >> 4) * 4:14 + total]
    if data:
        src, dst = socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34])
        out.write(json.dumps({"src": f"{src}:{sport}", "dst": f"{dst}:{dport}",
                              "data": data.hex()}) + "\n")
"""

Spawn = Callable[..., subprocess.Popen[bytes]]


@dataclass(frozen=True)
class Segment:
    src: str
    dst: str
    data: bytes

    @property
    def is_tls_record(self) -> bool:
        """Starts like a TLS record: a content type (handshake, data, alert, change cipher
        spec) and version 3.x."""
        return len(self.data) >= 3 and self.data[0] in (20, 21, 22, 23) and self.data[1] == 3


class Capture:
    def __init__(self, ns: netns.Netns, iface: str, spawn: Spawn, out: Path) -> None:
        self.out = out
        self.proc = spawn(ns, [PY, "-u", "-c", PROGRAM, iface, str(out)],
                          log_path=str(out.with_suffix(".log")))
        deadline = time.monotonic() + 10
        while not (out.exists() and out.read_text().startswith('{"ready"')):
            assert self.proc.poll() is None, out.with_suffix(".log").read_text()
            assert time.monotonic() < deadline, "the capture did not start"
            time.sleep(0.02)

    def segments(self, *, port: int | None = None) -> list[Segment]:
        """What was captured so far (to or from ``port`` when given)."""
        time.sleep(0.2)  # the last frames' lines
        found = []
        for line in self.out.read_text().splitlines()[1:]:
            item = json.loads(line)
            if port is None or item["src"].endswith(f":{port}") or item["dst"].endswith(
                    f":{port}"):
                found.append(Segment(item["src"], item["dst"], bytes.fromhex(item["data"])))
        return found

    def stop(self) -> None:
        netns.stop(self.proc)


def payload(segments: Sequence[Segment]) -> bytes:
    return b"".join(s.data for s in segments)
