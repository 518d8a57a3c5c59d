"""Talking to iptables: pick the backend, apply one restore per family, read back, verify.

Why restore and not one ``iptables`` call per rule: a restore is one transaction per table set
(all or nothing) and one process instead of thirty, which is most of mesh-init's wall time.
Why read ``-save`` first: the rule text adds the jumps from ``PREROUTING``/``OUTPUT`` only when
they are absent (a plain ``--noflush`` restore would append another copy per run) and deletes
those a previous config wanted but this one does not; see :mod:`initcontainer.rules`.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from dataclasses import dataclass

from initcontainer.config import OUTBOUND_PORT, Backend, CaptureConfig
from initcontainer.rules import (
    Installed,
    NetInfo,
    RuleSets,
    parse_save,
    render,
    render_cleanup,
    wanted,
)

LOCK_WAIT = ["-w", "5"]  # legacy takes a host-wide xtables lock; wait rather than fail


class ApplyError(RuntimeError):
    """iptables refused something; the message carries the tool, the family and its stderr."""


@dataclass(frozen=True)
class Tools:
    """The binaries of one backend: ``iptables-nft``, ``iptables-legacy`` or plain ``iptables``."""

    backend: str
    v4: str
    v6: str

    def prefix(self, version: int) -> str:
        return self.v4 if version == 4 else self.v6

    def save(self, version: int) -> str:
        proc = _run([f"{self.prefix(version)}-save"])
        if proc.returncode != 0:
            raise ApplyError(f"{self.prefix(version)}-save failed: {proc.stderr.strip()}")
        return proc.stdout

    def restore(self, version: int, text: str, *, noflush: bool = True, test: bool = False) -> None:
        cmd = [f"{self.prefix(version)}-restore", *LOCK_WAIT]
        cmd += ["--noflush"] if noflush else []
        cmd += ["--test"] if test else []
        proc = _run(cmd, stdin=text)
        if proc.returncode != 0:
            raise ApplyError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()}")


def _run(cmd: list[str], *, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, check=False, timeout=30
        )
    except FileNotFoundError as err:
        raise ApplyError(f"{cmd[0]} is not installed") from err


def _tools(backend: str) -> Tools:
    if backend == "plain":
        return Tools("plain", "iptables", "ip6tables")
    return Tools(backend, f"iptables-{backend}", f"ip6tables-{backend}")


PROBE = (f"*nat\n:MESH_PROBE - [0:0]\n-A MESH_PROBE -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}"
         "\nCOMMIT\n")


def detect(forced: Backend) -> Tools:
    """The forced one, else legacy if it already holds rules, else nft if it can NAT, else plain.

    Legacy first because a node whose CNI wrote legacy rules must not get a second, nft, rule set
    (with both loaded the first REDIRECT wins, which is not necessarily ours).
    """
    if forced != "auto":
        return _tools(forced)
    legacy = _run(["iptables-legacy-save"]) if _exists("iptables-legacy-save") else None
    if legacy is not None and legacy.returncode == 0 and "\n-A " in legacy.stdout:
        return _tools("legacy")
    nft = _tools("nft")
    try:
        nft.restore(4, PROBE, test=True)
    except ApplyError:
        return _tools("plain")
    return nft


def _exists(binary: str) -> bool:
    import shutil  # only on the auto path

    return shutil.which(binary) is not None


def installed(tools: Tools, version: int, *, tolerate: bool = False) -> tuple[str, Installed]:
    """The family's current ``-save`` text and what of ours it holds."""
    try:
        text = tools.save(version)
    except ApplyError:
        if not tolerate:
            raise
        return "", Installed()
    return text, parse_save(text)


def _rollback_text(previous_save: str, applied: str) -> str:
    """A full (flushing) restore of the tables we touched, back to ``previous_save``."""
    tables = [line[1:].strip() for line in applied.splitlines() if line.startswith("*")]
    had = {line[1:].strip() for line in previous_save.splitlines() if line.startswith("*")}
    return previous_save + "".join(f"*{t}\nCOMMIT\n" for t in tables if t not in had)


@dataclass(frozen=True)
class Applied:
    """What a run installed, and what the namespace held before (a mode switch needs it)."""

    sets: RuleSets
    before: dict[int, Installed]


def apply(tools: Tools, config: CaptureConfig, net: NetInfo) -> Applied:
    """Install the rules for every family the pod has; all families or none."""
    saves = {4: installed(tools, 4), 6: installed(tools, 6) if net.ipv6 else ("", Installed())}
    before = {v: saves[v][1] for v in (4, 6)}
    sets = render(config, net, installed=before)
    done: list[tuple[int, str]] = []
    for version, text in ((4, sets.ipv4), (6, sets.ipv6)):
        if text is None:
            continue
        try:
            tools.restore(version, text)
        except ApplyError as err:
            for prev_version, prev_text in done:  # undo the families already applied
                tools.restore(
                    prev_version, _rollback_text(saves[prev_version][0], prev_text), noflush=False
                )
            raise ApplyError(f"IPv{version}: {err}") from None
        done.append((version, text))
    for version, _ in done:
        verify(tools, config, version)
    return Applied(sets, before)


def verify(tools: Tools, config: CaptureConfig, version: int) -> None:
    """Read back: our chains hold the rendered rule counts, each jump exists exactly once."""
    want, have = wanted(config, version), installed(tools, version)[1]
    problems = []
    if want.chains != have.chains:
        problems.append(f"chains {sorted(have.chains)} != {sorted(want.chains)}")
    if dict(want.rules) != dict(have.rules):
        problems.append(f"rule counts {dict(have.rules)} != {dict(want.rules)}")
    want_jumps = Counter((t, s.split()[0]) for t, s in want.jumps)
    have_jumps = Counter((t, s.split()[0]) for t, s in have.jumps)
    if want_jumps != have_jumps:
        problems.append(f"jumps {dict(have_jumps)} != {dict(want_jumps)}")
    if problems:
        raise ApplyError(f"IPv{version} rules read back wrong: " + "; ".join(problems))


def remove(tools: Tools, *, tolerate: bool = False) -> dict[int, Installed]:
    """Remove our jumps and chains from both families; returns what was there.

    IPv6 that cannot even be listed (no ip6tables NAT on the node) holds nothing of ours.
    """
    found = {4: installed(tools, 4, tolerate=tolerate)[1], 6: installed(tools, 6, tolerate=True)[1]}
    sets = render_cleanup(found)
    for version, text in ((4, sets.ipv4), (6, sets.ipv6)):
        if text is not None:
            tools.restore(version, text)
    return found


def cleanup_candidates(forced: Backend) -> list[Tools]:
    """Where ``--cleanup`` looks: the forced backend, or (auto) every one installed here.

    Auto detection can change between runs (foreign legacy rules appear), so a cleanup that only
    looked where detection points now could miss what an earlier run put in the other backend.
    """
    if forced != "auto":
        return [_tools(forced)]
    return [_tools(b) for b in ("legacy", "nft") if _exists(f"iptables-{b}-restore")] or [
        _tools("plain")
    ]
