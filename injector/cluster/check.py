"""``meshinject check`` against a live cluster: why a pod is, or is not, injected.

It asks the same questions the API server and the webhook do, in their order, and prints the
answer to each: is the namespace labelled, does the pod opt in or out (label, annotation), does a
hard skip apply (host network, system namespace, the injector's own), would one of the webhook's
entries even be called for it (selectors see labels only), and is the webhook able to answer at
all (installed, caBundle set and trusting the serving certificate, days left, replicas ready).
Then it compares the verdict with what the pod actually has. Exit 0 when everything agrees, 1
when a pod is not what it should be or the webhook is unusable, 2 when the cluster cannot be read.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import TextIO
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from injector.core.podview import Obj, PodFacts, pod_facts, selector_matches
from mesh.contract import (
    CERT_SECRETS,
    INJECT,
    INJECTOR_APP_LABEL,
    NAMESPACE_ENABLED,
    WEBHOOK_NAME,
)
from mesh.errors import KubeError, NotFound
from mesh.kube.client import Kube
from mesh.pki import certs
from mesh.settings import MeshConfig


def _hook_entries(config: Obj | None, ns_labels: Mapping[str, str], pod: Obj) -> list[str]:
    """The webhook entries the API server would call for this pod, by their selectors."""
    if config is None:
        return []
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return [
        hook["name"]
        for hook in config.get("webhooks") or []
        if selector_matches(hook.get("namespaceSelector"), ns_labels)
        and selector_matches(hook.get("objectSelector"), labels)
    ]


def webhook_report(kube: Kube, *, config: MeshConfig) -> tuple[bool, list[str], Obj | None]:
    """(usable, lines, the configuration) for the webhook and the injector behind it."""
    try:
        hook = kube.get_webhook_config(WEBHOOK_NAME)
    except NotFound:
        return (
            False,
            [
                f"webhook: MutatingWebhookConfiguration {WEBHOOK_NAME} is not installed "
                "(kubectl apply -k manifests/)"
            ],
            None,
        )
    entries = hook.get("webhooks") or []
    bundles = {(h.get("clientConfig") or {}).get("caBundle", "") for h in entries}
    if not entries or "" in bundles:
        return (
            False,
            [
                f"webhook {WEBHOOK_NAME}: caBundle is empty: the injector has not "
                "started yet, or cannot patch it (see its logs)"
            ],
            hook,
        )
    counted = f"{len(entries)} {'entry' if len(entries) == 1 else 'entries'}"
    lines = [f"webhook {WEBHOOK_NAME}: {counted}, caBundle set on all"]
    ok = len(bundles) == 1
    if not ok:
        lines.append("  entries carry different caBundles: one of them is stale")
    client_config = entries[0].get("clientConfig") or {}
    url = client_config.get("url")
    host = _webhook_host(client_config)
    try:
        ok = _certificates(kube, config, base64.b64decode(bundles.pop()), host, lines) and ok
    except ValueError as err:
        ok = False
        lines.append(f"  a certificate is not valid PEM: {err}")
    if url:
        # registered by URL (a local cluster: the injector is a process beside the API
        # server), so no pod of the injector's namespace is what answers
        lines.append(f"  injector: called at {url} (clientConfig.url), not through its pods")
        return ok, lines, hook
    ready, total = _injector_pods(kube, config.injector_namespace)
    ok = ok and ready > 0
    lines.append(f"  injector: {ready}/{total} pods ready in {config.injector_namespace}")
    return ok, lines, hook


def _webhook_host(client_config: Obj) -> str:
    """The name the API server checks the serving certificate for: the Service's
    ``name.namespace.svc``, or the host of ``clientConfig.url``."""
    if url := client_config.get("url"):
        return urlsplit(str(url)).hostname or str(url)
    service = client_config.get("service") or {}
    return f"{service.get('name')}.{service.get('namespace')}.svc"


def _days_left(days: float) -> str:
    whole = round(days)
    return f"{whole} day{'' if whole == 1 else 's'} left"


def _certificates(
    kube: Kube, config: MeshConfig, ca_pem: bytes, host: str, lines: list[str]
) -> bool:
    """The CA's and the serving certificate's lines; False when the API server would refuse."""
    ca = x509.load_pem_x509_certificate(ca_pem)
    lines.append(f"  CA {ca.subject.rfc4514_string()}: {_days_left(certs.days_left(ca_pem))}")
    serving, where = _serving_cert(kube, config.injector_namespace)
    if serving is None:
        lines.append(f"  serving certificate: {where}")
        return True
    good = _verifies(serving, ca_pem)
    verdict = "verifies against the caBundle" if good else "does NOT verify against the caBundle"
    names = _dns_names(serving)
    named = f"names {host}" if host in names else f"does NOT name {host} (has {', '.join(names)})"
    days = certs.days_left(serving)
    lines.append(f"  serving certificate ({where}) {verdict}, {named}, {_days_left(days)}")
    return good and host in names and days > 0


def _dns_names(pem: bytes) -> list[str]:
    """The names a client may reach the certificate's holder by: DNS names, then IPs."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    ips = [str(a) for a in sans.get_values_for_type(x509.IPAddress)]
    return list(sans.get_values_for_type(x509.DNSName)) + ips


def _serving_cert(kube: Kube, namespace: str) -> tuple[bytes | None, str]:
    for name in CERT_SECRETS:
        try:
            data = kube.get_secret(namespace, name).get("data") or {}
        except NotFound:
            continue
        except KubeError as err:
            if err.status == 403:
                return None, f"not checked: no permission to read secret {namespace}/{name}"
            raise
        if data.get("tls.crt"):
            return base64.b64decode(data["tls.crt"]), f"secret {namespace}/{name}"
    return None, f"not found in secret {' or '.join(CERT_SECRETS)} of {namespace}"


def _verifies(serving_pem: bytes, bundle_pem: bytes) -> bool:
    cert = x509.load_pem_x509_certificate(serving_pem)
    for ca in x509.load_pem_x509_certificates(bundle_pem):
        try:
            cert.verify_directly_issued_by(ca)
            return True
        except (ValueError, TypeError, InvalidSignature):
            continue
    return False


def _injector_pods(kube: Kube, namespace: str) -> tuple[int, int]:
    pods = [
        p
        for p in kube.list_pods(namespace)
        if (p["metadata"].get("labels") or {}).get(INJECTOR_APP_LABEL[0]) == INJECTOR_APP_LABEL[1]
    ]
    ready = sum(
        1
        for p in pods
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
    )
    return ready, len(pods)


def _namespace_line(ns: str, labels: Mapping[str, str]) -> str:
    value = labels.get(INJECT)
    if value == NAMESPACE_ENABLED:
        return f"{ns} has label {INJECT}={NAMESPACE_ENABLED}"
    return f"{ns} has label {INJECT}={value}" if value else f"{ns} has no {INJECT} label"


def explain_pod(facts: PodFacts, *, ns_labels: Mapping[str, str], entries: list[str]) -> list[str]:
    """The full story of one pod, one line per question."""
    pod = facts.pod
    meta = pod.get("metadata") or {}
    flag_label = (meta.get("labels") or {}).get(INJECT)
    flag_note = (meta.get("annotations") or {}).get(INJECT)
    opt = [f"label {INJECT}={flag_label}"] if flag_label is not None else []
    opt += [f"annotation {INJECT}={flag_note}"] if flag_note is not None else []
    selected = f"{', '.join(entries)} selects this pod" if entries else "no entry selects this pod"
    lines = [
        f"pod {facts.namespace}/{facts.name}: {facts.verdict}",
        f"  namespace   {_namespace_line(facts.namespace, ns_labels)}",
        f"  pod         {', '.join(opt) if opt else f'no {INJECT} label or annotation'}",
        f"  decision    {'inject' if facts.decision.inject else 'skip'}: {facts.decision.reason}",
        f"  webhook     {selected}",
    ]
    if facts.decision.inject and not entries and flag_note is not None and flag_label is None:
        lines.append(f"  note        the webhook selects pods by label: use label {INJECT}=true")
    if facts.injected:
        lines.append(f"  injected    {facts.summary}")
    elif facts.decision.inject and not entries:
        lines.append("  injected    no: no webhook entry is called for it")
    elif facts.decision.inject:
        lines.append(
            "  injected    no: created before injection applied, or the webhook was "
            "skipped; re-create it (kubectl rollout restart ...)"
        )
    return lines


def live_check(
    kube: Kube,
    *,
    pod: str | None,
    namespace: str | None,
    namespace_labels: Mapping[str, str] | None,
    config: MeshConfig,
    out: TextIO,
) -> int:
    """Print the verdict for ``pod`` (in ``namespace``, default "default"), or a row per pod of
    ``namespace`` or of every mesh-enabled namespace, then the webhook's report. Exit code 0
    when everything agrees, 1 when a pod is not what it should be or the webhook is unusable.
    ``namespace_labels`` override the namespaces' own (judge as if they had them)."""
    overrides = dict(namespace_labels or {})
    if pod:
        namespaces = [namespace or "default"]
    elif namespace:
        namespaces = [namespace]
    else:
        found = kube.list_namespaces(label_selector=f"{INJECT}={NAMESPACE_ENABLED}")
        namespaces = [n["metadata"]["name"] for n in found]
    hook_ok, hook_lines, hook = webhook_report(kube, config=config)
    good = hook_ok
    rows: list[tuple[str, str, str, str]] = []
    for ns in namespaces:
        ns_labels = {**(kube.get_namespace(ns)["metadata"].get("labels") or {}), **overrides}
        pods = [kube.get_pod(ns, pod)] if pod else kube.list_pods(ns)
        for one in pods:
            facts = pod_facts(one, namespace=ns, namespace_labels=ns_labels, config=config)
            good = good and not facts.missing
            if pod:
                entries = _hook_entries(hook, ns_labels, one)
                print("\n".join(explain_pod(facts, ns_labels=ns_labels, entries=entries)), file=out)
            else:
                rows.append(
                    (
                        f"{ns}/{facts.name}",
                        "yes" if facts.decision.inject else "no",
                        facts.injected_column,
                        facts.decision.reason,
                    )
                )
    if not pod:
        if not rows:
            print(
                "no pods in mesh-enabled namespaces"
                if not namespace
                else f"no pods in namespace {namespace}",
                file=out,
            )
        else:
            width = max(len(r[0]) for r in rows)
            print(f"{'POD':<{width}}  SHOULD  INJECTED  WHY", file=out)
            for name, should, injected, why in rows:
                print(f"{name:<{width}}  {should:<6}  {injected:<8}  {why}", file=out)
    print("\n".join(hook_lines), file=out)
    return 0 if good else 1
