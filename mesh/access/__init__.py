"""AccessPolicy, pure: parse the custom resource, find the policies that protect a pod, its mTLS
mode, and decide one request the way the pod's proxy will (:mod:`mesh.envoy.rbac` writes the same
rules for Envoy). The control plane, ``meshinject access`` and the tests share this module.
"""

from mesh.access.decide import (
    Decision,
    MtlsChoice,
    applicable,
    decide,
    explain,
    mtls_choice,
    mtls_mode,
    selects,
)
from mesh.access.model import (
    AccessPolicy,
    Callers,
    Requirement,
    Rule,
    Selector,
    Targets,
)
from mesh.access.parse import parse_policy
from mesh.access.paths import normalize

__all__ = [
    "AccessPolicy", "Callers", "Decision", "MtlsChoice", "Requirement", "Rule", "Selector",
    "Targets", "applicable", "decide", "explain", "mtls_choice", "mtls_mode", "normalize",
    "parse_policy", "selects",
]
