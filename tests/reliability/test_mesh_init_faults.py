"""mesh-init given bad input, and failing halfway: the namespace keeps exactly what it had.

The real ``meshinject-init`` in a namespace this test creates (198.18.0.0/15, and an IPv6
address from 2001:2::/48, the IPv6 benchmarking range, so the pod is dual-stack). The state
compared before and after is everything mesh-init may touch: ``iptables-save`` and
``ip6tables-save`` of both backends, the whole nftables ruleset, the policy routing and the
addresses on ``lo``.

Two realistic halfway failures, after IPv4 is applied and IPv6 is refused:
- nft: another agent created a base chain ``OUTPUT`` of type filter in the ``ip6 nat`` table
  with ``nft``; the kernel refuses ip6tables-nft-restore's chain (Operation not supported);
- legacy: a node without the ``ip6table_nat`` module, as its ip6tables-legacy-restore reports
  it (a binary earlier on PATH, the way the capture tests fake a tool; -save stays real).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from initcontainer.config import VALUE_FLAGS, env_name
from injector.sandbox import netns
from tests.support.kernel import without_empty_tables

pytestmark = pytest.mark.netns

MESH_INIT = str(Path(sys.executable).parent / "meshinject-init")
POD_V6 = "2001:2::2/64"
FOREIGN_V4 = (
    "*nat\n:KUBE-TEST - [0:0]\n-A OUTPUT -d 198.18.9.9/32 -j KUBE-TEST\n"
    "-A KUBE-TEST -j RETURN\nCOMMIT\n*filter\n-A INPUT -p udp --dport 9 -j DROP\nCOMMIT\n"
)
PORTS = ["0", "65536", "-1", "http", "80-", "90-80", "1-70000", "80,x", "\u00b2", "9" * 5000]
BAD: dict[str, list[str]] = {
    "outbound-port": ["0", "65536", "-1", "http", "", "\u00b2", "9" * 5000],
    "inbound-port": ["0", "65536", "15006.0", "0x3a9e", "9" * 5000],
    "proxy-uid": ["-1", "root", "4294967295", "1337,1338", "9" * 5000],
    "proxy-gid": ["-1", "wheel", "9" * 5000],
    "include-inbound-ports": PORTS,
    "exclude-inbound-ports": PORTS,
    "include-outbound-ports": PORTS,
    "exclude-outbound-ports": PORTS,
    "include-outbound-cidrs": ["10.0.0.1/8", "300.0.0.0/8", "fd00::/129", "any", "10.0.0.0/8,x"],
    "exclude-outbound-cidrs": ["10.0.0.1/8", "1.2.3.4/33", "::1/200", "198.18.0.0/15;ls"],
    "interception-mode": ["", "REDIRECT2", "TPROXY,REDIRECT", "nat", "\u0130PTABLES"],
    "backend": ["", "nftables", "iptables", "auto,nft"],
}
CASES: list[tuple[list[str], dict[str, str], str, str]] = [
    *[([f"--{f}={v}"], {}, f"--{f}", v) for f, values in BAD.items() for v in values],
    *[([], {env_name(f): v}, env_name(f), v) for f, values in BAD.items() for v in values[:3]],
    (["--inbound-prot=15006"], {}, "--inbound-prot", "15006"),
    (["--inbound-port"], {}, "--inbound-port", ""),
    (["--dry-run=maybe"], {}, "--dry-run", "maybe"),
    (["--cleanup=later"], {}, "--cleanup", "later"),
    ([], {"MESH_INIT_DRY_RUN": "perhaps"}, "MESH_INIT_DRY_RUN", "perhaps"),
    (["15001"], {}, "unexpected argument", "15001"),
    (["-x"], {}, "unexpected argument", "-x"),
]


def state(ns: netns.Netns) -> str:
    """Everything mesh-init may change, without counters and timestamps."""
    parts = []
    for tool in ("iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save",
                 "ip6tables-legacy-save"):
        text = ns.run([tool]).stdout
        lines = [re.sub(r"\[\d+:\d+\]", "[0:0]", x) for x in text.splitlines()
                 if not x.startswith("#")]
        # a table once touched stays listed (legacy), empty: the same as none for traffic
        parts.append(f"## {tool}\n" + without_empty_tables("\n".join(lines) + "\n"))
    if shutil.which("nft"):
        parts.append("## nft\n" + nft_tables(ns.run(["nft", "list", "ruleset"]).stdout))
    # the inbound passthrough's IPv6 source (::6 on lo) is ours too
    parts.append("## lo\n" + ns.run(["ip", "-6", "addr", "show", "dev", "lo"]).stdout)
    for family in ("-4", "-6"):
        parts.append(f"## ip {family} rule\n" + ns.run(["ip", family, "rule"]).stdout)
        routes = ns.run(["ip", family, "route", "show", "table", "all"]).stdout.splitlines()
        # the kernel's own (link-local appears when the link's DAD ends) are not ours to keep
        parts.append(f"## ip {family} route\n" + "\n".join(
            r for r in routes if "proto kernel" not in r))
    return "\n".join(parts)


def nft_tables(ruleset: str) -> str:
    """The nft ruleset as sorted tables of sorted chains. A rollback restores whole tables: a
    table is re-created (it lists elsewhere, its chains in another order) and gets every
    built-in chain, empty with policy accept, which is the same as absent for traffic."""
    out = []
    for header, body in re.findall(r"^(table [^\n]*)\{\n(.*?)^\}$", ruleset, re.S | re.M):
        chains = re.findall(r"^\t(chain .*?^\t\})$", body, re.S | re.M)
        kept = sorted(c for c in chains if not re.fullmatch(r"chain \S+ \{\n\t\ttype [^\n]*"
                                                            r"policy accept;\n\t\}", c))
        out.append(header + "\n" + "\n".join(kept))
    return "\n".join(sorted(out))


def dual_stack_pod(role: str) -> tuple[netns.Netns, netns.Netns]:
    pod, peer = netns.create(role), netns.create(role + "peer")
    netns.veth(pod, peer, a_addr="198.18.6.2/24", b_addr="198.18.6.1/24")
    pod.run(["ip", "-6", "addr", "add", POD_V6, "dev", "eth0", "nodad"])
    return pod, peer


def run_init(ns: netns.Netns, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    prefix = ["env", *(f"{k}={v}" for k, v in env.items())] if env else []
    proc = ns.run([*prefix, MESH_INIT, *args], check=False)
    return proc.returncode, proc.stderr


@pytest.fixture(scope="module")
def pod() -> Iterator[netns.Netns]:
    """A dual-stack pod already captured by a good run, with someone else's rules beside."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    netns.cleanup_stale()
    made = dual_stack_pod("badin")
    try:
        ns = made[0]
        ns.run(["iptables-nft-restore", "--noflush"], input_text=FOREIGN_V4)
        code, log = run_init(ns, "--backend=nft", "--exclude-inbound-ports=22")
        assert code == 0 and "IPv4+IPv6" in log, log
        yield ns
    finally:
        for ns in made:
            netns.delete(ns)


@pytest.fixture(scope="module")
def before(pod: netns.Netns) -> str:
    return state(pod)


def test_every_value_flag_has_bad_cases() -> None:
    assert set(BAD) == set(VALUE_FLAGS)


@pytest.mark.parametrize(("argv", "env", "named", "value"), CASES,
                         ids=[f"{i}-{c[2]}" for i, c in enumerate(CASES)])
def test_bad_input_exits_2_naming_it_and_leaves_the_rules_untouched(
    pod: netns.Netns, before: str, argv: list[str], env: dict[str, str], named: str, value: str
) -> None:
    code, log = run_init(pod, *argv, env=env)
    assert code == 2, log
    assert named in log and value[:60] in log, log[:300]
    assert "Traceback" not in log
    assert state(pod) == before


def _failing_tool(where: Path, name: str, message: str) -> dict[str, str]:
    script = where / name
    script.write_text(f"#!/bin/sh\ncat >/dev/null\necho \"{message}\" >&2\nexit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{where}:{os.environ['PATH']}"}


@pytest.fixture
def fresh() -> Iterator[netns.Netns]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    made = dual_stack_pod("half")
    try:
        yield made[0]
    finally:
        for ns in made:
            netns.delete(ns)


@pytest.mark.parametrize("mode", ["REDIRECT", "TPROXY"])
def test_nft_refusing_ipv6_leaves_neither_family_changed(fresh: netns.Netns, mode: str) -> None:
    if shutil.which("nft") is None:
        pytest.skip("needs nft (Debian package nftables) to make the foreign chain")
    fresh.run(["iptables-nft-restore", "--noflush"], input_text=FOREIGN_V4)
    fresh.run(["nft", "add table ip6 nat"])
    fresh.run(["nft", "add chain ip6 nat OUTPUT { type filter hook output priority 0; }"])
    start = state(fresh)
    code, log = run_init(fresh, "--backend=nft", f"--interception-mode={mode}")
    assert code == 1, log
    assert "IPv6" in log and "Operation not supported" in log, log
    assert state(fresh) == start


@pytest.mark.parametrize(("first", "second"), [
    (None, "REDIRECT"), (None, "TPROXY"), ("REDIRECT", "TPROXY"), ("TPROXY", "REDIRECT"),
])
def test_legacy_without_ipv6_nat_keeps_what_the_namespace_had(
    fresh: netns.Netns, tmp_path: Path, first: str | None, second: str
) -> None:
    """A node that lost ip6table_nat between two runs: the second run changes nothing."""
    fresh.run(["iptables-legacy-restore", "--noflush"], input_text=FOREIGN_V4)
    if first is not None:
        code, log = run_init(fresh, "--backend=legacy", f"--interception-mode={first}",
                             "--exclude-inbound-ports=22")
        assert code == 0 and "IPv4+IPv6" in log, log
    start = state(fresh)
    env = _failing_tool(tmp_path, "ip6tables-legacy-restore",
                        "ip6tables-restore v1.8.9 (legacy): ip6tables-restore: unable to "
                        "initialize table 'nat'")
    code, log = run_init(fresh, "--backend=legacy", f"--interception-mode={second}",
                         "--exclude-outbound-ports=5432", env=env)
    assert code == 1, log
    assert "IPv6" in log and "unable to initialize table 'nat'" in log, log
    assert state(fresh) == start
