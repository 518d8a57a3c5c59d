"""Address discovery from /proc: the pod's own addresses, without pyroute2's start-up cost."""

from __future__ import annotations

import ipaddress
import struct
import sys
from collections.abc import Callable

import pytest

from initcontainer.config import INBOUND_SOURCE6
from initcontainer.netlink import _ipv4_addresses, _ipv6_addresses, address_request
from injector.sandbox import netns
from injector.sandbox.netns import Netns
from tests.support.kernel import MESH_INIT

FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     +-- 127.0.0.0/8 2 0 2
           |-- 127.0.0.1
              /32 host LOCAL
     +-- 198.18.0.0/24 2 0 2
           |-- 198.18.0.0
              /24 link UNICAST
           |-- 198.18.0.2
              /32 host LOCAL
        |-- 198.18.0.255
           /32 link BROADCAST
Local:
           |-- 198.18.0.2
              /32 host LOCAL
"""
IF_INET6 = """fe8000000000000000fc00fffe000001 04 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
20010002000000000000000000000002 04 40 00 80     eth0
00000000000000000000000000000006 01 80 80 80       lo
"""
# the reproduction: in a namespace with only lo up, nothing can bind ::6
BIND_SOURCE6 = f"import socket; socket.socket(socket.AF_INET6).bind(({INBOUND_SOURCE6!r}, 0))"


def test_local_ipv4_addresses_come_from_the_fib_trie_without_loopback() -> None:
    assert _ipv4_addresses(FIB_TRIE) == (ipaddress.IPv4Address("198.18.0.2"),)


def test_link_local_and_loopback_ipv6_do_not_make_a_pod_dual_stack() -> None:
    """Nor the ::6 a previous run put on lo (its scope is 0x80, "IPv4-compatible")."""
    assert _ipv6_addresses(IF_INET6) == (ipaddress.IPv6Address("2001:2::2"),)
    assert _ipv6_addresses(IF_INET6.splitlines()[0]) == ()


@pytest.mark.netns
def test_discovery_in_a_real_pod_namespace_finds_its_veth_address(
    make_netns: Callable[[str], Netns],
) -> None:
    pod, peer = make_netns("pod"), make_netns("cli")
    netns.veth(pod, peer, a_addr="198.18.0.2/24", b_addr="198.18.0.1/24")
    code = "from initcontainer.netlink import discover; print(discover())"
    out = pod.run([sys.executable, "-c", code]).stdout
    assert "IPv4Address('198.18.0.2')" in out and "ipv6=()" in out


def test_the_address_request_is_one_rtnetlink_message_for_an_ipv6_address() -> None:
    message = address_request(20, 0x400, "::6", prefixlen=128, ifindex=1)
    length, kind, flags, _, _ = struct.unpack_from("=IHHII", message)
    assert (length, len(message), kind, flags) == (44, 44, 20, 0x405)  # +REQUEST +ACK
    assert struct.unpack_from("=BBBBI", message, 16) == (10, 128, 0x82, 0, 1)  # NODAD|PERMANENT
    assert struct.unpack_from("=HH", message, 24) == (20, 1)  # IFA_ADDRESS, 16 bytes
    assert message[28:] == ipaddress.IPv6Address("::6").packed


def _lo6(ns: Netns) -> list[str]:
    return [line.split()[1] for line in ns.run(["ip", "-6", "addr", "show", "dev", "lo"])
            .stdout.splitlines() if line.strip().startswith("inet6")]


@pytest.mark.netns
def test_mesh_init_assigns_the_ipv6_passthrough_source_once_and_cleanup_removes_it(
    make_netns: Callable[[str], Netns],
) -> None:
    pod, peer = make_netns("pod6"), make_netns("cli6")
    netns.veth(pod, peer, a_addr="198.18.0.2/24", b_addr="198.18.0.1/24",
               a_addr6="2001:2::2/64", b_addr6="2001:2::1/64")
    assert pod.run([sys.executable, "-c", BIND_SOURCE6], check=False).returncode != 0
    for _ in range(2):
        log = pod.run([MESH_INIT, "--backend=nft"]).stderr
        assert "IPv4+IPv6" in log and f"{INBOUND_SOURCE6}/128 on lo" in log, log
    assert sorted(_lo6(pod)) == ["::1/128", f"{INBOUND_SOURCE6}/128"]  # once, after two runs
    pod.run([sys.executable, "-c", BIND_SOURCE6])  # the proxy's inbound bind now works
    log = pod.run([MESH_INIT, "--backend=nft", "--cleanup"]).stderr
    assert f"{INBOUND_SOURCE6}/128 from lo" in log, log
    assert _lo6(pod) == ["::1/128"]
    assert "nothing" in pod.run([MESH_INIT, "--backend=nft", "--cleanup"]).stderr


@pytest.mark.netns
def test_a_pod_without_ipv6_gets_no_ipv6_source(make_netns: Callable[[str], Netns]) -> None:
    pod, peer = make_netns("pod4"), make_netns("cli4")
    netns.veth(pod, peer, a_addr="198.18.0.2/24", b_addr="198.18.0.1/24")
    log = pod.run([MESH_INIT, "--backend=nft"]).stderr
    assert "for IPv4 " in log and INBOUND_SOURCE6 not in log, log
    assert _lo6(pod) == ["::1/128"]
