"""Every user-visible name of meshinject, defined once: the product's interface.

Labels, annotations, container names, ports, paths and object names appear in users' manifests,
dashboards and scripts; tests and docs rely on them. Code anywhere in meshinject takes them from
here. The numbers mesh-init must agree on (capture ports, the proxy's uid and own ports) are
defined at the seam, :mod:`initcontainer.config`, and re-exported here, so there is still one
definition of each.
"""

from __future__ import annotations

from initcontainer import config as _seam

# -- opting in and out ----------------------------------------------------------------------
INJECT = "meshinject.io/inject"  # namespace label (=enabled); pod label or annotation (true/false)
NAMESPACE_ENABLED = "enabled"
STATUS = "meshinject.io/status"  # on injected pods: what was added, and the config hash
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")

# -- annotation prefixes ----------------------------------------------------------------------
TRAFFIC = "traffic.meshinject.io/"  # what mesh-init captures
PROXY = "proxy.meshinject.io/"  # the proxy container and its L7 policy
SECURITY = "security.meshinject.io/"  # mutual TLS and authorization
OUR_PREFIXES = (TRAFFIC, PROXY, SECURITY)

# traffic.meshinject.io/*
EXCLUDE_INBOUND_PORTS = TRAFFIC + "exclude-inbound-ports"
INCLUDE_INBOUND_PORTS = TRAFFIC + "include-inbound-ports"
EXCLUDE_OUTBOUND_PORTS = TRAFFIC + "exclude-outbound-ports"
INCLUDE_OUTBOUND_PORTS = TRAFFIC + "include-outbound-ports"
EXCLUDE_OUTBOUND_IP_RANGES = TRAFFIC + "exclude-outbound-ip-ranges"
INCLUDE_OUTBOUND_IP_RANGES = TRAFFIC + "include-outbound-ip-ranges"
INTERCEPTION_MODE = TRAFFIC + "interception-mode"
OPAQUE_PORTS = TRAFFIC + "opaque-ports"
LOAD_BALANCER = TRAFFIC + "load-balancer"  # on a Service: round-robin (default), least-request

# proxy.meshinject.io/*: the container
PROXY_IMAGE = PROXY + "image"
PROXY_CPU = PROXY + "cpu"
PROXY_MEMORY = PROXY + "memory"
PROXY_CPU_LIMIT = PROXY + "cpu-limit"
PROXY_MEMORY_LIMIT = PROXY + "memory-limit"
PROXY_LOG_LEVEL = PROXY + "log-level"
PROXY_CONCURRENCY = PROXY + "concurrency"
PROXY_NATIVE_SIDECAR = PROXY + "native-sidecar"

# proxy.meshinject.io/*: the L7 policy (docs/proxy.md)
TIMEOUT = PROXY + "timeout"
RETRIES = PROXY + "retries"
RETRY_ON = PROXY + "retry-on"
PER_TRY_TIMEOUT = PROXY + "per-try-timeout"
RETRY_BACKOFF = PROXY + "retry-backoff"
RETRY_BUDGET_PERCENT = PROXY + "retry-budget-percent"
MAX_CONNECTIONS = PROXY + "max-connections"
MAX_PENDING_REQUESTS = PROXY + "max-pending-requests"
MAX_REQUESTS = PROXY + "max-requests"
OUTLIER_CONSECUTIVE_5XX = PROXY + "outlier-consecutive-5xx"
OUTLIER_EJECTION_TIME = PROXY + "outlier-ejection-time"
FAULT_DELAY = PROXY + "fault-delay"
FAULT_ABORT = PROXY + "fault-abort"
ACCESS_LOG = PROXY + "access-log"
DRAIN_TIME = PROXY + "drain-time"
PROTOCOL_DETECTION_TIMEOUT = PROXY + "protocol-detection-timeout"

# security.meshinject.io/*: a pod annotation or a namespace label, strict or permissive
MTLS_MODE = SECURITY + "mtls"

# every key under our prefixes that meshinject reads: anything else there is a typo to warn about
KNOWN_ANNOTATIONS = tuple(sorted(
    value for name, value in tuple(globals().items())
    if name.isupper() and isinstance(value, str) and value.startswith(OUR_PREFIXES)
    and value not in OUR_PREFIXES
))

# -- the containers injection adds ----------------------------------------------------------
INIT_NAME = "mesh-init"
PROXY_NAME = "mesh-proxy"
INIT_COMMAND = "meshinject-init"
PROXY_COMMAND = "envoy"

# -- ports, paths and ids -------------------------------------------------------------------
OUTBOUND_PORT = _seam.OUTBOUND_PORT
INBOUND_PORT = _seam.INBOUND_PORT
PROXY_UID = _seam.PROXY_UID
PROXY_GID = _seam.PROXY_GID
READINESS_PORT = _seam.READINESS_PORT
PROMETHEUS_PORT = _seam.PROMETHEUS_PORT
INBOUND_SOURCE4 = _seam.INBOUND_SOURCE4  # the inbound passthrough's source, as the app sees it
INBOUND_SOURCE6 = _seam.INBOUND_SOURCE6
ADMIN_PORT = 15000  # Envoy's admin API, on 127.0.0.1 only
READINESS_PATH = "/healthz/ready"
# every port the proxy listens on in the pod, and what for: an app must not declare one
PROXY_PORTS = {
    ADMIN_PORT: "the proxy's admin API",
    OUTBOUND_PORT: "the proxy's outbound capture listener",
    INBOUND_PORT: "the proxy's inbound capture listener",
    READINESS_PORT: "the proxy's readiness endpoint",
    PROMETHEUS_PORT: "the proxy's Prometheus endpoint",
}
PROMETHEUS_PATH = "/stats/prometheus"
# the response header with which a pod's proxy answers a request it could not deliver to its app
# (its value: Envoy's response flags, e.g. UF); the caller's proxy retries on it (docs/proxy.md)
NOT_DELIVERED_HEADER = "meshinject-not-delivered"

# -- what the proxy needs to reach the control plane ------------------------------------------
XDS_PORT = 15012  # the control plane's xDS (gRPC over TLS)
CONTROLPLANE_DEBUG_PORT = 15014  # its /metrics, /debug/proxies, /debug/config
# the types a proxy must have ACKed to be configured, as /debug/proxies names them (it lists the
# Secrets of mutual TLS beside them)
PROXY_CONFIG_TYPES = ("Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration")
TOKEN_AUDIENCE = "meshinject"  # the projected ServiceAccount token the proxy presents
TOKEN_VOLUME = "meshinject-token"
TOKEN_DIR = "/var/run/secrets/meshinject.io/token"
TOKEN_FILE = "token"
CA_VOLUME = "meshinject-ca"
CA_DIR = "/var/run/secrets/meshinject.io/ca"
CA_FILE = "root-cert.pem"
CA_CONFIGMAP = "meshinject-ca-root"  # the mesh's root, published in every meshed namespace
BOOTSTRAP_FILE = "bootstrap.json"  # beside the root in that ConfigMap: the shared bootstrap
# the downward-API variables the bootstrap's node identity is expanded from
POD_NAME_ENV, POD_NAMESPACE_ENV, POD_IP_ENV, SERVICE_ACCOUNT_ENV = (
    "POD_NAME", "POD_NAMESPACE", "POD_IP", "SERVICE_ACCOUNT")

# -- identity, mutual TLS and authorization --------------------------------------------------
TRUST_DOMAIN = "cluster.local"  # default; identities are spiffe://<domain>/ns/<ns>/sa/<sa>
SVID_SECRET = "default"  # the SDS secret with a proxy's own certificate and key
TRUST_BUNDLE_SECRET = "ROOTCA"  # the SDS secret with the roots every proxy trusts
# the SNI a proxy sends when it opens mutual TLS to another proxy: the server's proxy tells mesh
# traffic (which it terminates) from an app's own TLS (which it passes on) by this suffix
MTLS_SNI_SUFFIX = ".mtls.meshinject.internal"
ACCESS_POLICY_GROUP = "security.meshinject.io"
ACCESS_POLICY_VERSION = "v1alpha1"
ACCESS_POLICY_KIND = "AccessPolicy"
ACCESS_POLICY_PLURAL = "accesspolicies"


def access_policies_path(namespace: str | None = None) -> str:
    """The API server's path of the AccessPolicies of one namespace, or of all (None)."""
    where = f"/namespaces/{namespace}" if namespace else ""
    return f"/apis/{ACCESS_POLICY_GROUP}/{ACCESS_POLICY_VERSION}{where}/{ACCESS_POLICY_PLURAL}"


# -- the installation (manifests/) ----------------------------------------------------------
INJECTOR_NAMESPACE = "meshinject-system"
CONTROLPLANE_SERVICE = "meshinject-controlplane"
CONTROLPLANE_APP_LABEL = ("app.kubernetes.io/name", "meshinject-controlplane")  # its pods
WEBHOOK_NAME = "meshinject"  # the MutatingWebhookConfiguration
INJECTOR_APP_LABEL = ("app.kubernetes.io/name", "meshinject")  # the injector's pods
CONFIGMAP = "meshinject-config"  # the mesh config, key CONFIG_KEY
CONFIG_KEY = "mesh.yaml"
CERT_SECRETS = ("meshinject-certs", "meshinject-tls")  # the cert store's, cert-manager's
