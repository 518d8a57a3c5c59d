"""mesh-init against the real kernel, both backends, each test in fresh namespaces."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from injector.sandbox import netns
from injector.sandbox.netns import Netns
from tests.support.kernel import BACKENDS, mesh_init, save, without_empty_tables

pytestmark = pytest.mark.netns

MakeNs = Callable[[str], Netns]
FOREIGN = (
    "*nat\n:KUBE-TEST - [0:0]\n-A OUTPUT -d 198.18.9.9/32 -j KUBE-TEST\n"
    "-A KUBE-TEST -j RETURN\nCOMMIT\n"
    "*mangle\n-A PREROUTING -p udp -j RETURN\nCOMMIT\n"
    "*filter\n-A INPUT -p udp --dport 9 -j DROP\nCOMMIT\n"
)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _pod(make_netns: MakeNs) -> Netns:
    pod, client = make_netns("pod"), make_netns("cli")
    netns.veth(pod, client, a_addr="198.18.0.2/24", b_addr="198.18.0.1/24")
    return pod


def test_a_second_run_leaves_identical_rules(make_netns: MakeNs, backend: str) -> None:
    pod = _pod(make_netns)
    log = mesh_init(pod, f"--backend={backend}", "--exclude-inbound-ports=22")
    assert "REDIRECT capture for IPv4" in log and "198.18.0.2" in log
    first = save(pod, backend)
    assert first.count("-j MESH_OUTPUT") == 1 and first.count("-j MESH_INBOUND") == 2
    mesh_init(pod, f"--backend={backend}", "--exclude-inbound-ports=22")
    assert save(pod, backend) == first


def test_the_backend_is_detected_and_sticks_to_the_one_holding_rules(
    make_netns: MakeNs, backend: str
) -> None:
    pod = _pod(make_netns)
    mesh_init(pod, f"--backend={backend}")
    log = mesh_init(pod)  # auto: legacy if legacy holds rules, else nft
    assert f"{backend} backend" in log
    other = "legacy" if backend == "nft" else "nft"
    assert "MESH_" not in save(pod, other)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (
            ["--exclude-inbound-ports=22"],
            ["--include-outbound-cidrs=198.18.0.0/15", "--proxy-uid=2000"],
        ),
        ([], ["--interception-mode=TPROXY"]),
        (["--interception-mode=TPROXY"], ["--include-inbound-ports=8080"]),
    ],
)
def test_a_run_with_another_config_replaces_the_old_rules(
    make_netns: MakeNs, backend: str, first: list[str], second: list[str]
) -> None:
    switched, fresh = _pod(make_netns), _pod(make_netns)
    mesh_init(switched, f"--backend={backend}", *first)
    mesh_init(switched, f"--backend={backend}", *second)
    mesh_init(fresh, f"--backend={backend}", *second)
    # a mode switch may leave an empty mangle table behind: the same as none for traffic
    assert without_empty_tables(save(switched, backend)) == without_empty_tables(
        save(fresh, backend)
    )
    for version in ("-4", "-6"):
        assert (
            switched.run(["ip", version, "rule"]).stdout
            == fresh.run(["ip", version, "rule"]).stdout
        )


@pytest.mark.parametrize("mode", ["REDIRECT", "TPROXY"])
def test_cleanup_restores_a_namespace_that_already_had_rules(
    make_netns: MakeNs, backend: str, mode: str
) -> None:
    pod = _pod(make_netns)
    pod.run([f"iptables-{backend}-restore", "-w", "5", "--noflush"], input_text=FOREIGN)
    before, rules_before = save(pod, backend), pod.run(["ip", "rule"]).stdout
    mesh_init(pod, f"--backend={backend}", f"--interception-mode={mode}")
    assert save(pod, backend) != before
    log = mesh_init(pod, "--cleanup", f"--backend={backend}")
    assert "removed" in log
    assert save(pod, backend) == before
    assert pod.run(["ip", "rule"]).stdout == rules_before


def test_cleanup_of_a_pristine_namespace_leaves_only_empty_tables(
    make_netns: MakeNs, backend: str
) -> None:
    pod = _pod(make_netns)
    before = save(pod, backend)
    mesh_init(pod, f"--backend={backend}", "--interception-mode=TPROXY")
    mesh_init(pod, "--cleanup", f"--backend={backend}")
    mesh_init(pod, "--cleanup", f"--backend={backend}")  # idempotent
    assert without_empty_tables(save(pod, backend)) == without_empty_tables(before) == ""


def _fake_tools(tmp_path: Path, failing: dict[str, str]) -> dict[str, str]:
    """A PATH where the named tools fail with the given stderr, everything else real."""
    for name, message in failing.items():
        script = tmp_path / name
        script.write_text(f"#!/bin/sh\ncat >/dev/null\necho '{message}' >&2\nexit 1\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{tmp_path}:{os.environ['PATH']}"}


@pytest.mark.parametrize("mode", ["REDIRECT", "TPROXY"])
def test_an_iptables_failure_exits_1_with_its_error_and_changes_nothing(
    make_netns: MakeNs, tmp_path: Path, mode: str
) -> None:
    pod = _pod(make_netns)
    before = (
        save(pod, "nft"),
        pod.run(["ip", "rule"]).stdout,
        pod.run(["ip", "-6", "rule"]).stdout,
    )
    env = _fake_tools(tmp_path, {"iptables-nft-restore": "iptables-restore: line 7 failed"})
    out = mesh_init(pod, "--backend=nft", f"--interception-mode={mode}", env=env, check=False)
    assert out.startswith("1\n") and "line 7 failed" in out
    after = (save(pod, "nft"), pod.run(["ip", "rule"]).stdout, pod.run(["ip", "-6", "rule"]).stdout)
    assert after == before
    assert "local" not in pod.run(["ip", "route", "show", "table", "133"], check=False).stdout


def test_a_node_without_ip6tables_nat_is_fine_for_a_pod_without_ipv6(
    make_netns: MakeNs, tmp_path: Path
) -> None:
    pod = _pod(make_netns)
    env = _fake_tools(
        tmp_path,
        {
            "ip6tables-nft-restore": "can't initialize ip6tables table `nat'",
            "ip6tables-nft-save": "can't initialize ip6tables table `nat'",
        },
    )
    assert "IPv4" in mesh_init(pod, "--backend=nft", env=env)
    mesh_init(pod, "--backend=nft", "--cleanup", env=env)
    assert "MESH_" not in save(pod, "nft")


def test_an_ipv6_failure_rolls_the_ipv4_rules_back(make_netns: MakeNs, backend: str) -> None:
    """Run apply in the namespace with a fake IPv6 address and an ip6tables that refuses."""
    pod = _pod(make_netns)
    mesh_init(pod, f"--backend={backend}", "--exclude-inbound-ports=22")
    before = save(pod, backend)
    script = (
        "import ipaddress, sys\n"
        "from initcontainer import iptables, config, rules\n"
        "real_restore, real_save = iptables.Tools.restore, iptables.Tools.save\n"
        "def restore(self, version, text, **kw):\n"
        "    if version == 6:\n"
        "        raise iptables.ApplyError('ip6tables-restore: no NAT here')\n"
        "    return real_restore(self, version, text, **kw)\n"
        "iptables.Tools.restore = restore\n"
        "iptables.Tools.save = lambda self, v: '' if v == 6 else real_save(self, v)\n"
        "net = rules.NetInfo(ipv4=(ipaddress.IPv4Address('198.18.0.2'),),\n"
        "                    ipv6=(ipaddress.IPv6Address('2001:2::2'),))\n"
        "cfg = config.parse(['--interception-mode=TPROXY'])[0]\n"
        "try:\n"
        f"    iptables.apply(iptables.detect({backend!r}), cfg, net)\n"
        "except iptables.ApplyError as err:\n"
        "    print(err)\n"
        "    sys.exit(3)\n"
    )
    proc = pod.run([sys.executable, "-c", script], check=False)
    assert proc.returncode == 3, proc.stderr
    assert "IPv6" in proc.stdout and "no NAT here" in proc.stdout
    assert without_empty_tables(save(pod, backend)) == without_empty_tables(before)


IPV6_RUN = """
import ipaddress, sys
from initcontainer import config, iptables, rules
tools = iptables.detect({backend!r})
net = rules.NetInfo(ipv4=(ipaddress.IPv4Address("198.18.0.2"),),
                    ipv6=(ipaddress.IPv6Address("2001:2::2"),))
if sys.argv[1] == "apply":
    iptables.apply(tools, config.parse(sys.argv[2:])[0], net)
else:
    iptables.remove(tools)
"""


@pytest.mark.parametrize("mode", ["REDIRECT", "TPROXY"])
def test_ipv6_rules_apply_rerun_and_clean_up_on_the_real_kernel(
    make_netns: MakeNs, backend: str, mode: str
) -> None:
    """The IPv6 address is pretended (test hosts get 198.18.0.0/15 only); ip6tables is real."""
    pod = _pod(make_netns)
    before = save(pod, backend, 6)
    script = IPV6_RUN.format(backend=backend)
    args = ["--exclude-outbound-cidrs=fd00::/8,10.0.0.0/8", f"--interception-mode={mode}"]
    pod.run([sys.executable, "-c", script, "apply", *args])
    first = save(pod, backend, 6)
    assert "-s ::6/128 -o lo" in first and "-d fd00::/8" in first and "10.0.0.0" not in first
    pod.run([sys.executable, "-c", script, "apply", *args])
    assert save(pod, backend, 6) == first
    pod.run([sys.executable, "-c", script, "remove"])
    assert without_empty_tables(save(pod, backend, 6)) == without_empty_tables(before)
    assert "MESH_" not in save(pod, backend, 4)


def test_an_auto_cleanup_finds_rules_in_whichever_backend_holds_them(make_netns: MakeNs) -> None:
    pod = _pod(make_netns)
    mesh_init(pod, "--backend=nft")
    pod.run(
        ["iptables-legacy-restore", "-w", "5", "--noflush"], input_text=FOREIGN
    )  # auto now says legacy
    log = mesh_init(pod, "--cleanup")
    assert "IPv4 chains from nft" in log
    assert "MESH_" not in save(pod, "nft") and "KUBE-TEST" in save(pod, "legacy")
    assert "nothing" in mesh_init(pod, "--cleanup")
