"""The only module that talks to the Kubernetes API server (and imports its client).

A thin edge over the ``kubernetes`` client: every call returns the object exactly as the API
server sent it (plain JSON dicts, camelCase, the same shape ``kubectl get -o json`` shows), so
the rest of the injector deals in the same dicts the webhook receives, never in generated
models. Foreign exceptions (``ApiException``, urllib3 connection errors, kubeconfig problems)
are translated here, with ``raise ... from``, into :class:`~mesh.errors.KubeError` and its two
subclasses the callers branch on: ``Conflict`` (409: someone else wrote first) and ``NotFound``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError

from mesh.contract import access_policies_path
from mesh.errors import Conflict, KubeError, NotFound

Obj = dict[str, Any]
T = TypeVar("T")

def _translate(what: str, call: Callable[[], T]) -> T:
    """Run one API call, turning the client's exceptions into ours (naming the object)."""
    try:
        return call()
    except ApiException as err:
        status = int(err.status or 0)
        message = _status_message(err.body) or str(err.reason or "error")
        text = f"{what}: HTTP {status}: {message}"
        if status == 404:
            raise NotFound(text, status=status) from err
        if status == 409:
            raise Conflict(text, status=status) from err
        raise KubeError(text, status=status) from err
    except HTTPError as err:
        raise KubeError(f"{what}: cannot reach the API server: {err}") from err


def _status_message(body: Any) -> str:
    """The ``message`` of a metav1.Status body, if the server sent one."""
    if not body:
        return ""
    try:
        status = json.loads(body)
    except (TypeError, ValueError):
        return str(body)[:200]
    return str(status.get("message", "")) if isinstance(status, dict) else ""


def _json(response: Any) -> Obj:
    data = json.loads(response.data or b"{}")
    if not isinstance(data, dict):
        raise KubeError(f"API server answered with a {type(data).__name__}, not an object")
    return data


def load_api_client(*, kubeconfig: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """An API client from ``kubeconfig`` (or $KUBECONFIG / ~/.kube/config), or the pod's service
    account when running in a cluster and no kubeconfig was named."""
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = k8s.Configuration()
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
            return k8s.ApiClient(configuration)
        api: k8s.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context
        )
        return api
    except (ConfigException, OSError) as err:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise KubeError(f"cannot load Kubernetes credentials (kubeconfig {where}): {err}") from err


class Kube:
    """The handful of API calls meshinject makes, each returning the server's JSON."""

    def __init__(self, api_client: k8s.ApiClient, *, timeout: float = 10.0) -> None:
        self.api_client = api_client
        self.core = k8s.CoreV1Api(api_client)
        self.admission = k8s.AdmissionregistrationV1Api(api_client)
        self.timeout = timeout

    @classmethod
    def connect(cls, *, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        return cls(load_api_client(kubeconfig=kubeconfig, context=context))

    def _call(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Obj:
        kwargs.update(_preload_content=False, _request_timeout=self.timeout)
        return _json(_translate(what, lambda: method(*args, **kwargs)))

    # -- any path: what the registries and the local cluster use ----------------------------
    def _raw(self, method: str, path: str, *, query: dict[str, Any] | None = None,
             body: Any = None, content_type: str = "application/json",
             timeout: float | tuple[float, float] | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        method_, url, headers, body, _ = self.api_client.param_serialize(
            method, path, query_params=list((query or {}).items()), header_params=headers,
            body=body, auth_settings=["BearerToken"])
        response = self.api_client.call_api(
            method_, url, header_params=headers, body=body,
            _request_timeout=self.timeout if timeout is None else timeout).response
        if not 200 <= response.status < 300:
            data = response.data
            raise ApiException(http_resp=response, body=data.decode("utf-8", "replace"),
                               data=None)
        return response

    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                body: Any = None, content_type: str = "application/json") -> Obj:
        """One call to any API path (``/apis/discovery.k8s.io/v1/endpointslices``), as JSON."""
        return _json(_translate(f"{method} {path}", lambda: self._raw(
            method, path, query=query, body=body, content_type=content_type)))

    def stream(self, path: str, *, query: dict[str, Any], read_timeout: float) -> Any:
        """A streaming GET (a watch): the raw response, to read line by line, then close."""
        return _translate(f"watch {path}", lambda: self._raw(
            "GET", path, query=query, timeout=(self.timeout, read_timeout)))

    # -- secrets: the certificate store ----------------------------------------------------
    def get_secret(self, namespace: str, name: str) -> Obj:
        return self._call(
            f"get secret {namespace}/{name}", self.core.read_namespaced_secret, name, namespace
        )

    def create_secret(self, namespace: str, body: Obj) -> Obj:
        name = body.get("metadata", {}).get("name", "?")
        return self._call(
            f"create secret {namespace}/{name}",
            self.core.create_namespaced_secret,
            namespace,
            body,
        )

    def replace_secret(self, namespace: str, name: str, body: Obj) -> Obj:
        """PUT with the body's ``metadata.resourceVersion``: a stale one raises Conflict."""
        return self._call(
            f"replace secret {namespace}/{name}",
            self.core.replace_namespaced_secret,
            name,
            namespace,
            body,
        )

    # -- the webhook configuration ---------------------------------------------------------
    def get_webhook_config(self, name: str) -> Obj:
        return self._call(
            f"get mutatingwebhookconfiguration {name}",
            self.admission.read_mutating_webhook_configuration,
            name,
        )

    def json_patch_webhook_config(self, name: str, ops: list[Obj]) -> Obj:
        return self._call(
            f"patch mutatingwebhookconfiguration {name}",
            self.admission.patch_mutating_webhook_configuration,
            name,
            ops,
            _content_type="application/json-patch+json",
        )

    # -- read-only views for inspect and check ---------------------------------------------
    def get_configmap(self, namespace: str, name: str) -> Obj:
        return self._call(
            f"get configmap {namespace}/{name}",
            self.core.read_namespaced_config_map,
            name,
            namespace,
        )

    def get_namespace(self, name: str) -> Obj:
        return self._call(f"get namespace {name}", self.core.read_namespace, name)

    def list_namespaces(self, *, label_selector: str | None = None) -> list[Obj]:
        kwargs = {"label_selector": label_selector} if label_selector else {}
        found = self._call("list namespaces", self.core.list_namespace, **kwargs)
        return list(found.get("items") or [])

    def get_pod(self, namespace: str, name: str) -> Obj:
        return self._call(
            f"get pod {namespace}/{name}", self.core.read_namespaced_pod, name, namespace
        )

    def list_pods(self, namespace: str) -> list[Obj]:
        found = self._call(f"list pods in {namespace}", self.core.list_namespaced_pod, namespace)
        return list(found.get("items") or [])

    def list_access_policies(self, namespace: str | None = None) -> list[Obj]:
        """The AccessPolicies of one namespace, or of all (None), as the API server has them."""
        found = self.request("GET", access_policies_path(namespace))
        return list(found.get("items") or [])

    def list_all_pods(self, *, label_selector: str) -> list[Obj]:
        """Pods in every namespace carrying a label (the object-selector opt-ins)."""
        found = self._call(
            f"list pods with {label_selector}",
            self.core.list_pod_for_all_namespaces,
            label_selector=label_selector,
        )
        return list(found.get("items") or [])

    def pod_proxy_query(self, namespace: str, pod: str, *, port: int, path: str,
                        query: dict[str, str]) -> str:
        """GET with a query string through the pod proxy (``path`` without it)."""
        where = f"/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/{path.lstrip('/')}"
        response = _translate(f"GET {where}", lambda: self._raw("GET", where, query=query))
        return bytes(response.data or b"").decode("utf-8", "replace")

    def pod_proxy_get(self, namespace: str, pod: str, *, port: int, path: str) -> str:
        """GET through the API server's pod proxy (needs ``pods/proxy`` get): how inspect reads
        a proxy's Prometheus stats without a port-forward."""
        what = f"GET pod {namespace}/{pod}:{port}/{path.lstrip('/')} through the API server proxy"
        response: Any = _translate(
            what,
            lambda: self.core.connect_get_namespaced_pod_proxy_with_path(
                f"{pod}:{port}",
                namespace,
                path.lstrip("/"),
                _preload_content=False,
                _request_timeout=self.timeout,
            ),
        )
        return bytes(response.data or b"").decode("utf-8", "replace")
