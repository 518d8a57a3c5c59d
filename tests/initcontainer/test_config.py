"""mesh-init's flags: every bad value names the flag (or variable) and the value; round trips."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from initcontainer.config import VALUE_FLAGS, CaptureConfig, ConfigError, env_name, parse, to_args
from injector.sandbox.netns import Netns
from tests.support.kernel import dry_run, rules

MakeNs = Callable[[str], Netns]

BAD_VALUES = {
    "outbound-port": "70000",
    "inbound-port": "http",
    "proxy-uid": "-1",
    "proxy-gid": "root",
    "include-inbound-ports": "80,9000-8000",
    "exclude-inbound-ports": "22,x",
    "include-outbound-ports": "0",
    "exclude-outbound-ports": "443:",
    "include-outbound-cidrs": "10.0.0.1/8",
    "exclude-outbound-cidrs": "fd00::/129",
    "interception-mode": "NAT",
    "backend": "ebpf",
}


def test_every_value_flag_has_a_bad_value_case() -> None:
    assert set(BAD_VALUES) == set(VALUE_FLAGS)


@pytest.mark.parametrize("flag", sorted(BAD_VALUES))
def test_a_bad_flag_value_is_refused_naming_the_flag_and_the_value(flag: str) -> None:
    value = BAD_VALUES[flag]
    with pytest.raises(ConfigError) as caught:
        parse([f"--{flag}={value}"])
    assert caught.value.flag == f"--{flag}"
    assert f"--{flag}" in str(caught.value) and value in str(caught.value)


@pytest.mark.parametrize("flag", sorted(BAD_VALUES))
def test_a_bad_environment_value_is_refused_naming_the_variable(flag: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse([], {env_name(flag): BAD_VALUES[flag]})
    assert env_name(flag) in str(caught.value) and BAD_VALUES[flag] in str(caught.value)


def test_a_flag_wins_over_its_environment_variable() -> None:
    config, _ = parse(["--inbound-port=16006"], {env_name("inbound-port"): "17006"})
    assert config.inbound_port == 16006


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--inbound-port=15001"], "--inbound-port"),
        (["--outbound-port"], "--outbound-port"),
        (["--no-such-flag=1"], "--no-such-flag"),
        (["stray"], "stray"),
        (["--dry-run=maybe"], "--dry-run"),
        (["--outbound-port=²"], "²"),
    ],
)
def test_malformed_command_lines_are_refused_with_a_named_reason(
    argv: list[str], needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse(argv)


@pytest.mark.netns
def test_the_program_exits_2_and_names_flag_and_value(make_netns: MakeNs) -> None:
    err = dry_run(make_netns("pod"), "--exclude-outbound-ports=22,x", expect=2).stderr
    assert "--exclude-outbound-ports" in err and "'22,x'" in err


def test_ranges_parse_with_dash_or_colon_and_merge() -> None:
    config, _ = parse(["--exclude-inbound-ports=8000-8010,8005:8020,22"])
    assert [str(r) for r in config.exclude_inbound_ports] == ["22", "8000:8020"]


@pytest.mark.parametrize(
    "config",
    [
        CaptureConfig(),
        parse(["--include-inbound-ports=", "--include-outbound-cidrs=fd00::/8,10.0.0.0/8"])[0],
        parse(["--interception-mode=tproxy", "--exclude-outbound-ports=1-1024", "--proxy-gid=7"])[
            0
        ],
    ],
)
def test_what_the_injector_renders_is_what_mesh_init_parses(config: CaptureConfig) -> None:
    assert parse(to_args(config))[0] == config


@pytest.mark.netns
def test_dry_run_prints_the_rules_and_touches_nothing(make_netns: MakeNs) -> None:
    out = dry_run(make_netns("pod"), "--dry-run", "--exclude-inbound-ports=22").stdout
    assert "# IPv4: iptables-restore --noflush" in out and "--dport 22 " in out


@pytest.mark.netns
def test_the_default_path_never_imports_pyroute2(make_netns: MakeNs) -> None:
    """Start-up stays light: pyroute2 costs 120-190 ms and only TPROXY routing needs it."""
    code = (
        "import sys\n"
        "from initcontainer.__main__ import main\n"
        "assert main(['--dry-run', '--interception-mode=TPROXY']) == 0\n"
        "assert 'pyroute2' not in sys.modules, 'pyroute2 was imported'\n"
        "assert 'asyncio' not in sys.modules\n"
    )
    pod = make_netns("pod")
    before = rules(pod)
    proc = pod.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == 0, proc.stderr
    assert rules(pod) == before
