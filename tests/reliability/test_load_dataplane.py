"""``scripts/load_dataplane.py``, bounded: steady load, then the server's proxy restarted under it.

The script fixes what each phase may lose before it runs (nothing when steady; for the restart,
one request in flight per connection and the arrivals of a gap without a listener less the
retries the client proxy's budget allows), measures both kinds of loss apart, and exits 1 past
the allowance. Here it runs a few seconds: 1,600 requests a phase at 400/s over 20 connections,
to an app that answers after 40 ms, so that requests are in flight when the proxy stops.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.envoy import need_envoy
from tests.support.paths import REPO

pytestmark = [pytest.mark.netns, pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(180)]

BOUNDED = ["--phase", "both", "--requests", "1600", "--rate", "400", "--connections", "20",
           "--drain-time", "1s", "--app-delay-ms", "40", "--max-gap", "1.0"]


def test_the_bounded_load_run_stays_within_the_allowance_it_fixed_before_running(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for tool in ("hey", "ip", "setpriv", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    need_envoy()
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "load_dataplane.py"), *BOUNDED],
                          capture_output=True, text=True, timeout=150, check=False, cwd=REPO,
                          env={**os.environ, "TMPDIR": str(tmp_path)})  # its logs stay here
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    fixed = out.index("allowed, fixed before the run: restart: in flight 20 (one per connection")
    assert fixed < out.index("== steady:") < out.index("== restart:"), out
    lost = [int(n) for n in re.findall(r"lost \(not 200\): (\d+)", out)]
    cut = [int(n) for n in re.findall(r"cut in flight \(the client proxy's \S+\): (\d+)", out)]
    assert lost[0] == 0 and cut[0] == 0, out  # steady
    assert len(lost) == len(cut) == 2, out
    assert out.count("   held: within the allowance") == 2, out
