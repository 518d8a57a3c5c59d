"""Shared test plumbing: the golden-file flag and fixture.

Refresh every golden with ``pytest --update-goldens``; without the flag a golden that differs
from what the code produces fails, and so does a golden file no test wrote (stale).
"""

from __future__ import annotations

from collections.abc import Callable
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
    """``golden("injector/core/pod.yaml", text)``: compare text with tests/golden/core/pod.yaml."""
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


def _whole_suite(config: pytest.Config) -> bool:
    """True when this run collected every test: only then can an unused golden be called stale."""
    selected = [Path(a.split("::")[0]).resolve() for a in config.args]
    whole = all(path == Path(__file__).parent.resolve() for path in selected)
    return whole and not config.getoption("keyword") and not config.getoption("markexpr")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A golden file that no test compared against is stale: delete it on update, else fail."""
    if not _used_goldens or not _whole_suite(session.config) or exitstatus != 0:
        return
    unused = sorted(
        p for p in GOLDEN_DIR.rglob("*") if p.is_file() and p not in _used_goldens
    )
    if not unused:
        return
    if session.config.getoption("--update-goldens"):
        for path in unused:
            path.unlink()
        return
    names = ", ".join(str(p.relative_to(GOLDEN_DIR)) for p in unused)
    print(f"\nstale golden files (no test uses them): {names}; run pytest --update-goldens")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
