"""meshinject in the local cluster: ``kubectl apply -k manifests/overlays/local``, then the injector
as a process on 127.0.0.1 with its ServiceAccount's own credentials.

The process runs what the installed Deployment's container would run: its args, with each
volume's mount path mapped to a directory under ``STATE/injector/volumes/`` (the ConfigMap's keys
written there, as the kubelet would mount them), on the port and host of the webhook's
``clientConfig.url``. Its kubeconfig holds a token the API server issued for the ServiceAccount
``meshinject-system/meshinject`` (TokenRequest), so every call the cert store makes (create the
Secret, patch the caBundle, renew) goes through the RBAC of ``manifests/`` for real.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from localcluster import api, pki
from localcluster.journal import Journal, Proc
from localcluster.state import OVERLAY, State

NAMESPACE, ACCOUNT, WEBHOOK = "meshinject-system", "meshinject", "meshinject"
TOKEN_SECONDS = 7 * 24 * 3600  # `make cluster-up` again after a week renews it
MESHINJECT = Path(sys.executable).parent / "meshinject"

Obj = dict[str, Any]


def kubectl(state: State, *args: str, stdin: str | None = None, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(state.kubeconfig)}
    proc = subprocess.run([state.binary("kubectl"), *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip() or proc.stdout}")
    return proc


def render(state: State, path: Path) -> list[Obj]:
    out = kubectl(state, "kustomize", str(path)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _one(docs: list[Obj], kind: str) -> Obj:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == WEBHOOK]
    if len(found) != 1:
        raise RuntimeError(f"the install renders {len(found)} {kind} named {WEBHOOK}")
    return found[0]


def _urls(docs: list[Obj]) -> set[str]:
    hooks = _one(docs, "MutatingWebhookConfiguration")["webhooks"]
    return {str((h.get("clientConfig") or {}).get("url", "")) for h in hooks}


def prepare(journal: Journal, state: State) -> tuple[Path, list[Obj]]:
    """What to ``apply -k``, and what it renders (kept in ``STATE/rendered.json``, so that a
    restart of the injector need not render it again): the local overlay as it is when the
    injector's port is the one it names; else (a second cluster on other ports, as the tests
    run) a kustomization in the state dir that keeps the overlay and changes only the port."""
    where, docs = _prepare(journal, state)
    journal.write_file(state.dir / "rendered.json", json.dumps(docs))
    return where, docs


def rendered(state: State) -> list[Obj]:
    """What :func:`prepare` rendered."""
    docs: list[Obj] = json.loads((state.dir / "rendered.json").read_text())
    return docs


def _prepare(journal: Journal, state: State) -> tuple[Path, list[Obj]]:
    docs = render(state, OVERLAY)
    want = f"https://127.0.0.1:{state.ports.injector}/mutate"
    if _urls(docs) == {want}:
        return OVERLAY, docs
    where = journal.make_dir(state.dir / "install")
    ops = [{"op": "replace", "path": f"/webhooks/{i}/clientConfig/url", "value": want}
           for i in range(len(_one(docs, "MutatingWebhookConfiguration")["webhooks"]))]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(OVERLAY, where)],
        "patches": [{"target": {"group": "admissionregistration.k8s.io",
                                "kind": "MutatingWebhookConfiguration", "name": WEBHOOK},
                     "patch": yaml.safe_dump(ops)}],
    }
    journal.write_file(where / "kustomization.yaml", "# written by scripts/cluster (ports)\n"
                       + yaml.safe_dump(kustomization, sort_keys=False))
    docs = render(state, where)
    if _urls(docs) != {want}:
        raise RuntimeError(f"{where}: the webhook's URLs are {_urls(docs)}, not {want}")
    return where, docs


def apply(state: State, install_dir: Path) -> None:
    kubectl(state, "apply", "-k", str(install_dir))


def issue_token(state: State) -> str:
    """TokenRequest for the injector's ServiceAccount (what ``kubectl create token`` does)."""
    path = f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{ACCOUNT}/token"
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": TOKEN_SECONDS}}
    answer = api.call(state, "POST", path, body)
    return str(answer["status"]["token"])


def _container(docs: list[Obj]) -> tuple[Obj, list[Obj]]:
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    return pod["containers"][0], pod.get("volumes") or []


def _mount_volumes(journal: Journal, state: State, container: Obj, volumes: list[Obj]
                   ) -> dict[str, Path]:
    """mount path -> local dir; a ConfigMap volume gets its keys as files (the kubelet's job,
    done here as admin: the injector itself may not read ConfigMaps)."""
    root = state.injector_dir / "volumes"
    root.mkdir(parents=True, exist_ok=True)
    by_name = {v["name"]: v for v in volumes}
    mapped = {}
    for mount in container.get("volumeMounts") or []:
        local = root / mount["name"]
        local.mkdir(exist_ok=True)
        source = by_name.get(mount["name"], {})
        if "configMap" in source:
            name = source["configMap"]["name"]
            cm = api.call(state, "GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps/{name}")
            for key, value in (cm.get("data") or {}).items():
                (local / key).write_text(value)
        mapped[mount["mountPath"].rstrip("/")] = local
    return mapped


def injector_argv(state: State, docs: list[Obj], mapped: dict[str, Path]) -> list[str]:
    container, _ = _container(docs)
    url = urlsplit(_urls(docs).pop())
    argv = [str(MESHINJECT)]
    for arg in container.get("args") or []:
        flag, eq, value = str(arg).partition("=")
        if flag in ("--port", "--host"):
            continue
        for mount in sorted(mapped, key=len, reverse=True):  # the deepest mount holds it
            if eq and (value == mount or value.startswith(mount + "/")):
                value = str(mapped[mount]) + value[len(mount):]
                break
        argv.append(f"{flag}{eq}{value}")
    argv += [f"--host={url.hostname}", f"--port={url.port}", f"--extra-san={url.hostname}"]
    if state.cert_check_seconds != 60.0:
        argv.append(f"--cert-check-seconds={state.cert_check_seconds:g}")
    return argv


def start_injector(journal: Journal, state: State, install_dir: Path, docs: list[Obj]) -> Proc:
    """A fresh token, the config as mounted, then ``meshinject serve`` as the Deployment says."""
    if not state.injector_dir.exists():
        journal.make_dir(state.injector_dir)
    journal.write_file(state.injector_dir / "kubeconfig", pki.kubeconfig(
        server=state.api_url, ca_file=state.pki / "ca.crt",
        user=f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}", token=issue_token(state)),
        mode=0o600)
    container, volumes = _container(docs)
    mapped = _mount_volumes(journal, state, container, volumes)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env["KUBECONFIG"] = str(state.injector_dir / "kubeconfig")
    return journal.spawn("injector", injector_argv(state, docs, mapped),
                         log=state.logs / "injector.log", env=env)


def ca_bundle(state: State) -> bytes | None:
    """The webhook's caBundle when every entry carries the same one, else None."""
    try:
        hook = api.call(state, "GET", "/apis/admissionregistration.k8s.io/v1/"
                        f"mutatingwebhookconfigurations/{WEBHOOK}")
    except api.ApiError:
        return None
    bundles = {(h.get("clientConfig") or {}).get("caBundle", "") for h in hook["webhooks"]}
    return base64.b64decode(bundles.pop()) if len(bundles) == 1 and "" not in bundles else None


def injector_ready(state: State) -> bool:
    """/readyz answers over TLS verified as the API server verifies the webhook: against the
    caBundle, for the URL's host (127.0.0.1, an IP SAN)."""
    bundle = ca_bundle(state)
    if bundle is None:
        return False
    ctx = ssl.create_default_context(cadata=bundle.decode())
    return api.healthy(state.ports.injector, "/readyz", ctx=ctx)


CONTROLPLANE = "meshinject-controlplane"


def controlplane_ready(state: State) -> tuple[int, int] | None:
    """(ready, wanted) replicas of the mesh's control plane once all are ready, else None."""
    try:
        found = api.call(state, "GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/"
                         f"{CONTROLPLANE}")
    except api.ApiError:
        return None
    wanted = int((found.get("spec") or {}).get("replicas", 1))
    ready = int((found.get("status") or {}).get("readyReplicas") or 0)
    return (ready, wanted) if ready >= wanted else None
