"""The injector's mesh-init args and what meshinject-init accepts are one contract.

Every traffic annotation goes through ``inject_pod``; the injected ``mesh-init`` args must parse
to the same capture config the annotations asked for, and render rules that show it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from initcontainer.config import parse
from injector.core.patch import inject_pod
from injector.sandbox.netns import Netns
from mesh.settings import MeshConfig
from tests.support.kernel import dry_run

T = "traffic.meshinject.io/"
ANNOTATED: dict[str, tuple[dict[str, str], str]] = {
    "exclude-inbound-ports": ({T + "exclude-inbound-ports": "22,8000-8010"}, "--dport 8000:8010 "),
    "include-inbound-ports": (
        {T + "include-inbound-ports": "8080"},
        '--dport 8080 -m comment --comment "meshinject: included inbound port"',
    ),
    "exclude-outbound-ports": ({T + "exclude-outbound-ports": "5432"}, "--dport 5432 "),
    "include-outbound-ports": ({T + "include-outbound-ports": "443"}, "--dport 443 "),
    "exclude-outbound-ip-ranges": (
        {T + "exclude-outbound-ip-ranges": "10.96.0.0/12"},
        "-d 10.96.0.0/12 ",
    ),
    "include-outbound-ip-ranges": (
        {T + "include-outbound-ip-ranges": "10.0.0.0/8"},
        "-d 10.0.0.0/8 ",
    ),
    "interception-mode": ({T + "interception-mode": "TPROXY"}, "-j TPROXY --on-port 15006"),
}


def _init_args(annotations: dict[str, str]) -> list[str]:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "labels": {"meshinject.io/inject": "true"},
            "annotations": annotations,
        },
        "spec": {"containers": [{"name": "app", "image": "a"}]},
    }
    injected = inject_pod(pod, config=MeshConfig(), namespace="shop").pod
    init = next(c for c in injected["spec"]["initContainers"] if c["name"] == "mesh-init")
    assert init["command"] == ["meshinject-init"]
    return list(init["args"])


@pytest.mark.netns
@pytest.mark.parametrize("name", sorted(ANNOTATED))
def test_each_traffic_annotation_reaches_the_rules_through_the_injected_args(
    name: str, make_netns: Callable[[str], Netns]
) -> None:
    """The real meshinject-init, in a namespace of the test's own (never the machine's)."""
    annotations, needle = ANNOTATED[name]
    out = dry_run(make_netns("pod"), *_init_args(annotations), "--dry-run").stdout
    assert needle in out


def test_the_injected_args_say_every_setting_explicitly_and_parse_back() -> None:
    args = _init_args({})
    config, _ = parse(args)
    assert {a.split("=")[0] for a in args} >= {
        "--outbound-port",
        "--inbound-port",
        "--proxy-uid",
        "--proxy-gid",
    }
    assert (config.outbound_port, config.inbound_port, config.proxy_uid) == (15001, 15006, 1337)
    assert parse(_init_args({}))[0] == config
