"""Probes and lifecycle hooks as a kubelet runs them: from the node, at the pod's address.

An httpGet or tcpSocket probe is a connection from the node's namespace to the pod's IP (or
the probe's ``host``), so it passes the pod's capture rules as a kubelet's would (the mesh
excludes its proxy's readiness port from capture for that reason); HTTP answers 200-399 pass.
An exec probe or hook runs the command in the container's namespace, mounts and user, and
passes with exit code 0. A sleep hook sleeps. gRPC probes are not run by the sandbox node and
fail, saying so.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Mapping

from injector.sandbox import nssocket
from injector.sandbox.podspec import Probe

USER_AGENT = "kube-probe/1.37"
Exec = Callable[[list[str], float], int]  # (argv, timeout) -> exit code


def _http(node_ns: str, host: str, probe: Probe, timeout: float) -> tuple[bool, str]:
    sock = nssocket.socket_in(node_ns)
    with sock:
        sock.settimeout(timeout)
        sock.connect((host, probe.port))
        conn: socket.socket = sock
        if probe.scheme.upper() == "HTTPS":
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # as the kubelet
            conn = ctx.wrap_socket(sock, server_hostname=host)
        headers = {"Host": f"{host}:{probe.port}", "User-Agent": USER_AGENT, "Accept": "*/*",
                   "Connection": "close", **dict(probe.headers)}
        request = f"GET {probe.path or '/'} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        conn.sendall(request.encode())
        head = b""
        while b"\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                break
            head += chunk
    try:
        code = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return False, "not an HTTP answer"
    return 200 <= code < 400, f"HTTP {code}"


def run(probe: Probe, *, node_ns: str, pod_ip: str, exec_in: Exec,
        stop: threading.Event | None = None) -> tuple[bool, str]:
    """(passed, what was seen): ``HTTP 503``, ``connection refused``, ``exit code 1``."""
    host = probe.host or pod_ip
    timeout = max(probe.timeout, 0.5)
    try:
        if probe.kind == "http":
            return _http(node_ns, host, probe, timeout)
        if probe.kind == "tcp":
            with nssocket.socket_in(node_ns) as sock:
                sock.settimeout(timeout)
                sock.connect((host, probe.port))
            return True, "connected"
        if probe.kind == "exec":
            code = exec_in(list(probe.command), timeout)
            return code == 0, f"exit code {code}"
        if probe.kind == "sleep":
            (stop or threading.Event()).wait(probe.seconds)
            return True, f"slept {probe.seconds:g} s"
    except TimeoutError:
        return False, f"timed out after {timeout:g}s"
    except subprocess.TimeoutExpired:
        return False, f"command timed out after {timeout:g}s"
    except OSError as err:
        return False, (err.strerror or str(err)).lower() if err.errno else str(err)
    return False, f"{probe.kind} probes are not run by the sandbox node"


def describe(probe: Probe) -> str:
    """As a manifest author wrote it: ``httpGet :8080/healthz``, ``exec [cat /tmp/ok]``."""
    if probe.kind == "http":
        return f"httpGet :{probe.port}{probe.path}"
    if probe.kind == "tcp":
        return f"tcpSocket :{probe.port}"
    if probe.kind == "exec":
        return f"exec {list(probe.command)}"
    return probe.kind


def exec_runner(argv_for: Callable[[list[str]], list[str]], env: Mapping[str, str]) -> Exec:
    """Run a command as the container would (its namespace, mounts and user), bounded."""

    def run_it(command: list[str], timeout: float) -> int:
        done = subprocess.run(argv_for(command), env=dict(env), capture_output=True,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        return done.returncode

    return run_it
