"""What the CLI prints at its edges: a reader that goes away, a file that is not YAML, the end
of a sandbox log, and counts in words."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from injector.cluster.check import _days_left
from injector.sandbox.model import ContainerPlan, PodPlan, SandboxPlan
from injector.sandbox.progress import plural
from injector.sandbox.state import StateDir
from tests.support.cli import meshinject
from tests.support.paths import EXAMPLES

SAMPLE = str(EXAMPLES / "sample-app.yaml")
BROKEN = "apiVersion: v1\nkind: Pod\nmetadata: {name: x\n  labels: [\n"


@pytest.mark.parametrize("argv", [
    ["inject", "-f", SAMPLE],
    ["check", "-f", SAMPLE],
    ["sandbox", "status", "--state-dir", "/nonexistent/meshinject-test"],
    ["--help"],
], ids=" ".join)
def test_a_reader_that_goes_away_ends_a_command_quietly(argv: list[str]) -> None:
    """``meshinject ... | head -3``, made certain: the pipe's read end is closed before the
    command writes, so its first write (or last flush) meets EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "injector.cli", *argv], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60, check=False)
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.stderr == ""
    # 128 + SIGPIPE; argparse swallows a failed write of --help, whose own code (0) stands
    assert done.returncode in ((141, 0) if argv == ["--help"] else (141,))


@pytest.mark.parametrize("command", ["inject", "check", "uninject"])
def test_a_yaml_syntax_error_names_the_file(command: str, tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    done = meshinject(command, "-f", str(path))
    assert done.returncode == 1
    assert f"{path} is not valid YAML" in done.stderr, done.stderr
    assert f'in "{path}", line 4, column 9' in done.stderr
    assert "<unicode string>" not in done.stderr


def test_a_yaml_syntax_error_on_stdin_says_stdin() -> None:
    done = subprocess.run([sys.executable, "-m", "injector.cli", "inject", "-f", "-"],
                          input=BROKEN, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert 'stdin is not valid YAML' in done.stderr and 'in "stdin", line 3' in done.stderr


def _logged(tmp_path: Path, lines: int) -> StateDir:
    """A sandbox state directory holding one pod's plan and a log of ``lines`` lines."""
    app = ContainerPlan(name="app", role="app", image="busybox", argv=["sleep", "1"], env={})
    pod = PodPlan(name="web-0", namespace="default", labels={}, address="198.18.0.10",
                  injected=False, reason="test", containers=[app])
    state = StateDir(tmp_path / "state")
    state.create(SandboxPlan(pods=[pod], services=[]))
    log = state.log_path(pod.key, "app")
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {n}\n" for n in range(1, lines + 1)))
    return state


@pytest.mark.parametrize(("tail", "shown"), [
    (None, [1, 2, 3, 4, 5]), ("-1", [1, 2, 3, 4, 5]), ("0", []), ("2", [4, 5]),
    ("9", [1, 2, 3, 4, 5]),
])
def test_sandbox_logs_tail_counts_as_kubectl_does(
    tmp_path: Path, tail: str | None, shown: list[int]
) -> None:
    state = _logged(tmp_path, 5)
    flags = [] if tail is None else ["--tail", tail]
    done = meshinject("sandbox", "logs", "web-0", "app", "--state-dir", str(state.root), *flags)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "".join(f"line {n}\n" for n in shown)


def test_sandbox_logs_refuses_a_tail_below_minus_one(tmp_path: Path) -> None:
    state = _logged(tmp_path, 5)
    done = meshinject("sandbox", "logs", "web-0", "--tail", "-2", "--state-dir", str(state.root))
    assert done.returncode == 1 and done.stdout == ""
    assert "--tail -2 is invalid: expected -1 (all lines" in done.stderr


def test_counts_are_said_in_words_that_agree_with_them() -> None:
    assert [plural(n, "pod") for n in (0, 1, 2)] == ["0 pods", "1 pod", "2 pods"]
    assert plural(1, "entry", "entries") == "1 entry" and plural(3, "entry", "entries") == (
        "3 entries")
    assert (_days_left(1.2), _days_left(364.6)) == ("1 day left", "365 days left")
