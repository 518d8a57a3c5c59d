"""Every test here runs against the real local cluster (the session's ``cluster`` fixture)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.cluster
