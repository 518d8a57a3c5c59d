"""Benchmark: mesh-init's wall time per pod start, next to a bare iptables-restore of its rules.

Each sample runs in a fresh network namespace (a pod with a veth to a peer, 198.18.0.0/15), so
every run pays what a real pod start pays: interpreter start, imports, backend detection, the
restore, the read-back. ``ip netns exec`` itself is timed on its own and subtracted, since the
kubelet does not pay it. Prints figures; asserts nothing.

As root:

    .venv/bin/python scripts/bench_init.py [--runs 15] [--backend nft legacy] [--tproxy]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from injector.sandbox import netns

MESH_INIT = str(Path(sys.executable).parent / "meshinject-init")
TARGET_MS = 150.0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def _timed(ns: netns.Netns, cmd: Sequence[str], *, stdin: str | None = None) -> tuple[float, float]:
    """(wall ms, CPU ms of the process tree): CPU time says more than wall on a busy machine."""
    cpu, start = _cpu(), time.perf_counter()
    proc = subprocess.run(ns.argv(cmd), input=stdin, capture_output=True, text=True, check=False)
    elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return elapsed, _cpu() - cpu


def _pod() -> tuple[netns.Netns, netns.Netns]:
    pod, peer = netns.create("bpod"), netns.create("bpeer")
    netns.veth(pod, peer, a_addr="198.18.0.2/24", b_addr="198.18.0.1/24")
    return pod, peer


Figures = tuple[tuple[float, float], tuple[float, float], tuple[float, float]]


def _sample(backend: str, args: list[str], rules: str) -> Figures:
    """(wall, CPU) of mesh-init, a bare restore and ``ip netns exec true``, each in a fresh pod."""
    commands: list[tuple[list[str], str | None]] = [
        ([MESH_INIT, f"--backend={backend}", *args], None),
        ([f"iptables-{backend}-restore", "-w", "5", "--noflush"], rules),
        (["true"], None),
    ]
    figures = []
    for cmd, stdin in commands:
        pod, peer = _pod()
        try:
            figures.append(_timed(pod, cmd, stdin=stdin))
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
    load = os.getloadavg()[0]
    print(
        f"median of {options.runs} runs, each in a fresh namespace; load average {load:.1f} "
        f"on {os.cpu_count()} CPUs (wall times stretch under load; CPU times much less)"
    )
    print(
        f"{'backend':8} {'mode':9} {'mesh-init wall':>14} {'(- netns exec)':>14} "
        f"{'mesh-init CPU':>13} {'bare restore wall':>17} {'restore CPU':>11}"
    )
    for backend in options.backend:
        for args in modes:
            dry = subprocess.run(
                [MESH_INIT, "--dry-run", *args], capture_output=True, text=True, check=True
            )
            rules = dry.stdout.split("# IPv6")[0].split("\n", 1)[1]
            samples = [_sample(backend, args, rules) for _ in range(options.runs)]

            def median(which: int, part: int, samples: list[Figures] = samples) -> float:
                return statistics.median(s[which][part] for s in samples)

            init, exec_ = median(0, 0), median(2, 0)
            mode = "TPROXY" if "--interception-mode=TPROXY" in args else "REDIRECT"
            verdict = "ok" if init - exec_ <= TARGET_MS else f"over the {TARGET_MS:.0f} ms target"
            print(
                f"{backend:8} {mode:9} {init:14.1f} {init - exec_:14.1f} {median(0, 1):13.1f} "
                f"{median(1, 0):17.1f} {median(1, 1):11.1f}  {verdict}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
