"""Goldens of the restore text: one file per config, both families, refreshed with one flag."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest

from initcontainer.config import CaptureConfig, parse
from initcontainer.rules import (
    Installed,
    NetInfo,
    RuleSets,
    parse_save,
    render,
    render_cleanup,
    wanted,
)

V4 = NetInfo(ipv4=(ipaddress.IPv4Address("198.18.0.2"),))
V6 = NetInfo(ipv6=(ipaddress.IPv6Address("2001:2::2"),))
DUAL = NetInfo(ipv4=V4.ipv4, ipv6=V6.ipv6)

CASES: dict[str, tuple[list[str], NetInfo]] = {
    "defaults": ([], V4),
    "exclude-inbound-ports": (["--exclude-inbound-ports=22,8000-8010"], V4),
    "include-inbound-ports": (["--include-inbound-ports=8080,9000:9100"], V4),
    "exclude-outbound-ports": (["--exclude-outbound-ports=5432,6379"], V4),
    "include-outbound-ports": (["--include-outbound-ports=80,443"], V4),
    "exclude-outbound-cidrs": (["--exclude-outbound-cidrs=10.96.0.0/12,169.254.169.254/32"], V4),
    "include-outbound-cidrs": (["--include-outbound-cidrs=10.0.0.0/8"], V4),
    "include-cidrs-and-ports": (
        ["--include-outbound-cidrs=10.0.0.0/8,172.16.0.0/12", "--include-outbound-ports=80,443"],
        V4,
    ),
    "custom-ports-and-ids": (
        ["--outbound-port=16001", "--inbound-port=16006", "--proxy-uid=2000", "--proxy-gid=3000"],
        V4,
    ),
    "tproxy": (["--interception-mode=TPROXY", "--exclude-inbound-ports=22"], V4),
    "ipv6-only": ([], V6),
    "dual-stack": (
        [
            "--exclude-outbound-cidrs=10.96.0.0/12,fd00:10:96::/112",
            "--include-outbound-cidrs=10.0.0.0/8,fd00::/8",
        ],
        DUAL,
    ),
    "dual-stack-tproxy": (["--interception-mode=TPROXY"], DUAL),
    "no-addresses-yet": ([], NetInfo()),
}


def _text(sets: RuleSets) -> str:
    parts = [f"# IPv{v}\n{t}" for v, t in ((4, sets.ipv4), (6, sets.ipv6)) if t is not None]
    return "".join(parts)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_restore_text_of_each_config_matches_its_golden(
    name: str, golden: Callable[[str, str], None]
) -> None:
    argv, net = CASES[name]
    config, _ = parse(argv)
    golden(f"initcontainer/{name}.rules", _text(render(config, net)))


def test_every_rule_carries_a_meshinject_comment() -> None:
    for argv, net in CASES.values():
        config, _ = parse(argv)
        for line in _text(render(config, net)).splitlines():
            if line.startswith("-A "):
                assert '-m comment --comment "meshinject: ' in line, line


def test_only_tcp_is_captured_so_dns_over_udp_is_never_touched() -> None:
    text = _text(render(CaptureConfig(), DUAL))
    jumps = [
        line
        for line in text.splitlines()
        if line.startswith("-A PREROUTING") or line.startswith("-A OUTPUT")
    ]
    assert jumps and all(" -p tcp " in line for line in jumps)
    assert "udp" not in text


def test_a_pod_without_ipv6_gets_no_ipv6_rules_and_an_ipv6_only_pod_no_ipv4_rules() -> None:
    assert render(CaptureConfig(), V4).ipv6 is None
    assert render(CaptureConfig(), V6).ipv4 is None


def test_a_rerun_writes_no_second_copy_of_the_jumps(golden: Callable[[str, str], None]) -> None:
    first = render(CaptureConfig(), DUAL)
    assert first.ipv4 is not None and first.ipv6 is not None
    again = render(
        CaptureConfig(), DUAL, installed={4: parse_save(first.ipv4), 6: parse_save(first.ipv6)}
    )
    assert again.ipv4 is not None
    assert "-A PREROUTING" not in again.ipv4 and "-A OUTPUT" not in again.ipv4
    golden("initcontainer/rerun.rules", _text(again))


def test_switching_to_tproxy_moves_the_inbound_jump_from_nat_to_mangle(
    golden: Callable[[str, str], None],
) -> None:
    before = render(CaptureConfig(), V4).ipv4
    assert before is not None
    tproxy, _ = parse(["--interception-mode=TPROXY"])
    after = render(tproxy, V4, installed={4: parse_save(before)}).ipv4
    assert after is not None
    assert (
        '-D PREROUTING -p tcp -m comment --comment "meshinject: inbound capture" -j MESH_INBOUND'
        in after
    )
    golden("initcontainer/switch-to-tproxy.rules", after)
    back = render(CaptureConfig(), V4, installed={4: parse_save(before + after)}).ipv4
    assert back is not None and "-X MESH_DIVERT" in back and "-X MESH_TPROXY" in back


def test_cleanup_removes_our_jumps_and_chains_and_nothing_else(
    golden: Callable[[str, str], None],
) -> None:
    config, _ = parse(["--interception-mode=TPROXY"])
    sets = render(config, DUAL)
    assert sets.ipv4 is not None and sets.ipv6 is not None
    foreign = "*nat\n:KUBE-X - [0:0]\n-A OUTPUT -j KUBE-X\nCOMMIT\n"
    cleanup = render_cleanup({4: parse_save(foreign + sets.ipv4), 6: parse_save(sets.ipv6)})
    assert cleanup.ipv4 is not None and "KUBE-X" not in cleanup.ipv4
    golden("initcontainer/cleanup.rules", _text(cleanup))
    assert render_cleanup({4: Installed(), 6: Installed()}) == RuleSets(None, None)


def test_wanted_counts_the_rules_of_each_chain() -> None:
    want = wanted(CaptureConfig(), 4)
    assert want.rules[("nat", "MESH_REDIRECT")] == 1
    assert {c for _, c in want.chains} == {
        "MESH_INBOUND",
        "MESH_IN_REDIRECT",
        "MESH_OUTPUT",
        "MESH_REDIRECT",
    }
    assert len(want.jumps) == 2
