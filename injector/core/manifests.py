"""Manifests as documents: read and write multi-document YAML, inject, uninject or judge every
pod template in them.

``inject_documents`` runs every pod template through the same pure core the webhook uses: every
one gets injected, everything else passes through, order kept. Output is deterministic YAML, so
injecting the output again gives the same bytes. ``uninject_documents`` is its exact inverse.
``check_documents`` says, per workload, whether and why it would be injected; given namespace
labels it judges as the webhook would.
"""

from __future__ import annotations

from typing import Any

import yaml

from injector.core import advice, policy, workloads
from injector.core.patch import inject_pod, judge, strip_injection
from mesh.errors import ManifestError, MeshError
from mesh.settings import MeshConfig


class _Dumper(yaml.SafeDumper):
    """Safe YAML with no anchors (shared subtrees are written out) and block-style scripts."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def load_documents(text: str, *, source: str | None = None) -> list[Any]:
    """Parse multi-document YAML; empty documents are dropped. ``source`` names the text in a
    syntax error (the ``-f`` path, or ``stdin``) where PyYAML would say "<unicode string>"."""
    loader = yaml.SafeLoader(text)  # what safe_load_all does, with the name set
    if source is not None:
        loader.name = source  # every error mark prints it ("in ..., line 3, column 5")
    docs: list[Any] = []
    try:
        while loader.check_data():  # type: ignore[no-untyped-call]
            docs.append(loader.get_data())
    except yaml.YAMLError as err:
        raise ManifestError(f"{source or 'the input'} is not valid YAML: {err}") from err
    finally:
        loader.dispose()
    return [doc for doc in docs if doc is not None]


def dump_documents(docs: list[Any]) -> str:
    return "".join(
        yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1 << 30, allow_unicode=True,
                  explicit_start=True, default_flow_style=False)
        for doc in docs
    )


def inject_documents(docs: list[Any], *, config: MeshConfig) -> tuple[list[Any], list[str]]:
    """Inject every pod template; returns the new documents and the skip and warning
    messages."""
    out: list[Any] = []
    notes: list[str] = []
    for index, doc in enumerate(docs, start=1):
        for found in _found(doc, index):
            try:
                result = inject_pod(found.pod, config=config, namespace=found.namespace)
            except MeshError as err:
                raise ManifestError(str(err), document=index, kind=found.title) from err
            if result.decision.inject:
                doc = workloads.replace(doc, found.path, result.pod)
                notes.extend(f"warning: {found.title}: {text}" for text in result.warnings)
            else:
                notes.append(f"skipped {found.title}: {result.decision.reason}")
        out.append(doc)
    return out, notes


def uninject_documents(docs: list[Any]) -> tuple[list[Any], list[str]]:
    """Remove what injection added from every pod template (``meshinject uninject``), the
    exact inverse of :func:`inject_documents`: what :mod:`injector.core.rendered` recognises as
    ours and the status annotation go, nothing else, and the pod comes back as it was (empty
    maps and lists included). Returns the documents and a note per workload left unchanged."""
    out: list[Any] = []
    notes: list[str] = []
    for index, doc in enumerate(docs, start=1):
        for found in _found(doc, index):
            stripped = strip_injection(found.pod)
            if stripped == found.pod:
                notes.append(f"unchanged {found.title}: not injected")
            else:
                doc = workloads.replace(doc, found.path, stripped)
        out.append(doc)
    return out, notes


def _found(doc: Any, index: int, **options: Any) -> list[workloads.Workload]:
    """The document's workloads, a bad shape named with the document's number."""
    try:
        return list(workloads.find(doc, **options))
    except ManifestError as err:
        raise ManifestError(err.why, document=index, kind=err.kind) from err


def check_documents(
    docs: list[Any], *, config: MeshConfig, namespace_labels: dict[str, str] | None,
    default_namespace: str | None = None, name: str | None = None, source: str = "the input",
) -> tuple[list[tuple[str, str, str]], bool]:
    """(workload, yes/no/error, why) per pod template, and whether every one was valid.

    Judged by the webhook's own ``judge``; without ``namespace_labels`` the namespace is
    assumed to opt in, as ``inject -f`` does, and the reason says so. With ``name``, only that
    workload is judged (another broken document is not its problem), and none of that name is
    a ManifestError saying "not found" in ``source``."""
    rows: list[tuple[str, str, str]] = []
    ok = True
    requested = policy.OFFLINE if namespace_labels is None else policy.REQUESTED
    namespace = default_namespace or workloads.DEFAULT_NAMESPACE
    for index, doc in enumerate(docs, start=1):
        for found in _found(doc, index, default_namespace=namespace, name=name):
            try:
                decision, overrides = judge(found.pod, config=config, namespace=found.namespace,
                                            namespace_labels=namespace_labels,
                                            requested=requested)
            except MeshError as err:
                rows.append((found.title, "error", str(err)))
                ok = False
                continue
            why = decision.reason
            if overrides is not None:
                why = "; warning: ".join((why, *advice.warnings(found.pod, overrides)))
            rows.append((found.title, "yes" if decision.inject else "no", why))
    if name is not None and not rows:
        raise ManifestError(f"workload {name!r} not found in {source}{_listing(docs, namespace)}")
    return rows, ok


def _listing(docs: list[Any], namespace: str) -> str:
    titles: list[str] = []
    for doc in docs:
        try:
            titles.extend(w.title for w in workloads.find(doc, default_namespace=namespace))
        except ManifestError:
            continue
    return f" (it has: {', '.join(titles)})" if titles else " (it has no workloads)"
