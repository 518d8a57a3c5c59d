"""Benchmark: mesh-init's wall time per pod start, next to a bare iptables-restore of its rules.

Each sample runs in a fresh network namespace (a pod with a veth to a peer, 198.18.0.0/15), so
every run pays what a real pod start pays: interpreter start, imports, backend detection, the
restore, the read-back. ``ip netns exec`` itself is timed on its own and subtracted, since the
kubelet does not pay it. Prints figures; asserts nothing.

    sudo .venv/bin/python scripts/bench_init.py [--runs 15] [--backend nft legacy] [--tproxy]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from injector import netns

MESH_INIT = str(Path(sys.executable).parent / "meshinject-init")
TARGET_MS = 150.0


def _timed(ns: netns.Netns, cmd: Sequence[str], *, stdin: str | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(ns.argv(cmd), input=stdin, capture_output=True, text=True, check=False)
    elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return elapsed


def _pod() -> tuple[netns.Netns, netns.Netns]:
    pod, peer = netns.create("bpod"), netns.create("bpeer")
    netns.veth(pod, peer, a_addr="198.18.0.2/24", b_addr="198.18.0.1/24")
    return pod, peer


def _sample(backend: str, args: list[str], rules: str) -> tuple[float, float, float]:
    """(mesh-init, bare restore, ip netns exec overhead) in ms, each in a fresh namespace."""
    figures = []
    for which in ("init", "restore", "exec"):
        pod, peer = _pod()
        try:
            if which == "init":
                figures.append(_timed(pod, [MESH_INIT, f"--backend={backend}", *args]))
            elif which == "restore":
                figures.append(
                    _timed(pod, [f"iptables-{backend}-restore", "--noflush"], stdin=rules)
                )
            else:
                figures.append(_timed(pod, ["true"]))
        finally:
            netns.delete(pod)
            netns.delete(peer)
    return figures[0], figures[1], figures[2]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument(
        "--backend", nargs="+", default=["nft", "legacy"], choices=["nft", "legacy"]
    )
    parser.add_argument("--tproxy", action="store_true", help="also time TPROXY mode (pyroute2)")
    options = parser.parse_args(argv)
    modes = [["--exclude-inbound-ports=22"]]
    if options.tproxy:
        modes.append(["--exclude-inbound-ports=22", "--interception-mode=TPROXY"])
    netns.cleanup_stale()
    print(
        f"{'backend':8} {'mode':9} {'mesh-init':>10} {'bare restore':>13} {'netns exec':>11} "
        f"{'mesh-init - exec':>17}  (median ms of {options.runs} fresh namespaces)"
    )
    for backend in options.backend:
        for args in modes:
            dry = subprocess.run(
                [MESH_INIT, "--dry-run", *args], capture_output=True, text=True, check=True
            )
            rules = dry.stdout.split("# IPv6")[0].split("\n", 1)[1]
            samples = [_sample(backend, args, rules) for _ in range(options.runs)]
            init, restore, exec_ = (statistics.median(s[i] for s in samples) for i in range(3))
            mode = "TPROXY" if "--interception-mode=TPROXY" in args else "REDIRECT"
            verdict = "ok" if init - exec_ <= TARGET_MS else "OVER TARGET"
            figures = f"{init:10.1f} {restore:13.1f} {exec_:11.1f} {init - exec_:17.1f}"
            print(f"{backend:8} {mode:9} {figures}  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
