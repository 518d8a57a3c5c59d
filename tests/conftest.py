"""Shared test plumbing: the golden-file flag and fixture, and the real cluster's.

Refresh every golden with ``pytest --update-goldens``; without the flag a golden that differs
from what the code produces fails, and so does a golden file no test wrote (stale).

Tests marked ``cluster`` run against the real local cluster (:mod:`tests.support.realcluster`):
they are moved to the end of the run, so a build of its binaries started by ``make test`` has the
rest of the suite's time to finish, and the first of them waits for it (its timeout is the
build's bound). Where the binaries are neither cached nor buildable they skip, saying why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import realcluster

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


# -- the real cluster ----------------------------------------------------------------------
@pytest.hookimpl(trylast=True)  # after -k/-m deselection: the first *selected* one waits
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    on_cluster = [i for i in items if i.get_closest_marker("cluster")]
    if not on_cluster:
        return
    items[:] = [i for i in items if not i.get_closest_marker("cluster")] + on_cluster
    reason = realcluster.why_not_buildable()
    if reason:
        for item in on_cluster:
            item.add_marker(pytest.mark.skip(reason=f"no local cluster: {reason}"))
        return
    on_cluster[0].add_marker(pytest.mark.timeout(realcluster.BUILD_BOUND + 300))


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[realcluster.LocalCluster]:
    """The local cluster, up once for the whole run and down at its end (even on failure)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    reporter = request.config.pluginmanager.getplugin("terminalreporter")

    def say(line: str) -> None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)

    yield from realcluster.session(say)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    t = realcluster.TIMINGS
    if t.up is None:
        return
    terminalreporter.write_line(
        f"local cluster: binaries ready after {t.build_waited:.0f} s of waiting "
        f"({t.build_note}); up in {t.up:.1f} s; down in {t.down or 0:.1f} s"
    )
    for line in t.lines:
        terminalreporter.write_line("  " + line)
