"""Address discovery from /proc: the pod's own addresses, without pyroute2's start-up cost."""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable

import pytest

from initcontainer.netlink import _ipv4_addresses, _ipv6_addresses
from injector.sandbox import netns
from injector.sandbox.netns import Netns

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
"""


def test_local_ipv4_addresses_come_from_the_fib_trie_without_loopback() -> None:
    assert _ipv4_addresses(FIB_TRIE) == (ipaddress.IPv4Address("198.18.0.2"),)


def test_link_local_and_loopback_ipv6_do_not_make_a_pod_dual_stack() -> None:
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
