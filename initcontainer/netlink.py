"""What the pod's network namespace has, the inbound passthrough's IPv6 source, and the policy
routing TPROXY needs.

The only module that imports pyroute2, and only inside the functions that need it: ``import
pyroute2`` costs 130-190 ms here, most of mesh-init's 150 ms budget. Address discovery does not
need it: the kernel already lists the namespace's local IPv4 addresses in ``/proc/net/fib_trie``
and its IPv6 addresses in ``/proc/net/if_inet6`` (both per network namespace), which read in well
under a millisecond. Nor does the one address mesh-init assigns (``::6/128`` on ``lo``, the
proxy's inbound passthrough source in a pod with IPv6): that is a single rtnetlink request of
40 bytes, sent on a plain socket in well under a millisecond (the init image has no ``ip``).
TPROXY's fwmark rule and ``local`` route are netlink objects, so that path pays for pyroute2;
REDIRECT mode (the default) never does.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import struct
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from initcontainer.config import INBOUND_SOURCE6
from initcontainer.rules import ROUTE_TABLE, TPROXY_MARK, NetInfo

if TYPE_CHECKING:  # never at run time (see _pyroute2); it tells the import contracts who loads it
    import pyroute2.iproute.linux  # noqa: F401

PROC_NET = "/proc/net"  # a plain string: pathlib alone costs several ms of start-up
_LINK_OR_HOST_SCOPE = {0x10, 0x20}  # if_inet6 scope: host (::1) and link (fe80::/10)


def _ipv4_addresses(fib_trie: str) -> tuple[ipaddress.IPv4Address, ...]:
    """Local /32 entries of the FIB trie, without loopback: ``|-- A`` then ``/32 host LOCAL``."""
    found: set[ipaddress.IPv4Address] = set()
    last = ""
    for line in fib_trie.splitlines():
        text = line.strip()
        if text.startswith("|-- "):
            last = text[4:]
        elif text == "/32 host LOCAL" and last:
            address = ipaddress.IPv4Address(last)
            if not address.is_loopback:
                found.add(address)
    return tuple(sorted(found))


def _ipv6_addresses(if_inet6: str) -> tuple[ipaddress.IPv6Address, ...]:
    """Global (and site/ULA) addresses; link-local ones and anything on ``lo`` (``::1``, and
    the ``::6`` a previous run assigned) do not make a pod dual-stack."""
    found: set[ipaddress.IPv6Address] = set()
    for line in if_inet6.splitlines():
        fields = line.split()
        on_lo = len(fields) >= 6 and fields[5] == "lo"
        if len(fields) >= 4 and int(fields[3], 16) not in _LINK_OR_HOST_SCOPE and not on_lo:
            found.add(ipaddress.IPv6Address(int(fields[0], 16)))
    return tuple(sorted(found))


def _read(name: str) -> str:
    try:
        with open(f"{PROC_NET}/{name}", encoding="ascii") as f:
            return f.read()
    except OSError:  # no IPv6 in this kernel, or no /proc: the family is simply absent
        return ""


def discover() -> NetInfo:
    """The pod's own addresses per family, from /proc (no netlink, no pyroute2)."""
    return NetInfo(ipv4=_ipv4_addresses(_read("fib_trie")), ipv6=_ipv6_addresses(_read("if_inet6")))


# rtnetlink, as far as one address on lo needs it (linux/netlink.h, linux/if_addr.h)
_RTM_NEWADDR, _RTM_DELADDR, _NLMSG_ERROR = 20, 21, 2
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_EXCL, _NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
_IFA_ADDRESS = 1
_IFA_F_NODAD, _IFA_F_PERMANENT = 0x02, 0x80
_AF_INET6 = 10


def address_request(kind: int, flags: int, address: str, *, prefixlen: int, ifindex: int) -> bytes:
    """One RTM_NEWADDR/RTM_DELADDR message: nlmsghdr, ifaddrmsg, an IFA_ADDRESS attribute."""
    packed = ipaddress.IPv6Address(address).packed
    attribute = struct.pack("=HH", 4 + len(packed), _IFA_ADDRESS) + packed
    body = struct.pack("=BBBBI", _AF_INET6, prefixlen, _IFA_F_NODAD | _IFA_F_PERMANENT, 0,
                       ifindex) + attribute
    return struct.pack("=IHHII", 16 + len(body), kind, flags | _NLM_F_REQUEST | _NLM_F_ACK,
                       1, 0) + body


class AddressError(OSError):
    """The kernel refused to add or remove the inbound passthrough's address; says which."""


def _on_lo(kind: int, flags: int) -> int:
    """Send one request about ``::6/128`` on lo; the errno of the kernel's answer (0: done)."""
    import socket  # only where the address is wanted or removed

    request = address_request(kind, flags, INBOUND_SOURCE6, prefixlen=128,
                              ifindex=socket.if_nametoindex("lo"))
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(5)
        sock.bind((0, 0))
        sock.send(request)
        reply = sock.recv(65536)
    _, answer = struct.unpack_from("=IH", reply)
    if answer != _NLMSG_ERROR or len(reply) < 20:
        raise AddressError(f"rtnetlink answered message type {answer}, not an acknowledgement")
    error: int = struct.unpack_from("=i", reply, 16)[0]
    return -error


def add_inbound_source6() -> bool:
    """Assign ``::6/128`` to ``lo``, so the proxy's inbound passthrough can bind it; True when
    this run added it, False when it was there already. OSError when the kernel refuses."""
    code = _on_lo(_RTM_NEWADDR, _NLM_F_CREATE | _NLM_F_EXCL)
    if code == errno.EEXIST:
        return False
    if code:
        raise AddressError(f"cannot add {INBOUND_SOURCE6}/128 to lo: {os.strerror(code)}")
    return True


def remove_inbound_source6() -> bool:
    """Take ``::6/128`` off ``lo``; True when it was there. Absent (or no IPv6) is fine."""
    code = _on_lo(_RTM_DELADDR, 0)
    if code in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV, errno.EAFNOSUPPORT):
        return False
    if code:
        raise AddressError(f"cannot remove {INBOUND_SOURCE6}/128 from lo: {os.strerror(code)}")
    return True


def _families(versions: Collection[int]) -> list[tuple[int, int, str, str]]:
    """(IP version, address family, default destination, route scope) per wanted version."""
    import socket  # the TPROXY path only

    out: list[tuple[int, int, str, str]] = []
    if 4 in versions:
        out.append((4, socket.AF_INET, "0.0.0.0/0", "host"))
    if 6 in versions:
        out.append((6, socket.AF_INET6, "::/0", "universe"))
    return out


def _pyroute2() -> tuple[Any, type[Exception]]:
    """pyroute2's ``IPRoute`` and ``NetlinkError``, without running ``pyroute2/__init__.py``.

    That ``__init__`` imports every netlink family pyroute2 knows (conntrack, wireguard, nl80211,
    NDB, ...): about 160 modules and 120 ms of CPU here, against about 80 ms for the ~100 modules
    ``pyroute2.iproute.linux`` needs. So the package is registered hollow (its path only) while
    that one module loads, then unregistered: a later plain ``import pyroute2`` still runs the
    real ``__init__``. If pyroute2 is already imported, it is simply used.
    """
    import importlib
    import sys

    hollow = None
    if "pyroute2" not in sys.modules:
        import importlib.util
        import types

        spec = importlib.util.find_spec("pyroute2")
        if spec is not None and spec.submodule_search_locations is not None:
            hollow = types.ModuleType("pyroute2")
            hollow.__path__ = list(spec.submodule_search_locations)
            hollow.__spec__ = spec
            sys.modules["pyroute2"] = hollow
    try:
        iproute = importlib.import_module("pyroute2.iproute.linux").IPRoute
        error: type[Exception] = importlib.import_module("pyroute2.netlink.exceptions").NetlinkError
        return iproute, error
    finally:
        if hollow is not None and sys.modules.get("pyroute2") is hollow:
            del sys.modules["pyroute2"]


def _has_rule(ipr: Any, family: int) -> bool:
    for rule in ipr.get_rules(family=family):
        if rule.get_attr("FRA_FWMARK") == TPROXY_MARK and rule.get_attr("FRA_TABLE") == ROUTE_TABLE:
            return True
    return False


def _has_route(ipr: Any, family: int) -> bool:
    for route in ipr.get_routes(family=family, table=ROUTE_TABLE):
        if route.get_attr("RTA_TABLE") == ROUTE_TABLE and route["dst_len"] == 0:
            return True
    return False


def _local_route(family: int, default: str, scope: str, lo: int) -> dict[str, Any]:
    """``local default dev lo table 133``: one spec, so the delete matches what was added."""
    return {
        "table": ROUTE_TABLE,
        "family": family,
        "dst": default,
        "type": "local",
        "scope": scope,
        "oif": lo,
    }


def ensure_tproxy_routing(versions: Collection[int]) -> list[str]:
    """``ip rule fwmark 0x539 lookup 133`` and ``local default dev lo table 133``, per family.

    Idempotent: each piece is added only when absent. Returns the pieces it added (``rule4``,
    ``route6``...), so a run whose iptables part failed can take back exactly those.
    """
    iproute, _ = _pyroute2()
    added = []
    with iproute() as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        for version, family, default, scope in _families(versions):
            if not _has_route(ipr, family):
                ipr.route("add", **_local_route(family, default, scope, lo))
                added.append(f"route{version}")
            if not _has_rule(ipr, family):
                ipr.rule("add", fwmark=TPROXY_MARK, table=ROUTE_TABLE, family=family)
                added.append(f"rule{version}")
    return added


def remove_tproxy_routing(
    versions: Collection[int], *, only: Collection[str] | None = None
) -> None:
    """Undo :func:`ensure_tproxy_routing` (``only``: just these pieces). Absent pieces are fine."""
    iproute, netlink_error = _pyroute2()
    with iproute() as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        for version, family, default, scope in _families(versions):
            while (only is None or f"rule{version}" in only) and _has_rule(ipr, family):
                ipr.rule("del", fwmark=TPROXY_MARK, table=ROUTE_TABLE, family=family)
            if only is None or f"route{version}" in only:
                with contextlib.suppress(netlink_error):
                    ipr.route("del", **_local_route(family, default, scope, lo))


class Background:
    """A forked child doing netlink work while the parent runs iptables; see :func:`fork`."""

    def __init__(self, pid: int, result_fd: int) -> None:
        self.pid, self._fd = pid, result_fd

    def wait(self) -> list[str]:
        """Reap the child; its result, or OSError with its message if it failed."""
        with os.fdopen(self._fd, "rb") as pipe:
            message = pipe.read().decode(errors="replace")
        _, status = os.waitpid(self.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise OSError(message or f"netlink child exited with status {status}")
        return [piece for piece in message.split(",") if piece]


def fork(work: Callable[[set[int]], list[str]], versions: set[int]) -> Background:
    """Run ``work(versions)`` in a forked child, on the other core.

    Why: importing pyroute2 takes 80-190 ms of CPU, as long as all of mesh-init's iptables
    work; done in a child the two overlap instead of adding up (in a thread the import would
    hold the GIL). The child sends its result (or a failure's message) through a pipe, and
    says which through its exit code.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        os.close(read_fd)
        code = 0
        try:
            os.write(write_fd, ",".join(work(versions)).encode())
        except BaseException as err:  # everything is reported to the parent
            os.write(write_fd, f"{type(err).__name__}: {err}".encode())
            code = 1
        os._exit(code)
    os.close(write_fd)
    return Background(pid, read_fd)
