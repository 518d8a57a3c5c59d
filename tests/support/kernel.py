"""Helpers for the real-kernel capture tests: run mesh-init in a namespace, read iptables back."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from injector.sandbox.netns import Netns

MESH_INIT = str(Path(sys.executable).parent / "meshinject-init")
BACKENDS = ("nft", "legacy")
# the capture tests' pod and its client, on a veth inside the test's own namespaces
POD_IP = "198.18.0.2"
CLIENT_IP = "198.18.0.1"


def mesh_init(ns: Netns, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    """Run the installed console script in ``ns``; returns stderr (its log lines)."""
    prefix = ["env", *(f"{k}={v}" for k, v in (env or {}).items())] if env else []
    proc = ns.run([*prefix, MESH_INIT, *args], check=False)
    if check:
        assert proc.returncode == 0, f"mesh-init {args} exited {proc.returncode}: {proc.stderr}"
    return proc.stderr if check else f"{proc.returncode}\n{proc.stderr}"


def save(ns: Netns, backend: str, version: int = 4) -> str:
    """``iptables-save`` without its timestamp comments and counters, so runs compare equal."""
    tool = ("iptables" if version == 4 else "ip6tables") + f"-{backend}-save"
    text = ns.run([tool]).stdout
    lines = [re.sub(r"\[\d+:\d+\]", "[0:0]", x) for x in text.splitlines() if not x.startswith("#")]
    return "\n".join(lines) + "\n"


def without_empty_tables(text: str) -> str:
    """Drop tables holding nothing but built-in chains with ACCEPT policy and no rules.

    A table, once touched, stays registered in a namespace (legacy lists every table a module
    instantiated; nft keeps the table); an empty one is the same as none for traffic.
    """
    out: list[str] = []
    for block in re.findall(r"^\*.*?^COMMIT$", text, flags=re.S | re.M):
        body = block.splitlines()[1:-1]
        if any(not re.match(r":\S+ ACCEPT \[0:0\]$", line) for line in body):
            out.append(block)
    return "\n".join(out)


def namespaces() -> set[str]:
    """The names of every network namespace on the machine (``ip netns list``)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def rules(ns: Netns) -> dict[str, str]:
    """Every iptables rule in ``ns``: both backends, both families."""
    return {f"{backend} IPv{v}": save(ns, backend, v) for backend in BACKENDS for v in (4, 6)}


def dry_run(ns: Netns, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    """``meshinject-init ARGS`` (the caller says ``--dry-run`` or gives a bad value) in ``ns``,
    a namespace of the test's own, never the machine's: a broken ``--dry-run`` then rewrites
    nothing that matters, and is caught, for the namespace's rules must be exactly as before."""
    before = rules(ns)
    proc = ns.run([MESH_INIT, *args], check=False)
    assert proc.returncode == expect, f"mesh-init {args} exited {proc.returncode}: {proc.stderr}"
    assert rules(ns) == before, f"mesh-init {args} changed the namespace's iptables rules"
    return proc
