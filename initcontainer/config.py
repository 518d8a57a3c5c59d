"""The capture settings: the one contract between the injector and mesh-init.

The injector renders a :class:`CaptureConfig` into the ``mesh-init`` container's args with
:func:`to_args`; ``meshinject-init`` parses them back with :func:`parse`. Both sides import this
module, and a round-trip test keeps them one contract. Every flag can also be given as an
environment variable (``MESH_INIT_`` + the flag's name in upper case, dashes as underscores), so
a platform can set defaults without touching the pod's args; a flag wins over its variable.

This module is pure: it parses strings and returns frozen values, and raises
:class:`ConfigError` naming the flag (or variable) and the value it could not accept.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
InterceptionMode = Literal["REDIRECT", "TPROXY"]
Backend = Literal["auto", "nft", "legacy"]

ENV_PREFIX = "MESH_INIT_"
ALL = "*"

# The numbers both sides of the seam must agree on, defined here once: the injector's contract
# (mesh.contract) takes them from this module, and mesh-init's rules use them directly.
OUTBOUND_PORT = 15001  # the proxy's outbound capture listener
INBOUND_PORT = 15006  # the proxy's inbound capture listener
PROXY_UID = PROXY_GID = 1337  # the proxy runs as these; its own traffic is never captured
READINESS_PORT = 15021  # the proxy's readiness listener, probed by the kubelet
PROMETHEUS_PORT = 15090  # the proxy's Prometheus listener, scraped from outside the pod
# the proxy's own listeners, never captured inbound: the kubelet's probes and Prometheus'
# scrapes must reach Envoy itself, not the inbound passthrough to the app
PROXY_OWN_PORTS = (READINESS_PORT, PROMETHEUS_PORT)
# the source of the proxy's inbound passthrough to the app, per family: mesh-init lets traffic
# from it back out uncaptured. All of 127/8 is local; ::6 is not, so mesh-init assigns it to lo
# in a pod that has IPv6 (and --cleanup removes it)
INBOUND_SOURCE4 = "127.0.0.6"
INBOUND_SOURCE6 = "::6"


class ConfigError(ValueError):
    """A flag or variable has a value mesh-init cannot use; the message names both."""

    def __init__(self, flag: str, value: str, why: str) -> None:
        super().__init__(f"invalid value {value!r} for {flag}: {why}")
        self.flag = flag
        self.value = value
        self.why = why


@dataclass(frozen=True, order=True)
class PortRange:
    """An inclusive range of TCP ports; a single port is a range of one."""

    first: int
    last: int

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}:{self.last}"


Ports = tuple[PortRange, ...]


@dataclass(frozen=True)
class CaptureConfig:
    """What to capture, and where to send it.

    ``None`` for an include list means "everything"; an empty exclude list means "nothing".
    """

    outbound_port: int = OUTBOUND_PORT
    inbound_port: int = INBOUND_PORT
    proxy_uid: int = PROXY_UID
    proxy_gid: int = PROXY_GID
    include_inbound_ports: Ports | None = None
    exclude_inbound_ports: Ports = ()
    include_outbound_ports: Ports | None = None
    exclude_outbound_ports: Ports = ()
    include_outbound_cidrs: tuple[IPNetwork, ...] | None = None
    exclude_outbound_cidrs: tuple[IPNetwork, ...] = ()
    interception_mode: InterceptionMode = "REDIRECT"

    def cidrs_for(self, version: int) -> tuple[tuple[IPNetwork, ...] | None, tuple[IPNetwork, ...]]:
        """The include and exclude CIDRs of one address family (4 or 6)."""
        include = self.include_outbound_cidrs
        if include is not None:
            include = tuple(n for n in include if n.version == version)
        exclude = tuple(n for n in self.exclude_outbound_cidrs if n.version == version)
        return include, exclude


@dataclass(frozen=True)
class RunOptions:
    """How this run of mesh-init behaves, as opposed to what it installs."""

    dry_run: bool = False
    cleanup: bool = False
    backend: Backend = "auto"


# --- parsing single values --------------------------------------------------------------------


def parse_port(flag: str, text: str) -> int:
    text = text.strip()
    # "²".isdigit() is True, int("²") is not; int() of over 4,300 digits raises ValueError
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise ConfigError(flag, text, "expected a port number from 1 to 65535")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ConfigError(flag, text, "expected a port number from 1 to 65535")
    return port


def parse_id(flag: str, text: str) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 20 or int(text) > 2**32 - 2:
        raise ConfigError(flag, text, "expected a numeric user or group id")
    return int(text)


def parse_ports(flag: str, text: str) -> Ports:
    """``"80,443,8000-8100"`` -> sorted, merged ranges. Ranges take ``-`` or ``:``."""
    ranges: list[PortRange] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        sep = "-" if "-" in item else ":" if ":" in item else None
        if sep is None:
            try:
                port = parse_port(flag, item)
            except ConfigError:  # name the whole value, not just the item, so it can be found
                raise ConfigError(flag, text, f"bad port {item!r} (1 to 65535)") from None
            ranges.append(PortRange(port, port))
            continue
        low, _, high = item.partition(sep)
        try:
            first, last = parse_port(flag, low), parse_port(flag, high)
        except ConfigError:
            raise ConfigError(flag, text, f"bad port range {item!r}") from None
        if first > last:
            raise ConfigError(flag, text, f"port range {item!r} runs backwards")
        ranges.append(PortRange(first, last))
    return merge_ranges(ranges)


def merge_ranges(ranges: Sequence[PortRange]) -> Ports:
    merged: list[PortRange] = []
    for current in sorted(ranges):
        if merged and current.first <= merged[-1].last + 1:
            previous = merged[-1]
            merged[-1] = PortRange(previous.first, max(previous.last, current.last))
        else:
            merged.append(current)
    return tuple(merged)


def parse_cidrs(flag: str, text: str) -> tuple[IPNetwork, ...]:
    """``"10.0.0.0/8,fd00::/8,192.0.2.1"`` -> networks of both families, host bits refused."""
    networks: list[IPNetwork] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=True))
        except ValueError as err:
            raise ConfigError(flag, text, f"{item!r} is not a CIDR ({err})") from None
    return tuple(sorted(set(networks), key=lambda n: (n.version, n)))


def parse_mode(flag: str, text: str) -> InterceptionMode:
    mode = text.strip().upper()
    if mode == "REDIRECT":
        return "REDIRECT"
    if mode == "TPROXY":
        return "TPROXY"
    raise ConfigError(flag, text, "expected REDIRECT or TPROXY")


def parse_backend(flag: str, text: str) -> Backend:
    backend = text.strip().lower()
    if backend == "auto":
        return "auto"
    if backend == "nft":
        return "nft"
    if backend == "legacy":
        return "legacy"
    raise ConfigError(flag, text, "expected auto, nft or legacy")


def parse_bool(flag: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(flag, text, "expected true or false")


# --- flags ------------------------------------------------------------------------------------

VALUE_FLAGS = (
    "outbound-port",
    "inbound-port",
    "proxy-uid",
    "proxy-gid",
    "include-inbound-ports",
    "exclude-inbound-ports",
    "include-outbound-ports",
    "exclude-outbound-ports",
    "include-outbound-cidrs",
    "exclude-outbound-cidrs",
    "interception-mode",
    "backend",
)
SWITCH_FLAGS = ("dry-run", "cleanup")


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.upper().replace("-", "_")


def _collect(argv: Sequence[str], env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """flag name -> (where it came from, raw text). Flags override environment variables."""
    raw: dict[str, tuple[str, str]] = {}
    for flag in (*VALUE_FLAGS, *SWITCH_FLAGS):
        if env_name(flag) in env:
            raw[flag] = (env_name(flag), env[env_name(flag)])
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith("--"):
            raise ConfigError("arguments", arg, "unexpected argument (flags start with --)")
        name, has_value, value = arg[2:].partition("=")
        if name in SWITCH_FLAGS:
            raw[name] = (f"--{name}", value if has_value else "true")
        elif name in VALUE_FLAGS:
            if not has_value:
                if not args:
                    raise ConfigError(f"--{name}", "", "the flag needs a value")
                value = args.pop(0)
            raw[name] = (f"--{name}", value)
        else:
            raise ConfigError(arg.partition("=")[0], value, "unknown flag")
    return raw


def parse(
    argv: Sequence[str], env: Mapping[str, str] | None = None
) -> tuple[CaptureConfig, RunOptions]:
    """Parse mesh-init's flags (and ``MESH_INIT_*`` variables) into config and run options."""
    raw = _collect(argv, env or {})

    def get(flag: str) -> tuple[str, str] | None:
        return raw.get(flag)

    kwargs: dict[str, object] = {}
    for flag, attr in (("outbound-port", "outbound_port"), ("inbound-port", "inbound_port")):
        if (item := get(flag)) is not None:
            kwargs[attr] = parse_port(*item)
    for flag, attr in (("proxy-uid", "proxy_uid"), ("proxy-gid", "proxy_gid")):
        if (item := get(flag)) is not None:
            kwargs[attr] = parse_id(*item)
    for direction in ("inbound", "outbound"):
        if (item := get(f"include-{direction}-ports")) is not None:
            kwargs[f"include_{direction}_ports"] = (
                None if item[1].strip() == ALL else parse_ports(*item)
            )
        if (item := get(f"exclude-{direction}-ports")) is not None:
            kwargs[f"exclude_{direction}_ports"] = parse_ports(*item)
    if (item := get("include-outbound-cidrs")) is not None:
        kwargs["include_outbound_cidrs"] = None if item[1].strip() == ALL else parse_cidrs(*item)
    if (item := get("exclude-outbound-cidrs")) is not None:
        kwargs["exclude_outbound_cidrs"] = parse_cidrs(*item)
    if (item := get("interception-mode")) is not None:
        kwargs["interception_mode"] = parse_mode(*item)
    config = CaptureConfig(**kwargs)  # type: ignore[arg-type]
    if config.inbound_port == config.outbound_port:
        raise ConfigError(
            "--inbound-port", str(config.inbound_port), "must differ from --outbound-port"
        )

    backend = parse_backend(*raw["backend"]) if "backend" in raw else "auto"
    options = RunOptions(
        dry_run=parse_bool(*raw["dry-run"]) if "dry-run" in raw else False,
        cleanup=parse_bool(*raw["cleanup"]) if "cleanup" in raw else False,
        backend=backend,
    )
    return config, options


def _ports_text(ports: Ports | None) -> str:
    return ALL if ports is None else ",".join(str(r).replace(":", "-") for r in ports)


def _cidrs_text(cidrs: tuple[IPNetwork, ...] | None) -> str:
    return ALL if cidrs is None else ",".join(str(n) for n in cidrs)


def to_args(config: CaptureConfig) -> list[str]:
    """Render a config as mesh-init flags: every setting explicit, so the pod spec says it all."""
    return [
        f"--outbound-port={config.outbound_port}",
        f"--inbound-port={config.inbound_port}",
        f"--proxy-uid={config.proxy_uid}",
        f"--proxy-gid={config.proxy_gid}",
        f"--include-inbound-ports={_ports_text(config.include_inbound_ports)}",
        f"--exclude-inbound-ports={_ports_text(config.exclude_inbound_ports)}",
        f"--include-outbound-ports={_ports_text(config.include_outbound_ports)}",
        f"--exclude-outbound-ports={_ports_text(config.exclude_outbound_ports)}",
        f"--include-outbound-cidrs={_cidrs_text(config.include_outbound_cidrs)}",
        f"--exclude-outbound-cidrs={_cidrs_text(config.exclude_outbound_cidrs)}",
        f"--interception-mode={config.interception_mode}",
    ]
