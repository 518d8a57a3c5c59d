"""The AccessPolicy CRD as the real API server takes it: installed (its CEL rules within the
server's cost budget), every example accepted, every malformed policy refused at `kubectl
apply` with a message naming the field (tests/support/accesspolicies.py has the cases)."""

from __future__ import annotations

import copy
import json

import pytest

from tests.support.accesspolicies import EXAMPLES, MALFORMED, Obj, docs_examples
from tests.support.realcluster import LocalCluster

pytestmark = pytest.mark.cluster


def _in(namespace: str, obj: Obj) -> str:
    placed = copy.deepcopy(obj)
    placed["metadata"]["namespace"] = namespace
    return json.dumps(placed)


def test_every_example_is_accepted_and_every_malformed_policy_refused_naming_the_field(
    cluster: LocalCluster,
) -> None:
    with cluster.namespace("policies") as ns:
        for obj in [*EXAMPLES.values(), *docs_examples()]:
            cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-",
                            stdin=_in(ns, obj))
        wrong = []
        for what, obj, fragment, _ in MALFORMED:
            done = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-",
                                   stdin=_in(ns, obj), check=False)
            if done.returncode == 0 or fragment not in done.stderr:
                wrong.append(f"{what}: exit {done.returncode}, {done.stderr.strip()!r}")
        assert not wrong, "\n".join(wrong)
