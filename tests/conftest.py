"""Shared test plumbing: the golden-file flag and fixture.

Refresh every golden with ``pytest --update-goldens``; without the flag a golden that differs
from what the code produces fails, and so does a golden file no test wrote (stale).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

GOLDEN_DIR = Path(__file__).parent / "golden"
_used_goldens: set[Path] = set()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens", action="store_true", help="rewrite golden files from current output"
    )


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """``golden("core/pod.yaml", text)``: compare text with tests/golden/core/pod.yaml."""
    update = request.config.getoption("--update-goldens")

    def check(name: str, actual: str) -> None:
        path = GOLDEN_DIR / name
        _used_goldens.add(path)
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(actual)
            return
        assert path.exists(), f"no golden {path}; run pytest --update-goldens"
        assert path.read_text() == actual, f"{path} is stale; run pytest --update-goldens"

    return check


@pytest.fixture(scope="session", autouse=True)
def _stale_goldens(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a full run, a golden no test compared against is stale: fail (or delete on update)."""
    yield
    if request.config.getoption("--update-goldens") and _used_goldens:
        for path in GOLDEN_DIR.rglob("*"):
            if path.is_file() and path not in _used_goldens:
                path.unlink()
