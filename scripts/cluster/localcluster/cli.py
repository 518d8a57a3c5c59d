"""``cluster.py up | down | status | injector start|stop|restart``: what the Makefile and CI call.

``up`` is idempotent: with everything running it says so and does nothing; with the control plane
running but the injector stopped (or the install deleted) it brings those back; with any part of
the control plane dead it removes what is left and starts afresh (a throwaway cluster). ``down``
undoes the journal: it works on what a crashed ``up`` left, and needs only the standard library.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from localcluster.journal import Journal, is_running
from localcluster.state import DEFAULT_PORT_BASE, HERE, REPO, Ports, State

T0 = time.monotonic()


def say(line: str) -> None:
    print(f"[{time.monotonic() - T0:5.1f}s] {line}", flush=True)


# -- down (standard library only) ----------------------------------------------------------
def _down(journal: Journal) -> None:
    procs = journal.processes()
    for proc in reversed(procs):
        if proc.stopped:
            continue
        t0 = time.monotonic()
        how = journal.stop(proc)
        say(f"{proc.name:<24} {how} (pid {proc.pid}) in {time.monotonic() - t0:.1f} s")
    for line in journal.remove_everything():
        say(line)


def cmd_down(args: argparse.Namespace) -> int:
    journal = Journal(args.state_dir)
    if not journal.exists():
        say(f"no cluster in {args.state_dir} (no journal): nothing to do")
        return 0
    with journal.locked():
        _down(journal)
    say("cluster down")
    return 0


# -- up ------------------------------------------------------------------------------------
def _binaries(timeout: int) -> str:
    """The bin dir from build.sh's cache; built (in the background, with progress) if absent."""
    build = str(HERE / "build.sh")
    found = subprocess.run([build, "--print-bin"], capture_output=True, text=True, check=False)
    if found.returncode == 0:
        return found.stdout.strip()
    say(f"binaries not built yet: building (bounded at {timeout} s; progress every 20 s)")
    t0 = time.monotonic()
    subprocess.run([build, "--background", "--wait", str(timeout)], check=True)
    found = subprocess.run([build, "--print-bin"], capture_output=True, text=True, check=True)
    say(f"binaries built in {time.monotonic() - t0:.0f} s")
    return found.stdout.strip()


def _ports_free(ports: Ports) -> None:
    busy = []
    for name, port in vars(ports).items():
        with socket.socket() as s:
            # SO_REUSEADDR, as the servers set it: a port whose old connections linger in
            # TIME_WAIT is free to listen on; only a listener makes the bind fail
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                busy.append(f"{name} {port}")
    if busy:
        raise SystemExit(f"cluster.py: ports in use: {', '.join(busy)} (another cluster? "
                         "`cluster.py status`, or --port-base)")


def _step(name: str, fn: Callable[[], object], what: str) -> None:
    t0 = time.monotonic()
    fn()
    say(f"{name:<24} {what} in {time.monotonic() - t0:4.1f} s")


def _fresh_up(args: argparse.Namespace, bin_dir: str) -> None:
    from localcluster import control, nodes, pki  # need the venv (cryptography, yaml)

    state = State(state_dir=str(args.state_dir), bin_dir=bin_dir,
                  ports=Ports.from_base(args.port_base), nodes=list(args.node),
                  cert_check_seconds=args.cert_check_seconds,
                  token_refresh_seconds=args.token_refresh_seconds)
    _ports_free(state.ports)
    journal = Journal(args.state_dir)
    with journal.locked():
        journal.write_file(state.dir / "state.json", state.to_json())
        journal.make_dir(state.logs)
        journal.make_dir(state.pki)

        def make_pki() -> None:
            pki.make_all(journal, state.pki)
            control.write_kubeconfigs(journal, state)

        _step("PKI", make_pki, "2 CAs, 7 certificates, SA key pair, kubeconfigs")
        journal.write("path", path=str(state.dir / "etcd"))
        etcd = control.start_etcd(journal, state)
        _step(f"etcd (pid {etcd.pid})", lambda: control.wait_etcd(journal, state, etcd),
              "healthy")
        apiserver = control.start_apiserver(journal, state)
        _step(f"kube-apiserver (pid {apiserver.pid})",
              lambda: control.wait_apiserver(journal, state, apiserver), "/readyz ok")
        # the controllers take ~6 s to get going; install the injector meanwhile (applying
        # needs only the API server, and its ServiceAccount comes from the manifests)
        started = time.monotonic()
        kcm, sched = control.start_controllers(journal, state)
        control.bind_kubelet_client(state)
        _install(journal, state, fresh=True)
        waited = time.monotonic()
        control.wait_controllers(journal, state, kcm, sched)
        say(f"{'controllers':<24} kube-controller-manager (pid {kcm.pid}) and kube-scheduler "
            f"(pid {sched.pid}) running {time.monotonic() - started:.1f} s after their start "
            f"({time.monotonic() - waited:.1f} s of it after the injector was up)")
        nodes.start_all(journal, state, state.nodes, say)
        _wait_controlplane(state)


def _wait_controlplane(state: State) -> None:
    """With the sandbox node, the mesh's control plane runs in the cluster: up returns once
    its replicas are ready (a proxy started before would only wait for it)."""
    from localcluster import api, install, nodes

    if nodes.SANDBOX_NODE not in [spec.partition("=")[0] for spec in state.nodes]:
        return
    t0 = time.monotonic()
    api.wait_for("the mesh control plane ready on the sandbox node",
                 lambda: install.controlplane_ready(state) is not None, timeout=120)
    ready = install.controlplane_ready(state) or (0, 0)
    say(f"{'control plane':<24} {install.CONTROLPLANE} {ready[0]}/{ready[1]} ready on the "
        f"sandbox node in {time.monotonic() - t0:4.1f} s")


def _install(journal: Journal, state: State, *, fresh: bool) -> None:
    """Apply the install (unless it is there), then start the injector and wait for it."""
    from localcluster import api, install

    t0 = time.monotonic()
    if fresh or not state.install_dir:
        install_dir, docs = install.prepare(journal, state)
        state.install_dir = str(install_dir)
        (state.dir / "state.json").write_text(state.to_json())
    else:
        install_dir, docs = Path(state.install_dir), install.rendered(state)
    present = True
    try:
        api.call(state, "GET", f"/api/v1/namespaces/{install.NAMESPACE}/serviceaccounts/"
                 f"{install.ACCOUNT}")
        api.call(state, "GET", "/apis/admissionregistration.k8s.io/v1/"
                 f"mutatingwebhookconfigurations/{install.WEBHOOK}")
    except api.ApiError:
        present = False
    if not present:
        install.apply(state, install_dir)
        say(f"{'kubectl apply -k':<24} {_short(install_dir)} in {time.monotonic() - t0:4.1f} s")
    old = journal.running("injector")
    if old is not None:  # re-installed: its token names a ServiceAccount that is gone
        journal.stop(old)
    t1 = time.monotonic()
    proc = install.start_injector(journal, state, install_dir, docs)
    api.wait_for("injector /readyz (TLS verified against the webhook's caBundle, as 127.0.0.1)",
                 lambda: install.injector_ready(state), timeout=60,
                 alive=lambda: None if is_running(proc) else _tail(proc.log))
    say(f"{f'injector (pid {proc.pid})':<24} Secret, caBundle, /readyz in "
        f"{time.monotonic() - t1:4.1f} s at {state.ports.injector}")


def _tail(log: str) -> str:
    lines = Path(log).read_text(errors="replace").splitlines()[-15:]
    return "exited; last lines of " + log + ":\n    " + "\n    ".join(lines)


def _short(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def _assess(journal: Journal, state: State | None) -> tuple[str, list[str]]:
    """("running" | "broken", why) for an existing journal: running when every control-plane
    process is the journal's and the API server is ready."""
    from localcluster import control

    if state is None:
        return "broken", ["no state.json: an `up` that crashed early"]
    missing = [n for n in control.COMPONENTS if journal.running(n) is None]
    if missing:
        return "broken", [f"{', '.join(missing)} not running"]
    if not control.apiserver_ready(state):
        return "broken", ["kube-apiserver not ready"]
    return "running", []


def cmd_up(args: argparse.Namespace) -> int:
    from localcluster import nodes

    for spec in args.node:
        nodes.parse(spec)  # a bad --node fails before anything starts
    journal = Journal(args.state_dir)
    if journal.exists():
        with journal.locked():
            state = State.load(args.state_dir)
            verdict, why = _assess(journal, state)
            if verdict == "running" and state is not None:
                return _top_up(journal, state, args)
            say(f"found a broken cluster in {args.state_dir} ({'; '.join(why)}): removing it")
            _down(journal)
    bin_dir = _binaries(args.build_timeout)
    say(f"starting a cluster in {args.state_dir} (binaries {bin_dir})")
    try:
        _fresh_up(args, bin_dir)
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        say(f"FAILED: {err}")
        say("logs kept in the state dir; `make cluster-down` (cluster.py down) removes it all")
        return 1
    state = State.load(args.state_dir)
    assert state is not None
    say(f"cluster up in {time.monotonic() - T0:.1f} s")
    _usage(state)
    return 0


def _top_up(journal: Journal, state: State, args: argparse.Namespace) -> int:
    """The control plane runs: report it; bring back the injector or node agents if gone."""
    from localcluster import install, nodes

    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        proc = journal.running(name)
        say(f"{name:<24} running (pid {proc.pid if proc else '?'})")
    did = []
    injector = journal.running("injector")
    if injector is not None and install.injector_ready(state):
        say(f"{'injector':<24} running (pid {injector.pid}), ready")
    else:
        say(f"{'injector':<24} not running or not ready: starting it")
        _install(journal, state, fresh=False)
        did.append("injector started")
    wanted = [s for s in args.node if s not in state.nodes]
    for spec in state.nodes:
        agent, count = nodes.parse(spec)
        say(f"{agent.name:<24} " + ("running" if journal.running(agent.name) and
                                    agent.ready(state, count) else "NOT running (cluster.py "
                                    "down && up to restart node agents)"))
    if wanted:
        nodes.start_all(journal, state, wanted, say)
        state.nodes += wanted
        (state.dir / "state.json").write_text(state.to_json())
        did.append(f"node agents started: {', '.join(wanted)}")
    say("cluster already up: " + ("; ".join(did) if did else "nothing to do"))
    _usage(state)
    return 0


def _usage(state: State) -> None:
    print(f"\n  export KUBECONFIG={state.kubeconfig}\n"
          f"  export PATH={state.bin_dir}:$PATH   # kubectl at the cluster's release\n"
          f"  API server {state.api_url}; injector https://127.0.0.1:{state.ports.injector}"
          f" (log {state.logs / 'injector.log'})")


# -- status, injector ----------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    journal = Journal(args.state_dir)
    if not journal.exists():
        print(f"no cluster in {args.state_dir}")
        return 1
    ok = True
    latest = {p.name: p for p in journal.processes()}
    for proc in latest.values():
        alive = is_running(proc)
        ok = ok and alive
        print(f"{proc.name:<24} {'running' if alive else 'NOT running'} (pid {proc.pid})")
    return 0 if ok else 1


def cmd_injector(args: argparse.Namespace) -> int:
    journal = Journal(args.state_dir)
    state = State.load(args.state_dir)
    if not journal.exists() or state is None:
        say(f"no cluster in {args.state_dir}")
        return 1
    with journal.locked():
        if args.action in ("stop", "restart"):
            proc = journal.running("injector")
            say(f"injector: {journal.stop(proc) if proc else 'was not running'}")
        if args.action in ("start", "restart"):
            if journal.running("injector") is None:
                _install(journal, state, fresh=False)
            else:
                say("injector: already running")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster.py", description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=REPO / ".cluster",
                        help="where everything lives (default: .cluster/ in the repository)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the cluster (idempotent)")
    up.add_argument("--port-base", type=int, default=DEFAULT_PORT_BASE,
                    help="ports BASE+1..5, and BASE+43 for the injector "
                    f"(default {DEFAULT_PORT_BASE})")
    up.add_argument("--node", action="append", default=[], metavar="AGENT[=N]",
                    help="start a node agent with N nodes (kwok, sandbox)")
    up.add_argument("--cert-check-seconds", type=float, default=60.0,
                    help="the injector's cert store interval (tests rotate certificates fast)")
    up.add_argument("--token-refresh-seconds", type=float, default=0.0,
                    help="the sandbox node renews projected tokens this long after issue at "
                    "the latest (tests; default: at 80%% of their lifetime, as a kubelet)")
    up.add_argument("--build-timeout", type=int, default=3000,
                    help="give up waiting for the binaries' build after this long")
    up.set_defaults(run=cmd_up)
    sub.add_parser("down", help="stop everything up started, remove every file it made"
                   ).set_defaults(run=cmd_down)
    sub.add_parser("status", help="what runs; exit 0 if everything does"
                   ).set_defaults(run=cmd_status)
    inj = sub.add_parser("injector", help="stop, start or restart the injector process alone")
    inj.add_argument("action", choices=["start", "stop", "restart"])
    inj.set_defaults(run=cmd_injector)
    args = parser.parse_args(argv)
    args.state_dir = args.state_dir.resolve()
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
