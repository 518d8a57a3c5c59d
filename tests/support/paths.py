"""Where things are, for every test: the repository, the venv's programs, the shared corpus."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
MESHINJECT = VENV_BIN / "meshinject"
MESH_INIT = VENV_BIN / "meshinject-init"
MANIFESTS = REPO / "manifests"
EXAMPLES = REPO / "examples"
CORE_MANIFESTS = REPO / "tests" / "injector" / "core" / "manifests"
# ../shared beside the checkout (CI and sessions alike), wherever the checkout lives
CORPUS = REPO.parent / "shared" / "corpus" / "k8s-examples"
