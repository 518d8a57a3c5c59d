#!/usr/bin/env python3
"""The local Kubernetes cluster: ``make cluster-up`` / ``make cluster-down`` run this.

    .venv/bin/python scripts/cluster/cluster.py up [--node kwok[=N]] [--port-base N]
    python3 scripts/cluster/cluster.py down      (standard library only)
    .venv/bin/python scripts/cluster/cluster.py status | injector start|stop|restart

All take ``--state-dir DIR`` (default ``.cluster/``). What each part does and why:
``localcluster/`` (one module per part) and ``notes.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from localcluster.cli import main

if __name__ == "__main__":
    sys.exit(main())
