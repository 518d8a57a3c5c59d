"""Fixtures: a fake API server per test, and a Kube client configured to it by kubeconfig."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.kube.client import Kube
from tests.support.fakeserver import Running, run_fake_api


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Running]:
    yield from run_fake_api(tmp_path)


@pytest.fixture
def kube(fake: Running) -> Iterator[Kube]:
    api = Kube.connect(kubeconfig=fake.kubeconfig)
    yield api
    api.api_client.close()
