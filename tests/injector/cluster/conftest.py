"""The fake API server, kept for the one view the real cluster cannot give yet: a proxy's live
counters through the API server's pod proxy (see tests/support/fakeapi.py). Everything else in
this directory runs against the real local cluster (the session's ``cluster`` fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakeserver import Running, run_fake_api


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Running]:
    yield from run_fake_api(tmp_path)
