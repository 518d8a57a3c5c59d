"""``meshinject-init``: install (or remove) the pod's traffic capture, then exit.

Exit codes: 0 done, 2 a flag or variable has a bad value (the message names both), 1 iptables or
netlink refused (the message carries their error). Start-up is kept light on purpose (the init
container delays every pod start): only the config, rules and iptables modules load on the
default path; pyroute2 only when TPROXY routing must be set or removed.

In a pod with IPv6 it also assigns ``::6/128`` to ``lo``: the proxy's inbound passthrough binds
it as its IPv6 source, and unlike 127.0.0.6 nothing makes it local by default. ``--cleanup``
takes it off again.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Mapping, Sequence

from initcontainer import netlink
from initcontainer.config import (
    INBOUND_SOURCE6,
    VALUE_FLAGS,
    CaptureConfig,
    ConfigError,
    env_name,
    parse,
)
from initcontainer.iptables import (
    Applied,
    ApplyError,
    Tools,
    apply,
    cleanup_candidates,
    detect,
    remove,
)
from initcontainer.rules import Installed, NetInfo, RuleSets, families, render

USAGE = (
    "usage: meshinject-init [--dry-run] [--cleanup] "
    + " ".join(f"[--{f}=VALUE]" for f in VALUE_FLAGS)
    + f"\nevery flag can also be set as an environment variable, e.g. {env_name('inbound-port')}"
)


def log(message: str) -> None:
    print(f"mesh-init: {message}", file=sys.stderr, flush=True)


def _describe(config: CaptureConfig, net: NetInfo, sets: RuleSets) -> str:
    covered = [f"IPv{v}" for v, text in ((4, sets.ipv4), (6, sets.ipv6)) if text is not None]
    return (
        f"{config.interception_mode} capture for {'+'.join(covered) or 'no family'} "
        f"(pod addresses: {', '.join(map(str, (*net.ipv4, *net.ipv6))) or 'none'}); "
        f"outbound -> :{config.outbound_port}, inbound -> :{config.inbound_port}, "
        f"uid {config.proxy_uid} / gid {config.proxy_gid} not captured"
        + (f"; {INBOUND_SOURCE6}/128 on lo (inbound passthrough)" if sets.ipv6 is not None else "")
    )


def _tproxy_versions(before: Mapping[int, Installed]) -> set[int]:
    """Families where a TPROXY run left mangle chains, hence policy routing to remove."""
    return {v for v, inst in before.items() if any(t == "mangle" for t, _ in inst.chains)}


def _cleanup(candidates: list[Tools]) -> str:
    """Remove our chains and jumps wherever they are, and the TPROXY routing if it was set."""
    routed: set[int] = set()
    removed = []
    for tools in candidates:
        # with several candidates (auto), one whose -save fails cannot be holding our rules
        here = remove(tools, tolerate=len(candidates) > 1)
        routed |= _tproxy_versions(here)
        removed += [
            f"{len(inst.chains)} IPv{v} chain{'' if len(inst.chains) == 1 else 's'} from "
            f"{tools.backend}"
            for v, inst in here.items()
            if not inst.empty
        ]
    if routed:
        netlink.remove_tproxy_routing(routed)
    if netlink.remove_inbound_source6():
        removed.append(f"{INBOUND_SOURCE6}/128 from lo")
    return "removed " + (", ".join(removed) or "nothing (no meshinject rules here)")


def _install(tools: Tools, config: CaptureConfig, net: NetInfo) -> Applied:
    """The rules, and in TPROXY mode the policy routing, set up in a forked child meanwhile;
    first, where the pod has IPv6, the inbound passthrough's source address."""
    routing = None
    v4, v6 = families(net)
    versions = {v for v, wanted in ((4, v4), (6, v6)) if wanted}
    added_source = v6 and netlink.add_inbound_source6()
    if config.interception_mode == "TPROXY":
        routing = netlink.fork(netlink.ensure_tproxy_routing, versions)
    try:
        applied = apply(tools, config, net)
    except ApplyError:
        # nothing half-applied: take back the routing pieces and the address this run added
        if routing is not None:
            with contextlib.suppress(OSError):
                netlink.remove_tproxy_routing(versions, only=routing.wait())
        if added_source:
            with contextlib.suppress(OSError):
                netlink.remove_inbound_source6()
        raise
    if routing is not None:
        routing.wait()
    stale_routing = _tproxy_versions(applied.before)
    if config.interception_mode != "TPROXY" and stale_routing:
        netlink.remove_tproxy_routing(stale_routing)
    return applied


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    started = time.monotonic()
    try:
        config, options = parse(args, os.environ)
    except ConfigError as err:
        log(f"bad configuration: {err}")
        return 2
    net = netlink.discover()
    if options.dry_run:
        sets = render(config, net)
        for version, text in ((4, sets.ipv4), (6, sets.ipv6)):
            if text is not None:
                print(f"# IPv{version}: iptables-restore --noflush\n{text}", end="")
        return 0
    try:
        if options.cleanup:
            log(_cleanup(cleanup_candidates(options.backend)))
            return 0
        tools = detect(options.backend)
        applied = _install(tools, config, net)
    except ApplyError as err:
        log(f"failed: {err}")
        return 1
    except netlink.AddressError as err:
        log(f"failed: {err}")
        return 1
    except OSError as err:  # netlink refused (pyroute2 raises OSError subclasses)
        log(f"failed to set TPROXY policy routing: {err}")
        return 1
    elapsed = (time.monotonic() - started) * 1000
    log(f"{_describe(config, net, applied.sets)}; {tools.backend} backend; {elapsed:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
