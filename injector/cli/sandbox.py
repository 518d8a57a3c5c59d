"""``meshinject sandbox up|status|logs|down``: injected pods, locally.

The sandbox runs a manifest's pods as a cluster would after injection, each in its own network
namespace behind a bridge in a "node" namespace, with real mesh-init and real Envoy. ``up``
returns once every pod is ready, leaving a supervisor running them; ``down`` removes it all.
When the pods do not all become ready, ``up`` says which container of which pod and why, and
keeps the sandbox for ``status`` and ``logs`` (as a cluster keeps a pod that is not ready);
``--down-on-failure`` removes it instead.
Everything here is printing and flags; the work is in :mod:`injector.sandbox`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from injector.cli.files import read_input, source_name
from injector.core.manifests import load_documents
from injector.sandbox import control
from injector.sandbox.progress import Progress, plural
from injector.sandbox.state import StateDir, default_dir, same_process
from mesh.errors import MeshError, SandboxError
from mesh.settings import load_config


def need_root() -> None:
    if os.geteuid() != 0:
        raise SandboxError("the sandbox creates network namespaces: run it as root")


def _up(args: argparse.Namespace) -> int:
    from injector.sandbox.plan import build_plan

    need_root()
    state = StateDir(Path(args.state_dir))
    docs = load_documents(read_input(args.filename), source=source_name(args.filename))
    plan = build_plan(docs, config=load_config(args.config),
                      namespace=args.namespace, max_replicas=args.max_replicas)
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.foreground:
        from injector.sandbox.supervisor import Supervisor

        state.create(plan)
        state.record_owner(os.getpid())
        print(f"running {plural(len(plan.pods), 'pod')} in the foreground; Ctrl-C stops them",
              flush=True)
        code = Supervisor(state, owner=os.getpid()).run()
        left = control.down(state)
        print("stopped; " + (f"could not remove {left}" if left else "removed everything"))
        return code or int(bool(left))
    pid = control.start(state, plan)
    bar = Progress(f"starting {plural(len(plan.pods), 'pod')}")
    where = "" if args.state_dir == str(default_dir()) else f" --state-dir {state.root}"
    try:
        control.wait_ready(state, plan, supervisor=pid, timeout=args.timeout,
                           progress=lambda ready, total: bar.update(f"{ready}/{total} ready"))
    except SandboxError as err:
        bar.done("not ready")
        if args.down_on_failure:
            left = control.down(state)
            after = f"could not remove: {', '.join(left)}" if left else "removed everything"
        else:
            after = (f"the sandbox is kept for inspection: `meshinject sandbox status{where}`, "
                     f"`meshinject sandbox logs POD CONTAINER{where}`; remove it with "
                     f"`meshinject sandbox down{where}`")
        raise SandboxError(f"{err}\n{after}") from err
    except BaseException:  # Ctrl-C or a bug: nothing half-started stays behind
        bar.done("interrupted")
        control.down(state)
        raise
    bar.done(f"{len(plan.pods)}/{len(plan.pods)} ready")
    print_status(state)
    print(f"\nstate: {state.root}   stop with: meshinject sandbox down{where}")
    return 0


def print_status(state: StateDir) -> None:
    plan, status = state.plan(), state.status()
    pods = status.get("pods") or {}
    print(f"{'POD':<24} {'IP':<14} {'PROXY':<10} {'CONTAINER':<14} {'ROLE':<8} "
          f"{'STATE':<11} {'RESTARTS':>8}  UID")
    for pod in plan.pods:
        info = pods.get(pod.key) or {}
        proxy = control.readiness(info["netns"]) if pod.injected and info.get("netns") else "-"
        first = True
        for c in pod.containers:
            got = (info.get("containers") or {}).get(c.name) or {}
            state_text = got.get("state", "waiting")
            if got.get("exit_code") not in (None, 0):
                state_text += f"({got['exit_code']})"
            head = (f"{pod.key:<24} {pod.address:<14} {proxy:<10}" if first else " " * 50)
            uid = "root" if c.uid in (None, 0) else str(c.uid)
            restarts = got.get("restarts", 0)
            print(f"{head} {c.name:<14} {c.role:<8} {state_text:<11} {restarts:>8}  {uid}")
            first = False


def _status(args: argparse.Namespace) -> int:
    state = StateDir(Path(args.state_dir))
    if not state.exists():
        print(f"no sandbox in {state.root}")
        return 1
    phase = state.status().get("phase", "starting")
    owner = state.owner()
    if owner is not None and not same_process(*owner) and owner[0] != os.getpid():
        phase = f"supervisor (pid {owner[0]}) is gone; run `meshinject sandbox down`"
    print(f"sandbox in {state.root}: {phase}")
    print_status(state)
    return 0


def _logs(args: argparse.Namespace) -> int:
    state = StateDir(Path(args.state_dir))
    if not state.exists():
        raise SandboxError(f"no sandbox in {state.root}")
    if args.tail < -1:
        raise SandboxError(f"--tail {args.tail} is invalid: expected -1 (all lines, the "
                           "default), 0 (none) or a number of lines from the end")
    pod = state.plan().pod(args.pod)
    if pod is None:
        names = ", ".join(p.key for p in state.plan().pods)
        raise SandboxError(f"no pod {args.pod!r} in the sandbox (pods: {names})")
    apps = [c.name for c in pod.containers if c.role == "app"]
    container = args.container or apps[0]
    if container not in [c.name for c in pod.containers]:
        raise SandboxError(f"pod {pod.key} has no container {container!r} "
                           f"(containers: {', '.join(c.name for c in pod.containers)})")
    path = state.log_path(pod.key, container)
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    shown = lines if args.tail == -1 else lines[max(0, len(lines) - args.tail):]
    sys.stdout.write("".join(line + "\n" for line in shown))
    return 0


def _down(args: argparse.Namespace) -> int:
    need_root()
    state = StateDir(Path(args.state_dir))
    if not state.root.exists():
        print(f"no sandbox in {state.root}")
        return 0
    removed = state.resources()["namespaces"]
    left = control.down(state)
    if left:
        print("could not remove: " + ", ".join(left), file=sys.stderr)
        return 1
    print(f"removed {plural(len(removed), 'namespace')} and the state in {state.root}")
    return 0


def guard(fn: Any) -> Any:
    """A command's run function that prints a MeshError (or an interrupt) and exits non-zero."""

    def run(args: argparse.Namespace) -> int:
        try:
            code: int = fn(args)
            return code
        except MeshError as err:
            print(f"meshinject {args.command}: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # whatever was started has been removed on the way out
            print(f"\nmeshinject {args.command}: interrupted", file=sys.stderr)
            return 130

    return run


DESCRIPTION = (
    "Run a manifest's pods on this machine as a cluster would after injection: each pod in its "
    "own network namespace behind a bridge, with real mesh-init rules and real Envoy. Needs "
    "root."
)


def register(subparsers: Any, name: str) -> None:
    p = subparsers.add_parser(name, help="run injected pods locally in network namespaces",
                              description=DESCRIPTION)
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions = {
        "up": ("start a manifest's pods, injected", _up),
        "status": ("pods, containers, restarts and proxy readiness", _status),
        "logs": ("a container's output", _logs),
        "down": ("stop and remove everything the sandbox made", _down),
    }
    for action, (help_text, fn) in actions.items():
        a = sub.add_parser(action, help=help_text,
                           description=help_text[0].upper() + help_text[1:] + ".")
        a.add_argument("--state-dir", default=str(default_dir()),
                       help="state directory (default $MESHINJECT_SANDBOX_DIR or %(default)s)")
        a.set_defaults(run=guard(fn))
        if action == "up":
            a.add_argument("-f", "--filename", required=True, metavar="FILE", help="manifest, or -")
            a.add_argument("--config", metavar="FILE", help="mesh config YAML (default: built-in)")
            a.add_argument("-n", "--namespace", default="default",
                           help="namespace for objects that name none (default: default)")
            a.add_argument("--max-replicas", type=int, default=3,
                           help="run at most this many pods per workload (default 3)")
            a.add_argument("--timeout", type=float, default=60, help="seconds to wait for ready")
            a.add_argument("--down-on-failure", action="store_true",
                           help="remove everything when the pods do not become ready (default: "
                                "keep the sandbox for sandbox status and logs)")
            a.add_argument("--foreground", action="store_true",
                           help="supervise in this process until Ctrl-C, then remove everything")
        if action == "logs":
            a.add_argument("pod", help="pod name (NAME or NAME.NAMESPACE)")
            a.add_argument("container", nargs="?", help="container (default: the first app)")
            a.add_argument("--tail", type=int, default=-1, metavar="N",
                           help="only the last N lines; -1 (the default) for all, as kubectl")
