"""A pod's volumes, made on this machine as a kubelet makes them, and kept current.

Each volume is a directory under the pod's state directory, bind-mounted into the containers
that mount it. emptyDir is an empty directory (mode 0777). configMap, secret, downwardAPI and
projected volumes are written the kubelet's way: the files of one version in a directory of
their own, a ``..data`` symlink to it swapped in one rename, and each visible name a symlink
through ``..data``; so a container reading the volume sees one version whole, also while it is
being replaced, and sees the new one through the same mount. Projected ServiceAccount tokens
come from the API server (TokenRequest, bound to the pod, with the volume's audience and
expiry) and are renewed at 80% of their lifetime, the kubelet's rule; ConfigMaps and Secrets
are read again every ``sync`` seconds and rewritten when they changed (``kube-root-ca.crt``,
the mesh's ``meshinject-ca-root``).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from injector.sandbox import podenv
from injector.sandbox.podspec import PodView
from mesh.errors import KubeError, NotFound
from mesh.kube.client import Kube

Obj = Mapping[str, Any]
Files = dict[str, tuple[bytes, int]]  # path in the volume -> (content, mode)
DATA = "..data"
REFRESH_AT = 0.8


class MissingSource(Exception):
    """A ConfigMap or Secret the volume needs is not there (the pod waits, as with a kubelet)."""


def atomic_write(target: Path, files: Files) -> bool:
    """Make ``target`` hold exactly ``files``; False when it already did (nothing written)."""
    target.mkdir(parents=True, exist_ok=True)
    current = target / DATA
    if current.is_symlink() and _same(target / os.readlink(current), files):
        return False
    version = target / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{uuid.uuid4().hex[:8]}"
    for path, (content, mode) in files.items():
        file = version / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(content)
        os.chmod(file, mode)
    for directory in [version, *(p for p in version.rglob("*") if p.is_dir())]:
        os.chmod(directory, 0o755)
    old = os.readlink(current) if current.is_symlink() else None
    temporary = target / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    temporary.symlink_to(version.name)
    temporary.replace(current)
    visible = {p.split("/", 1)[0] for p in files}
    for name in visible:
        if not (target / name).is_symlink():
            (target / name).symlink_to(f"{DATA}/{name}")
    for entry in target.iterdir():
        if not entry.name.startswith("..") and entry.name not in visible:
            entry.unlink()
    if old is not None:
        shutil.rmtree(target / old, ignore_errors=True)
    os.chmod(target, 0o755)
    return True


def _same(version: Path, files: Files) -> bool:
    found = {str(p.relative_to(version)) for p in version.rglob("*") if p.is_file()}
    if found != set(files):
        return False
    return all((version / path).read_bytes() == content for path, (content, _) in files.items())


def _mode(item: Obj, default: int) -> int:
    return int(item.get("mode", default))


def _items(data: Mapping[str, bytes], source: Obj, default_mode: int) -> Files:
    items = source.get("items")
    if not items:
        return {key: (value, default_mode) for key, value in data.items()}
    out: Files = {}
    for item in items:
        if item["key"] not in data:
            if source.get("optional"):
                continue
            raise MissingSource(f"{source.get('name')!r} has no key {item['key']!r}")
        out[str(item["path"])] = (data[item["key"]], _mode(item, default_mode))
    return out


class Volumes:
    """The pod's volumes: made by :meth:`prepare`, kept current by :meth:`refresh`."""

    def __init__(self, kube: Kube, pod: PodView, root: Path, *, facts: podenv.Facts,
                 sync: float = 10.0, token_max_age: float = 0.0) -> None:
        self.kube, self.pod, self.root, self.facts = kube, pod, root, facts
        self.sync, self.token_max_age = sync, token_max_age
        self._synced = 0.0
        self._renew_at: dict[str, float] = {}  # volume -> when its token is to be renewed

    def host_dir(self, name: str) -> Path:
        return self.root / name

    def prepare(self) -> None:
        """Make every volume; MissingSource or KubeError when one cannot be made yet."""
        self.root.mkdir(parents=True, exist_ok=True)
        for volume in self.pod.volumes:
            self._make(volume)
        self._synced = time.monotonic()

    def refresh(self) -> list[str]:
        """Renew what is due; the names of the volumes rewritten."""
        now = time.monotonic()
        due_sync = now - self._synced >= self.sync
        changed = []
        for volume in self.pod.volumes:
            name = str(volume["name"])
            renew = name in self._renew_at and now >= self._renew_at[name]
            if (renew or due_sync) and "emptyDir" not in volume:
                try:
                    if self._make(volume, tokens=renew or name not in self._renew_at):
                        changed.append(name)
                except (MissingSource, KubeError):
                    continue  # keep what the pod has; a kubelet does the same
        if due_sync:
            self._synced = now
        return changed

    # -- making one ------------------------------------------------------------------------
    def _make(self, volume: Obj, *, tokens: bool = True) -> bool:
        name, target = str(volume["name"]), self.host_dir(str(volume["name"]))
        if "emptyDir" in volume:
            target.mkdir(parents=True, exist_ok=True)
            os.chmod(target, 0o777)
            return False
        if "projected" in volume:
            mode = int(volume["projected"].get("defaultMode", 0o644))
            files: Files = {}
            for source in volume["projected"].get("sources") or []:
                files.update(self._source(name, source, mode, tokens=tokens))
        else:
            files = self._source(name, volume, -1, tokens=tokens)
        return atomic_write(target, files)

    def _source(self, volume: str, source: Obj, projected_mode: int, *, tokens: bool) -> Files:
        def mode(spec: Obj) -> int:
            return projected_mode if projected_mode >= 0 else int(spec.get("defaultMode",
                                                                           0o644))

        if "serviceAccountToken" in source:
            spec = source["serviceAccountToken"]
            path = str(spec.get("path", "token"))
            if not tokens:
                return {path: ((self.host_dir(volume) / path).read_bytes(), mode(spec))}
            return {path: (self._token(volume, spec).encode(), mode(spec))}
        if "configMap" in source:
            spec = source["configMap"]
            data = self._configmap(str(spec.get("name")), optional=bool(spec.get("optional")))
            return _items(data, spec, mode(spec))
        if "secret" in source:
            spec = source["secret"]
            name = str(spec.get("secretName") or spec.get("name"))
            data = self._secret(name, optional=bool(spec.get("optional")))
            return _items(data, {**spec, "name": name}, mode(spec))
        if "downwardAPI" in source:
            spec = source["downwardAPI"]
            return {str(item["path"]): (self._field(item).encode(), _mode(item, mode(spec)))
                    for item in spec.get("items") or []}
        raise MissingSource(f"volume {volume!r}: a source the sandbox node cannot make")

    def _field(self, item: Obj) -> str:
        if "fieldRef" in item:
            return podenv.field_text(str(item["fieldRef"].get("fieldPath")), self.facts) or ""
        ref = item.get("resourceFieldRef") or {}
        container = next((c.spec for c in self.pod.containers
                          if c.name == ref.get("containerName")), {})
        return podenv.resource_text(ref, container, self.facts)

    def _configmap(self, name: str, *, optional: bool) -> dict[str, bytes]:
        found = self._fetch("configmap", name, optional=optional)
        data = {k: str(v).encode() for k, v in (found.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (found.get("binaryData") or {}).items()})
        return data

    def _secret(self, name: str, *, optional: bool) -> dict[str, bytes]:
        found = self._fetch("secret", name, optional=optional)
        return {k: base64.b64decode(v) for k, v in (found.get("data") or {}).items()}

    def _fetch(self, kind: str, name: str, *, optional: bool) -> dict[str, Any]:
        """The pod's namespace's ``kind`` (configmap, secret) ``name``; empty when it is
        optional and missing, as the kubelet treats it."""
        try:
            found: dict[str, Any] = self.kube.request(
                "GET", f"/api/v1/namespaces/{self.pod.namespace}/{kind}s/{name}")
        except NotFound as err:
            if optional:
                return {}
            raise MissingSource(f'{kind} "{name}" not found') from err
        return found

    def _token(self, volume: str, spec: Obj) -> str:
        seconds = int(spec.get("expirationSeconds", 3600))
        body: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds, "boundObjectRef": {
                "apiVersion": "v1", "kind": "Pod", "name": self.pod.name, "uid": self.pod.uid}},
        }
        if spec.get("audience"):
            body["spec"]["audiences"] = [str(spec["audience"])]
        answer = self.kube.request(
            "POST", f"/api/v1/namespaces/{self.pod.namespace}/serviceaccounts/"
            f"{self.pod.service_account}/token", body=body)
        status = answer.get("status") or {}
        expires = dt.datetime.fromisoformat(str(status["expirationTimestamp"]).replace(
            "Z", "+00:00")).timestamp()
        lifetime = max(1.0, expires - time.time())
        wait = lifetime * REFRESH_AT
        if self.token_max_age:
            wait = min(wait, self.token_max_age)
        self._renew_at[volume] = time.monotonic() + wait
        return str(status["token"])
