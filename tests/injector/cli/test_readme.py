"""The README's examples, run: every command it shows prints exactly what it shows.

Offline commands (``inject``, ``check -f``) are run as a user would from the checkout. The live
ones (``inspect``, ``check`` without ``-f``) need a cluster; the README quotes the tests' local
cluster, so their blocks must equal the goldens those tests keep. ``console`` blocks are sessions
recorded on the local cluster (``make cluster-up``, kubectl): not run here, but their meshinject
commands are the checkout's too.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO

README = REPO / "README.md"
GOLDEN = REPO / "tests" / "golden" / "injector" / "cluster"
PROMPT = "$ "
CLI = ".venv/bin/meshinject"
LIVE = {  # the command the README shows -> the golden its test keeps
    "inspect -A": GOLDEN / "inspect_all.txt",
    "check annotated-1 -n legacy": GOLDEN / "check_annotation.txt",
}


def shown(fence: str = "text") -> list[tuple[str, str]]:
    """(command, the output under it) for every ``$`` line of the README's ``fence`` blocks."""
    found = []
    for block in re.findall(rf"^```{fence}\n(.*?)^```", README.read_text(), flags=re.S | re.M):
        lines = block.splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith(PROMPT)]
        for n, start in enumerate(starts):
            end = starts[n + 1] if n + 1 < len(starts) else len(lines)
            found.append((lines[start][len(PROMPT):],
                          "\n".join(lines[start + 1:end]).rstrip("\n")))
    return found


def test_the_readme_shows_commands_a_fresh_checkout_can_run() -> None:
    commands = [command for command, _ in shown()]
    assert len(commands) >= 5
    bare = [c for c in commands if not c.startswith(CLI + " ")]
    assert not bare, f"after `make demo` meshinject is not on PATH: {bare}"


def test_the_recorded_cluster_sessions_run_meshinject_from_the_checkout() -> None:
    commands = [command for command, _ in shown("console")]
    assert commands, "no recorded session on the local cluster"
    ours = [c for c in commands if c.split()[0].endswith("meshinject")]
    assert ours and all(c.startswith(CLI + " ") for c in ours), ours


@pytest.mark.parametrize(("command", "output"), shown(), ids=[c for c, _ in shown()])
def test_a_readme_command_prints_what_the_readme_shows(
    command: str, output: str, tmp_path: Path
) -> None:
    args = shlex.split(command)[1:]
    if " ".join(args) in LIVE:
        assert output == LIVE[" ".join(args)].read_text().rstrip("\n")
        return
    assert args[0] in ("inject", "check") and "-f" in args, f"cannot run {command!r} here"
    target = None
    if ">" in args:
        args, target = args[:args.index(">")], tmp_path / args[args.index(">") + 1]
    done = subprocess.run([sys.executable, "-m", "injector.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    if target is not None:
        target.write_text(done.stdout)
        assert done.returncode == 0 and "mesh-proxy" in done.stdout, done.stderr
        printed = done.stderr
    else:
        printed = done.stdout + done.stderr
    assert printed.rstrip("\n") == output
