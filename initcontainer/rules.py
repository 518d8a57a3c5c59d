"""The capture rules: a pure function from config (and what the namespace holds) to restore text.

Shape (per address family), after Istio's and linkerd's proven layouts, every rule commented:

- nat ``MESH_INBOUND``: excluded inbound ports RETURN, then the captured ports jump to
  ``MESH_IN_REDIRECT`` (REDIRECT to the inbound listener). ``PREROUTING`` jumps to it in REDIRECT
  mode. In TPROXY mode mangle's ``MESH_INBOUND`` takes over from ``PREROUTING``: ``lo`` RETURNs
  (loopback is the nat rules' business: the proxy's 127.0.0.6 passthrough would otherwise be
  TPROXYed back into 15006), the same exclusions, packets of known connections go to
  ``MESH_DIVERT`` (mark, accept), the rest to ``MESH_TPROXY`` (TPROXY to the inbound port with
  the mark that the fwmark rule routes locally). The nat ``MESH_INBOUND`` then only serves the
  loopback case below.
- nat ``MESH_OUTPUT`` (from ``OUTPUT``, TCP only, so DNS over UDP is never touched):
  the proxy's inbound passthrough (source 127.0.0.6 / ::6 on ``lo``) RETURNs; the proxy calling its
  own pod address goes to the inbound listener; the app calling its own pod address goes through
  ``MESH_INBOUND`` (so it is captured, excluded inbound ports still bypass), all other ``lo``
  traffic RETURNs; the proxy's uid and gid RETURN; excluded ports and CIDRs RETURN; then the
  included traffic jumps to ``MESH_REDIRECT`` (REDIRECT to the outbound listener).

Idempotence: chains are declared in the text (``:MESH_X - [0:0]`` flushes them under
``--noflush``), and the jumps from the built-in chains are only written when the namespace does not
already hold them, per :class:`Installed` read from ``iptables-save`` (see :func:`parse_save`).
Jumps and chains of a previous run that this config does not want (a mode switch) are deleted in
the same restore, so one restore per family is all or nothing.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from initcontainer.config import (
    INBOUND_SOURCE4,
    INBOUND_SOURCE6,
    PROXY_OWN_PORTS,
    CaptureConfig,
    Ports,
)

INBOUND, IN_REDIRECT = "MESH_INBOUND", "MESH_IN_REDIRECT"
OUTPUT, REDIRECT = "MESH_OUTPUT", "MESH_REDIRECT"
DIVERT, TPROXY = "MESH_DIVERT", "MESH_TPROXY"
OUR_CHAINS = frozenset({INBOUND, IN_REDIRECT, OUTPUT, REDIRECT, DIVERT, TPROXY})
BUILTIN = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})
TPROXY_MARK = 0x539  # 1337: packets diverted to the proxy
ROUTE_TABLE = 133  # the policy-routing table that delivers marked packets locally


@dataclass(frozen=True)
class NetInfo:
    """The pod's addresses, as netlink (or /proc) found them: which families to capture."""

    ipv4: tuple[ipaddress.IPv4Address, ...] = ()
    ipv6: tuple[ipaddress.IPv6Address, ...] = ()


@dataclass(frozen=True)
class RuleSets:
    """``iptables-restore`` text per family; ``None`` means nothing to do for that family."""

    ipv4: str | None
    ipv6: str | None


@dataclass(frozen=True)
class Installed:
    """What of ours a table set holds: chains, jumps from built-in chains, rules per chain."""

    chains: frozenset[tuple[str, str]] = frozenset()
    jumps: tuple[tuple[str, str], ...] = ()  # (table, rule spec without "-A ")
    rules: Mapping[tuple[str, str], int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.chains and not self.jumps


NOTHING = Installed()


def parse_save(text: str) -> Installed:
    """Read our chains, our jumps and rule counts out of ``iptables-save`` (or restore) text."""
    table = ""
    chains: set[tuple[str, str]] = set()
    jumps: list[tuple[str, str]] = []
    rules: Counter[tuple[str, str]] = Counter()
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":"):
            name = line[1:].split()[0]
            if name in OUR_CHAINS:
                chains.add((table, name))
        elif line.startswith("-A "):
            spec = line[3:]
            chain = spec.split()[0]
            if chain in OUR_CHAINS:
                rules[(table, chain)] += 1
            elif chain in BUILTIN and _target(spec) in OUR_CHAINS:
                jumps.append((table, spec))
    return Installed(frozenset(chains), tuple(jumps), dict(rules))


def _target(spec: str) -> str:
    words = spec.split()
    return words[words.index("-j") + 1] if "-j" in words else ""


@dataclass(frozen=True)
class _Family:
    version: int
    loopback: str
    passthrough: str


_V4 = _Family(4, "127.0.0.0/8", f"{INBOUND_SOURCE4}/32")  # all of 127/8: loopback, never the pod
_V6 = _Family(6, "::1/128", f"{INBOUND_SOURCE6}/128")  # assigned to lo (netlink.py)


def _rule(chain: str, matches: str, why: str, target: str) -> str:
    middle = f"{matches} " if matches else ""
    return f'-A {chain} {middle}-m comment --comment "meshinject: {why}" -j {target}'


def _dports(ports: Ports) -> list[str]:
    return [f"-p tcp -m tcp --dport {r}" for r in ports]


def _per_port(chain: str, ports: Ports, why: str, target: str) -> list[str]:
    return [_rule(chain, m, why, target) for m in _dports(ports)]


def _inbound(config: CaptureConfig, target: str, *, before: tuple[str, ...] = ()) -> list[str]:
    """MESH_INBOUND's body (either table): exclusions RETURN, ``before``, then capture."""
    own = "(health, metrics) is not captured"
    out = [
        _rule(INBOUND, f"-p tcp -m tcp --dport {p}", f"proxy port {p} {own}", "RETURN")
        for p in PROXY_OWN_PORTS
    ]
    out += _per_port(INBOUND, config.exclude_inbound_ports, "excluded inbound port", "RETURN")
    out += before
    if config.include_inbound_ports is None:
        out.append(_rule(INBOUND, "-p tcp", "capture inbound", target))
    else:
        out += _per_port(INBOUND, config.include_inbound_ports, "included inbound port", target)
    return out


def _output(config: CaptureConfig, fam: _Family) -> list[str]:
    uid, gid = config.proxy_uid, config.proxy_gid
    include_cidrs, exclude_cidrs = config.cidrs_for(fam.version)
    to_pod = f"! -d {fam.loopback} -o lo"  # to the pod's own (non-loopback) address
    self_in = "proxy to own pod address goes inbound"
    out = [
        _rule(
            OUTPUT,
            f"-s {fam.passthrough} -o lo",
            "proxy inbound passthrough is not looped",
            "RETURN",
        ),
        _rule(OUTPUT, f"{to_pod} -m owner --uid-owner {uid}", self_in, IN_REDIRECT),
        _rule(OUTPUT, f"{to_pod} -m owner --gid-owner {gid}", self_in, IN_REDIRECT),
        _rule(OUTPUT, to_pod, "app to own pod address goes inbound", INBOUND),
        _rule(OUTPUT, "-o lo", "other loopback traffic is not captured", "RETURN"),
        _rule(OUTPUT, f"-m owner --uid-owner {uid}", "proxy uid is not captured", "RETURN"),
        _rule(OUTPUT, f"-m owner --gid-owner {gid}", "proxy gid is not captured", "RETURN"),
    ]
    out += _per_port(OUTPUT, config.exclude_outbound_ports, "excluded outbound port", "RETURN")
    out += [_rule(OUTPUT, f"-d {n}", "excluded outbound CIDR", "RETURN") for n in exclude_cidrs]
    cidrs = [""] if include_cidrs is None else [f"-d {n}" for n in include_cidrs]
    included = config.include_outbound_ports
    ports = [""] if included is None else _dports(included)
    for cidr in cidrs:
        for port in ports:
            why = "capture outbound" if not (cidr or port) else "included outbound traffic"
            matches = " ".join(x for x in (cidr, port or "-p tcp") if x)
            out.append(_rule(OUTPUT, matches, why, REDIRECT))
    return out


def _wanted_jumps(config: CaptureConfig) -> dict[tuple[str, str, str], str]:
    """(table, built-in chain, target) -> the rule spec that adds the jump."""
    inbound_table = "mangle" if config.interception_mode == "TPROXY" else "nat"
    specs = {
        (inbound_table, "PREROUTING", INBOUND): _rule(
            "PREROUTING", "-p tcp", "inbound capture", INBOUND
        ),
        ("nat", "OUTPUT", OUTPUT): _rule("OUTPUT", "-p tcp", "outbound capture", OUTPUT),
    }
    return {key: spec[3:] for key, spec in specs.items()}


def _tables(config: CaptureConfig, fam: _Family) -> dict[str, tuple[list[str], list[str]]]:
    """table -> (our chains in it, their rules)."""

    def to_port(chain: str, port: int, listener: str) -> str:
        return _rule(chain, "-p tcp", f"to the {listener} listener", f"REDIRECT --to-ports {port}")

    nat_rules = [
        *_inbound(config, IN_REDIRECT),
        to_port(IN_REDIRECT, config.inbound_port, "inbound"),
        *_output(config, fam),
        to_port(REDIRECT, config.outbound_port, "outbound"),
    ]
    tables = {"nat": ([INBOUND, IN_REDIRECT, OUTPUT, REDIRECT], nat_rules)}
    if config.interception_mode == "TPROXY":
        mark = f"{TPROXY_MARK:#x}/0xffffffff"
        any_ip = "0.0.0.0" if fam.version == 4 else "::"
        established = _rule(
            INBOUND,
            "-p tcp -m conntrack --ctstate RELATED,ESTABLISHED",
            "packet of a known connection skips the listener lookup",
            DIVERT,
        )
        mangle_rules = [
            _rule(DIVERT, "", "mark for local delivery", f"MARK --set-xmark {mark}"),
            _rule(DIVERT, "", "deliver to the proxy socket", "ACCEPT"),
            _rule(INBOUND, "-i lo", "loopback is for the nat rules, never TPROXY", "RETURN"),
            *_inbound(config, TPROXY, before=(established,)),
            _rule(
                TPROXY,
                f"! -d {fam.loopback} -p tcp",
                "to the inbound listener",
                f"TPROXY --on-port {config.inbound_port} --on-ip {any_ip} --tproxy-mark {mark}",
            ),
        ]
        tables["mangle"] = ([DIVERT, INBOUND, TPROXY], mangle_rules)
    return tables


def _family_text(config: CaptureConfig, fam: _Family, installed: Installed) -> str:
    wanted = _wanted_jumps(config)
    tables = _tables(config, fam)
    present: Counter[tuple[str, str, str]] = Counter()
    deletes: dict[str, list[str]] = {}
    for table, spec in installed.jumps:
        key = (table, spec.split()[0], _target(spec))
        present[key] += 1
        if key not in wanted or present[key] > 1:
            deletes.setdefault(table, []).append(f"-D {spec}")
    leftover = {t for t, _ in installed.chains} | set(deletes)
    lines: list[str] = []
    for table in ("nat", "mangle"):
        if table not in tables and table not in leftover:
            continue
        chains, rules = tables.get(table, ([], []))
        stale = sorted(c for t, c in installed.chains if t == table and c not in chains)
        lines.append(f"*{table}")
        lines += [f":{c} - [0:0]" for c in (*chains, *stale)]
        lines += deletes.get(table, [])
        lines += rules
        lines += [f"-A {s}" for k, s in wanted.items() if k[0] == table and not present[k]]
        lines += [f"-X {c}" for c in stale]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def families(net: NetInfo) -> tuple[bool, bool]:
    """IPv6 only where the pod has it; IPv4 unless the pod is IPv6-only (fail closed)."""
    return bool(net.ipv4) or not net.ipv6, bool(net.ipv6)


def render(
    config: CaptureConfig, net: NetInfo, *, installed: Mapping[int, Installed] | None = None
) -> RuleSets:
    """The restore text per family; ``installed`` (by IP version) is what the namespace holds."""
    have = installed or {}
    v4, v6 = families(net)
    return RuleSets(
        ipv4=_family_text(config, _V4, have.get(4, NOTHING)) if v4 else None,
        ipv6=_family_text(config, _V6, have.get(6, NOTHING)) if v6 else None,
    )


def wanted(config: CaptureConfig, version: int) -> Installed:
    """What a family holds after a successful apply, for verification against ``-save``."""
    fam = _V4 if version == 4 else _V6
    text = _family_text(config, fam, NOTHING)
    return parse_save(text)


def _cleanup_text(installed: Installed) -> str | None:
    if installed.empty:
        return None
    lines: list[str] = []
    for table in sorted({t for t, _ in installed.chains} | {t for t, _ in installed.jumps}):
        chains = sorted(c for t, c in installed.chains if t == table)
        lines.append(f"*{table}")
        lines += [f":{c} - [0:0]" for c in chains]
        lines += [f"-D {spec}" for t, spec in installed.jumps if t == table]
        lines += [f"-X {c}" for c in chains]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def render_cleanup(installed: Mapping[int, Installed]) -> RuleSets:
    """Restore text that removes exactly our jumps and chains, nothing else."""
    return RuleSets(
        ipv4=_cleanup_text(installed.get(4, NOTHING)),
        ipv6=_cleanup_text(installed.get(6, NOTHING)),
    )
