"""The mesh config a live cluster runs with: the installed ConfigMap, or a file the user names.

``inspect`` and ``check`` compare pods with the config the injector renders from; reading it is
the only cluster I/O they need beyond the pods themselves.
"""

from __future__ import annotations

import logging

from mesh.contract import CONFIG_KEY, CONFIGMAP
from mesh.errors import KubeError, NotFound
from mesh.kube.client import Kube
from mesh.settings import MeshConfig, config_from_yaml, load_config

log = logging.getLogger("meshinject.cluster")


def cluster_config(kube: Kube, *, path: str | None = None) -> MeshConfig:
    """The mesh config from ``path``, else the installed ConfigMap, else the defaults."""
    if path:
        return load_config(path)
    namespace = MeshConfig().injector_namespace
    try:
        data = kube.get_configmap(namespace, CONFIGMAP).get("data") or {}
    except NotFound:
        return MeshConfig()
    except KubeError as err:
        if err.status != 403:
            raise
        log.warning("cannot read the mesh config (%s); comparing with the defaults", err)
        return MeshConfig()
    return config_from_yaml(data.get(CONFIG_KEY, ""))
