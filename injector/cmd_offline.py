"""``meshinject inject`` and ``meshinject check``: the injector without a cluster.

``inject`` pipes any multi-document manifest through the same pure core the webhook uses:
every pod template gets injected, everything else passes through, order kept. Namespace labels
are ignored (piping a manifest through ``inject`` is the opt-in) but opt-outs and hard skips are
honoured, with the reason on stderr. Output is deterministic YAML, so injecting the output again
gives the same bytes. Nothing reaches stdout unless every document succeeded: a half-injected
manifest piped into ``kubectl apply`` would be worse than none.

``check`` explains, per workload, whether and why it would be injected; given
``--namespace-label`` it judges as the webhook would for a namespace with those labels. Without
``-f`` it asks a live cluster (``injector.livecheck``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, TextIO

import yaml

from injector import advice, workloads
from injector.annotations import parse_overrides
from injector.errors import ManifestError, MeshInjectError
from injector.patch import inject_pod
from injector.policy import decide
from injector.settings import MeshConfig, SettingsError, config_from_yaml


class _Dumper(yaml.SafeDumper):
    """Safe YAML with no anchors (shared subtrees are written out) and block-style scripts."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def load_documents(text: str) -> list[Any]:
    """Parse multi-document YAML; empty documents are dropped."""
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as err:
        raise ManifestError(f"the input is not valid YAML: {err}") from err


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
            except MeshInjectError as err:
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
                except MeshInjectError as err:
                    rows.append((title, "error", str(err)))
                    ok = False
                    continue
                why = "; warning: ".join((why, *advice.warnings(found.pod, overrides)))
            rows.append((title, "yes" if decision.inject else "no", why))
    return rows, ok


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"cannot read {path}: {err}") from err


def _config(path: str | None) -> MeshConfig:
    if path is None:
        return MeshConfig()
    return config_from_yaml(_read(path))


def _fail(err: Exception, stderr: TextIO) -> int:
    print(f"meshinject: error: {err}", file=stderr)
    return 2 if isinstance(err, SettingsError) else 1


def run_inject(args: argparse.Namespace) -> int:
    try:
        config = _config(args.config)
        docs, notes = inject_documents(load_documents(_read(args.filename)), config=config)
    except (MeshInjectError, SettingsError) as err:
        return _fail(err, sys.stderr)
    for note in notes:
        print(note, file=sys.stderr)
    sys.stdout.write(dump_documents(docs))
    return 0


def parse_labels(pairs: list[str]) -> dict[str, str] | None:
    """``--namespace-label k=v`` values (offline and live check share them); None when absent."""
    if not pairs:
        return None
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ManifestError(f"--namespace-label {pair!r} is invalid: expected key=value")
        labels[key] = value
    return labels


def run_check(args: argparse.Namespace) -> int:
    if args.filename is None:
        # a live cluster: the Kubernetes client is imported only when asked for
        livecheck = importlib.import_module("injector.livecheck")
        code: int = livecheck.run(args)
        return code
    try:
        config = _config(args.config)
        rows, ok = check_documents(
            load_documents(_read(args.filename)), config=config,
            namespace_labels=parse_labels(args.namespace_label), default_namespace=args.namespace,
        )
    except (MeshInjectError, SettingsError) as err:
        return _fail(err, sys.stderr)
    if args.pod:
        rows = [row for row in rows if row[0].rsplit("/", 1)[-1] == args.pod]
    width = max((len(row[0]) for row in rows), default=8)
    print(f"{'WORKLOAD':<{width}}  INJECT  REASON")
    for title, verdict, why in rows:
        print(f"{title:<{width}}  {verdict:<6}  {why}")
    return 0 if ok else 1


_DESCRIPTIONS = {
    "inject": "Inject every pod template in a multi-document YAML manifest (or List) and write "
              "the result to stdout; other documents pass through untouched, skip reasons go "
              "to stderr. Namespace labels are ignored; opt-outs and hard skips are honoured.",
    "check": "Say, per workload, whether it would be injected and why. With -f, from a "
             "manifest (--namespace-label judges as the webhook would for a namespace with "
             "those labels); without -f, from a live cluster.",
}


def register(subparsers: Any, name: str) -> None:
    parser = subparsers.add_parser(name, description=_DESCRIPTIONS[name])
    parser.add_argument("--config", metavar="FILE", help="mesh config YAML (default: built-in)")
    if name == "inject":
        parser.add_argument("-f", "--filename", required=True, metavar="FILE",
                            help="manifest to inject, or - for stdin")
        parser.set_defaults(run=run_inject)
        return
    parser.add_argument("pod", nargs="?", help="only this workload (by name)")
    parser.add_argument("-f", "--filename", metavar="FILE",
                        help="manifest to check, or -; without it, check a live cluster")
    parser.add_argument("-n", "--namespace", help="namespace for workloads that name none")
    parser.add_argument("--kubeconfig", metavar="FILE", help="for a live cluster check")
    parser.add_argument("--namespace-label", action="append", default=[], metavar="KEY=VALUE",
                        help="a label of the namespace (repeat); judge as the webhook would")
    parser.set_defaults(run=run_check)
