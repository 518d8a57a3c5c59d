"""``scripts/bench_xds_envoys.py``, bounded: three real Envoys, five Services, two changes.

The figures are the benchmark's business; here it must sync every Envoy, see each one bind its
own socket on every shared listener, time every change's ACK (none missed), and leave no
namespace, process or directory behind.
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

BOUNDED = ["--envoys", "3", "--services", "5", "--changes", "2", "--interval", "0.5",
           "--batch", "2", "--deadline", "120"]


def namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return {line.split()[0] for line in listed.stdout.splitlines() if "xdsbench" in line}


def test_the_bounded_run_times_every_envoys_ack_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for tool in ("ip", "ss", "mount"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    need_envoy()
    before = namespaces()
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_xds_envoys.py"),
                           *BOUNDED], capture_output=True, text=True, timeout=150, check=False,
                          cwd=REPO, env={**os.environ, "TMPDIR": str(tmp_path)})
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "3/3 Envoys synced (CDS, EDS, LDS, RDS ACKed)" in out, out
    sockets = re.search(r"listening sockets in the namespace.*: (\{.*\})", out)
    assert sockets is not None, out
    counts = [int(n) for n in re.findall(r"': (\d+)", sockets.group(1))]
    assert len(counts) >= 4 and set(counts) == {3}, out  # 15001, 15006, 15021, 15090 at least
    assert re.search(r"change -> Envoy's ACK read by the plane: p50 \d+ ms.*; missed: 0", out), out
    assert namespaces() <= before
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())
