"""The webhook's TLS context, which follows its certificate files without a restart.

The serving certificate is rotated by rewriting its files (the cert store, or a mounted Secret
that the kubelet updates). :class:`ReloadingSSLContext` notices and serves the new pair to new
handshakes without restarting the server, so no admission request fails during a rotation.
"""

from __future__ import annotations

import hashlib
import ssl
import threading
from pathlib import Path


def _server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class ReloadingSSLContext:
    """A server SSLContext whose certificate follows two files.

    A thread polls the files every ``interval`` seconds; when their contents change it builds a
    fresh context from them (a pair that does not load, e.g. a key written before its
    certificate, is left for the next poll and the old one stays in use). Each handshake picks
    the newest context in an SNI callback, which OpenSSL calls for every ClientHello, with or
    without a server name. Swapping a whole context is atomic; calling ``load_cert_chain`` again
    on the live context would also reach new handshakes, but it installs the certificate and
    the key in two steps with the GIL released, so a handshake in between could see a
    certificate without its key.
    """

    def __init__(self, cert_file: str | Path, key_file: str | Path, *, interval: float = 1.0):
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.interval = interval
        self.reloads = 0
        self.last_error: str | None = None
        self._digest = self._files_digest()
        self.context = _server_context(self.cert_file, self.key_file)
        self.context.sni_callback = self._pick
        self._current = self.context
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _pick(self, sslobj: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        current = self._current
        if sslobj.context is not current:
            sslobj.context = current

    def _files_digest(self) -> bytes:
        h = hashlib.sha256(self.cert_file.read_bytes())
        h.update(self.key_file.read_bytes())
        return h.digest()

    def check(self) -> bool:
        """Reload if the files changed; True when a new pair is now served."""
        try:
            digest = self._files_digest()
            if digest == self._digest:
                return False
            fresh = _server_context(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as err:
            self.last_error = f"cannot load {self.cert_file} / {self.key_file}: {err}"
            return False
        self._current = fresh
        self._digest = digest
        self.reloads += 1
        self.last_error = None
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()

    def start(self) -> ReloadingSSLContext:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cert-reload", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
