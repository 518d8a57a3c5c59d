"""Properties over generated pods: the patch reproduces the pod, injection is idempotent, strip
undoes it exactly (empty and null maps and lists included), and a switch of config or mode in
between still lands on a fresh injection."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from injector.core.patch import inject_pod, strip_injection
from mesh.settings import MeshConfig, ProxySettings
from tests.support.pods import apply

NAME = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
CONTAINER = st.builds(
    lambda name, env: {"name": name, "image": f"{name}:1",
                       **({"env": [{"name": f"V{i}", "value": str(i)} for i in range(env)]}
                          if env else {})},
    NAME, st.integers(0, 30))
ANNOTATIONS = st.dictionaries(
    st.sampled_from(["traffic.meshinject.io/exclude-inbound-ports",
                     "traffic.meshinject.io/include-outbound-ip-ranges",
                     "traffic.meshinject.io/interception-mode", "proxy.meshinject.io/cpu",
                     "proxy.meshinject.io/native-sidecar", "app.kubernetes.io/name"]),
    st.just(""), max_size=4,
).map(lambda d: {k: {"traffic.meshinject.io/exclude-inbound-ports": "22,8000-8010",
                     "traffic.meshinject.io/include-outbound-ip-ranges": "10.0.0.0/8",
                     "traffic.meshinject.io/interception-mode": "TPROXY",
                     "proxy.meshinject.io/cpu": "300m",
                     "proxy.meshinject.io/native-sidecar": "false",
                     "app.kubernetes.io/name": "x"}[k] for k in d})


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(NAME.filter(lambda n: not n.startswith("mesh")), min_size=1,
                          max_size=5, unique=True))
    containers = [draw(CONTAINER) | {"name": n} for n in names]
    split = draw(st.integers(1, len(containers)))
    metadata: dict[str, Any] = {"name": "p"}
    if (annotations := draw(st.one_of(st.none(), ANNOTATIONS))) is not None:
        metadata["annotations"] = annotations
    elif draw(st.booleans()):
        metadata["annotations"] = None  # null, as YAML may say it
    spec: dict[str, Any] = {"containers": containers[:split]}
    if containers[split:]:
        spec["initContainers"] = containers[split:]
    else:
        spec.update(draw(st.sampled_from([{}, {"initContainers": []}, {"initContainers": None}])))
    if draw(st.booleans()):
        spec["volumes"] = [{"name": "data", "emptyDir": {}}]
    pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    shape = draw(st.sampled_from(["named", "none", "empty", "null"]))  # a template's metadata
    if shape == "none":
        del pod["metadata"]
    elif shape != "named":
        pod["metadata"] = {} if shape == "empty" else None
    return pod


CONFIGS = st.sampled_from([
    MeshConfig(), MeshConfig(native_sidecars=False),
    MeshConfig(proxy=ProxySettings(image="envoyproxy/envoy:v1.41.0", concurrency=1)),
])


@settings(max_examples=150, deadline=None)
@given(pods(), CONFIGS, CONFIGS)
def test_injection_properties_hold_for_generated_pods(
    pod: dict[str, Any], first: MeshConfig, second: MeshConfig
) -> None:
    once = inject_pod(pod, config=first, namespace="n")
    assert apply(once.patch, pod) == once.pod
    assert inject_pod(once.pod, config=first, namespace="n").patch == []
    assert strip_injection(once.pod) == pod
    assert strip_injection(pod) == pod  # nothing to strip: nothing changes
    upgraded = inject_pod(once.pod, config=second, namespace="n")
    assert apply(upgraded.patch, once.pod) == upgraded.pod
    assert upgraded.pod == inject_pod(pod, config=second, namespace="n").pod
