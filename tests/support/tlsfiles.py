"""Certificate files as a rotation writes them, fingerprints to tell them apart, and a key file
that lets a test act at the moment the server reads it."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import ssl
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` in one rename, as the kubelet and the cert store do."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def fingerprint(reply: httpx.Response) -> str:
    """The SHA-256 of the certificate the server presented for ``reply``."""
    der = reply.extensions["network_stream"].get_extra_info("ssl_object").getpeercert(True)
    return hashlib.sha256(der).hexdigest()


def pem_fingerprint(pem: bytes) -> str:
    """The SHA-256 of a PEM certificate, comparable with :func:`fingerprint`."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.decode())).hexdigest()


def handshake(port: int, trust: ssl.SSLContext, *, server_hostname: str = "localhost") -> str:
    """A verified TLS handshake with 127.0.0.1:``port``: the presented certificate's
    fingerprint, or ``failed: ...`` with the error."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            trust.wrap_socket(raw, server_hostname=server_hostname) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as err:
        return f"failed: {err!r}"
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def _holds(pid: int, inode: int) -> bool:
    """Whether process ``pid`` has the FIFO ``inode`` open."""
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir() if fds.exists() else ():
        with contextlib.suppress(OSError):
            st = fd.stat()
            if st.st_ino == inode and stat.S_ISFIFO(st.st_mode):
                return True
    return False


class KeyFeeder:
    """A key file that is a FIFO, fed by the test: the test acts at each read of the key.

    A reload reads the key file (to see whether it changed, then to load it): each open of the
    FIFO blocks the reader until this feeder answers, and before it does, ``on_read`` runs, so
    a test can handshake with the server at exactly the moments a reload is under way (a
    reload that changed the live SSL context in place would have a certificate without its key
    right then). The feeder waits for the reader to close the FIFO before it serves the next
    open, so each read gets the key exactly once.
    """

    def __init__(self, key_file: Path, pem: bytes, *, reader: int,
                 on_read: Callable[[], None]) -> None:
        self.key_file, self.pem, self.reader, self.on_read = key_file, pem, reader, on_read
        self.fifo = key_file.with_name(key_file.name + ".fifo")
        self.reads = 0
        self.abandoned = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="key-feeder", daemon=True)

    def start(self) -> KeyFeeder:
        """Put the FIFO where the key file is, in one rename, as a rotation replaces a file."""
        os.mkfifo(self.fifo, 0o600)
        link = self.key_file.with_name(self.key_file.name + ".link")
        os.link(self.fifo, link)
        self._thread.start()
        os.replace(link, self.key_file)
        return self

    def _serve(self) -> None:
        inode = os.stat(self.fifo).st_ino
        while True:
            pipe = os.open(self.fifo, os.O_WRONLY)  # returns when a reader opens it
            try:
                if self._stop.is_set():
                    return
                self.reads += 1
                self.on_read()
                os.write(pipe, self.pem)  # a key is far less than the pipe's 64 KiB
            except BrokenPipeError:  # the reader gave up; it reads the file again next poll
                self.abandoned += 1
            finally:
                os.close(pipe)
            deadline = time.monotonic() + 10
            while _holds(self.reader, inode) and time.monotonic() < deadline:
                time.sleep(0.001)

    def stop(self, final: bytes) -> None:
        """Put a plain key file back (``final``) and end the feeder."""
        write_atomic(self.key_file, final)
        self._stop.set()
        # a reader that holds the FIFO lets the feeder's open return, and it sees the stop
        unblock = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            self._thread.join(timeout=10)
        finally:
            os.close(unblock)
            self.fifo.unlink()
        assert not self._thread.is_alive(), "the key feeder did not stop"
