"""Manifests as documents: read and write multi-document YAML, inject or judge every pod
template in them.

``inject_documents`` runs every pod template through the same pure core the webhook uses: every
one gets injected, everything else passes through, order kept. Output is deterministic YAML, so
injecting the output again gives the same bytes. ``check_documents`` says, per workload, whether
and why it would be injected; given namespace labels it judges as the webhook would.
"""

from __future__ import annotations

from typing import Any

import yaml

from injector.core import advice, workloads
from injector.core.patch import inject_pod
from injector.core.policy import decide
from mesh.errors import ManifestError, MeshError
from mesh.overrides.pod import parse_overrides
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
        try:
            found_all = list(workloads.find(doc))
        except ManifestError as err:
            raise ManifestError(err.why, document=index, kind=err.kind) from err
        for found in found_all:
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


def check_documents(
    docs: list[Any], *, config: MeshConfig, namespace_labels: dict[str, str] | None,
    default_namespace: str | None = None,
) -> tuple[list[tuple[str, str, str]], bool]:
    """(workload, yes/no, why) per pod template, and whether every one was valid."""
    rows: list[tuple[str, str, str]] = []
    ok = True
    for doc in docs:
        for found in workloads.find(
            doc, default_namespace=default_namespace or workloads.DEFAULT_NAMESPACE
        ):
            title = found.title
            decision = decide(found.pod, namespace=found.namespace,
                              namespace_labels=namespace_labels, config=config)
            why = decision.reason
            if decision.inject:
                try:
                    overrides = parse_overrides(
                        (found.pod.get("metadata") or {}).get("annotations") or {}, config=config
                    )
                except MeshError as err:
                    rows.append((title, "error", str(err)))
                    ok = False
                    continue
                why = "; warning: ".join((why, *advice.warnings(found.pod, overrides)))
            rows.append((title, "yes" if decision.inject else "no", why))
    return rows, ok
