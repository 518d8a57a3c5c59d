"""``cluster.py up --node sandbox`` refuses, before starting anything, a checkout the node's pods
could not see: it runs their programs from the checkout and mounts each pod's /tmp volume over
/tmp (a clone under /tmp gave the control plane's pods exit 127 for two minutes)."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support.paths import REPO

sys.path.insert(0, str(REPO / "scripts" / "cluster"))

from localcluster import nodes


def test_a_checkout_under_tmp_is_refused_saying_why() -> None:
    said = nodes.sandbox_hidden_by_tmp(Path("/tmp/ci/main"))
    assert "/tmp/ci/main" in said and "clone it outside /tmp" in said


def test_a_checkout_elsewhere_is_fine() -> None:
    assert nodes.sandbox_hidden_by_tmp(Path("/work/main")) == ""
    assert nodes.sandbox_hidden_by_tmp(Path("/tmpfoo/main")) == ""
