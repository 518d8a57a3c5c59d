"""Talk to a port inside a pod's namespace without starting a process there.

A socket belongs to the network namespace of the thread that created it, and ``setns`` moves
only the calling thread. So a short-lived thread enters the namespace, creates the socket and
ends; the socket then works from any thread. This makes a probe or an Envoy stats read cost a
millisecond instead of a Python start-up in ``ip netns exec`` (about 50 ms).
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def socket_in(namespace: str) -> socket.socket:
    """A fresh TCP socket created inside ``/run/netns/<namespace>``."""
    result: list[socket.socket | BaseException] = []

    def enter() -> None:
        try:
            fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {namespace}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        except BaseException as err:  # handed to the caller's thread
            result.append(err)

    thread = threading.Thread(target=enter, name=f"setns-{namespace}")
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def http_get(
    namespace: str, port: int, path: str = "/", *, host: str = "127.0.0.1", timeout: float = 2,
    header_host: str | None = None,
) -> tuple[int, str]:
    """(status, body) of a one-shot HTTP/1.1 GET inside the namespace; raises OSError.

    HTTP/1.1, not 1.0: Envoy answers 1.0 with 426 unless told to accept it.
    """
    sock = socket_in(namespace)
    with sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        request = f"GET {path} HTTP/1.1\r\nHost: {header_host or host}\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise OSError(f"not an HTTP answer from {host}:{port} in {namespace}") from None
    return status, body.decode(errors="replace")


def probe(
    namespace: str, *, kind: str, port: int, path: str = "/", host: str = "127.0.0.1"
) -> bool:
    """A kubelet-style probe: HTTP 200-399, or a TCP connect."""
    return probe_result(namespace, kind=kind, port=port, path=path, host=host)[0]


def probe_result(
    namespace: str, *, kind: str, port: int, path: str = "/", host: str = "127.0.0.1"
) -> tuple[bool, str]:
    """The probe's verdict and what it saw, as a user would want it reported: ``HTTP 503``,
    ``connection refused``, ``timed out``."""
    try:
        if kind == "http":
            code = http_get(namespace, port, path, host=host, timeout=1)[0]
            return 200 <= code < 400, f"HTTP {code}"
        with socket_in(namespace) as sock:
            sock.settimeout(1)
            sock.connect((host, port))
        return True, "connected"
    except TimeoutError:
        return False, "timed out after 1s"
    except OSError as err:
        return False, (err.strerror or str(err)).lower() if err.errno else str(err)
