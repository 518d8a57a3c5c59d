"""How long the pure core takes to inject one pod: a typical pod and one with 2,000 env vars.

Prints the median and max of ``inject_pod`` (decide, render, diff) for first injection and for
re-injection, in native and classic mode. A figure, not an assertion; the target for the big
pod is well under 50 ms.

    .venv/bin/python scripts/bench_core.py [--runs 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from injector.core.patch import inject_pod
from mesh.settings import MeshConfig


def make_pod(env_vars: int) -> dict[str, Any]:
    env = [{"name": f"VAR_{i}", "value": f"value-{i}"} for i in range(env_vars)]
    app = {"name": "app", "image": "app:1", "env": env, "ports": [{"containerPort": 8080}],
           "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "bench", "labels": {"app": "bench"}},
            "spec": {"containers": [app]}}


def measure(pod: dict[str, Any], config: MeshConfig, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        inject_pod(pod, config=config, namespace="bench")
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    for env_vars in (24, 2000):
        for native in (True, False):
            config = MeshConfig(native_sidecars=native)
            pod = make_pod(env_vars)
            injected = inject_pod(pod, config=config, namespace="bench").pod
            for label, subject in (("inject", pod), ("re-inject", injected)):
                t = measure(subject, config, args.runs)
                print(f"{env_vars:5} env vars  {'native' if native else 'classic':7} {label:9}"
                      f"  median {statistics.median(t) * 1e3:6.2f} ms  max {max(t) * 1e3:6.2f} ms")


if __name__ == "__main__":
    main()
