"""``meshinject serve``: the admission webhook, over TLS only.

The API server calls webhooks only over HTTPS, so there is no plain-HTTP mode to get wrong in
production. Three ways to get a certificate:

- ``--tls-cert F --tls-key F``: files someone else keeps (a mounted Secret, cert-manager);
- ``--self-signed``: a throwaway CA and serving certificate made at start, for local runs,
  tests and benchmarks; the CA's path is printed so a client can verify like the API server;
- ``--cert-secret NS/NAME``: the cert store keeps a CA and serving certificate in a Secret,
  patches the webhook's caBundle, writes the pair into ``--cert-dir`` and renews it.

In every mode the files are watched and a rotated pair is served to new connections without
a restart. One uvicorn worker: the machine has two cores and the review is CPU-bound Python, so
a second process would only help if the API server opened many connections at once; run more
replicas instead.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import logging
import shutil
import ssl
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from injector import certs
from injector.settings import MeshConfig, SettingsError, config_from_yaml

log = logging.getLogger("meshinject.serve")

# Longer than the API server's idle-connection timeout (90 s), so the client closes idle
# connections first and never sends a review on one we are closing.
KEEP_ALIVE_SECONDS = 120
# A request's headers must arrive this soon after its first byte (or after the connection is
# made). uvicorn times out idle keep-alive connections only, so without it a client that sends
# half a header, or nothing after the handshake, holds a connection and a descriptor forever.
HEADER_SECONDS = 10.0


def register(subparsers: Any, name: str) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        name, help="run the admission webhook (TLS)", description=__doc__.splitlines()[0]
    )
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=8443, help="TLS port (default 8443)")
    p.add_argument("--tls-cert", metavar="FILE", help="serving certificate (PEM, with chain)")
    p.add_argument("--tls-key", metavar="FILE", help="its private key (PEM)")
    p.add_argument("--self-signed", action="store_true", help="make a CA and serving cert now")
    p.add_argument(
        "--dns-name",
        action="append",
        default=[],
        metavar="NAME",
        help="extra DNS name for --self-signed (localhost and 127.0.0.1 are always in)",
    )
    p.add_argument("--config", metavar="FILE", help="mesh config YAML (default: built-in)")
    p.add_argument("--cert-secret", metavar="NS/NAME", help="keep the certs in this Secret")
    p.add_argument(
        "--webhook-config",
        metavar="NAME",
        default="meshinject",
        help="MutatingWebhookConfiguration whose caBundle to keep (--cert-secret)",
    )
    p.add_argument(
        "--service-name",
        metavar="NAME",
        default="meshinject",
        help="the webhook's Service, for the certificate's names (--cert-secret)",
    )
    p.add_argument(
        "--cert-dir",
        metavar="DIR",
        help="where to write tls.crt/tls.key (--cert-secret, --self-signed)",
    )
    p.add_argument(
        "--loop",
        default="auto",
        choices=["auto", "asyncio", "uvloop"],
        help="event loop (auto: uvloop when installed)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=HEADER_SECONDS,
        metavar="SECONDS",
        help=f"close a connection whose request headers take longer (default {HEADER_SECONDS:g})",
    )
    p.add_argument(
        "--http",
        default="auto",
        choices=["auto", "h11", "httptools"],
        help="HTTP/1.1 parser (auto: httptools when installed)",
    )
    p.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.set_defaults(run=run)


class UsageError(Exception):
    """A flag combination or value we cannot use; the message names the flag."""


def load_config(path: str | None) -> MeshConfig:
    if path is None:
        return MeshConfig()
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise UsageError(f"--config {path}: cannot read: {err.strerror}") from None
    try:
        return config_from_yaml(text)
    except SettingsError as err:
        raise UsageError(f"--config {path}: {err}") from None


def self_signed(cert_dir: Path, extra_dns: list[str]) -> tuple[Path, Path, Path]:
    """Write ca.crt, tls.crt and tls.key into ``cert_dir``; return their paths."""
    ca = certs.generate_ca("meshinject self-signed CA", days=30)
    pair = certs.generate_serving_cert(
        ca, dns_names=["localhost", *extra_dns], ip_addresses=["127.0.0.1"], days=30
    )
    cert_dir.mkdir(parents=True, exist_ok=True)
    paths = cert_dir / "ca.crt", cert_dir / "tls.crt", cert_dir / "tls.key"
    paths[0].write_bytes(ca.cert_pem)
    paths[1].write_bytes(pair.cert_pem)
    paths[2].touch(mode=0o600)
    paths[2].write_bytes(pair.key_pem)
    return paths


def _from_secret(args: argparse.Namespace, stop: threading.Event) -> tuple[Path, Path]:
    namespace, _, secret = args.cert_secret.partition("/")
    if not namespace or not secret or "/" in secret:
        raise UsageError(f"--cert-secret {args.cert_secret!r}: expected NAMESPACE/NAME")
    if not args.cert_dir:
        raise UsageError("--cert-secret needs --cert-dir, where the server reads its files")
    from injector import certstore  # here: it pulls in the Kubernetes client

    opts = certstore.CertStoreOptions(
        namespace=namespace,
        secret_name=secret,
        webhook_name=args.webhook_config,
        service_name=args.service_name,
        cert_dir=args.cert_dir,
    )
    certstore.bootstrap(opts)
    threading.Thread(
        target=certstore.keep_renewed, args=(opts, stop), name="cert-store", daemon=True
    ).start()
    return Path(args.cert_dir) / "tls.crt", Path(args.cert_dir) / "tls.key"


def cert_files(args: argparse.Namespace, stop: threading.Event) -> tuple[Path, Path]:
    modes = [bool(args.tls_cert or args.tls_key), args.self_signed, bool(args.cert_secret)]
    if sum(modes) != 1:
        raise UsageError("give exactly one of --tls-cert/--tls-key, --self-signed, --cert-secret")
    if args.self_signed:
        where = Path(args.cert_dir or tempfile.mkdtemp(prefix="meshinject-certs-"))
        if not args.cert_dir:
            atexit.register(shutil.rmtree, where, ignore_errors=True)
        ca_file, cert_file, key_file = self_signed(where, args.dns_name)
        print(f"meshinject: CA certificate: {ca_file}", flush=True)
        return cert_file, key_file
    if args.cert_secret:
        return _from_secret(args, stop)
    if not (args.tls_cert and args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    return Path(args.tls_cert), Path(args.tls_key)


def http_protocol(choice: str, *, header_seconds: float) -> Any:
    """The uvicorn HTTP protocol: httptools (when installed and not refused) with a deadline on
    request headers; plain h11 otherwise (uvicorn's own, with no such deadline)."""
    if choice == "h11":
        return "h11"
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        if choice == "httptools":
            raise
        return "h11"

    class HeaderDeadlineProtocol(HttpToolsProtocol):
        """Closes the connection when a request's headers are not complete in time."""

        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._deadline = self.loop.call_later(header_seconds, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            self.transport.close()

    return HeaderDeadlineProtocol


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from injector.app import create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    try:
        config = load_config(args.config)
        cert_file, key_file = cert_files(args, stop)
        reloading = certs.ReloadingSSLContext(cert_file, key_file)
    except UsageError as err:
        print(f"meshinject serve: {err}", file=sys.stderr)
        return 2
    except (OSError, ssl.SSLError) as err:
        print(f"meshinject serve: cannot load the certificate: {err}", file=sys.stderr)
        return 1
    reloading.start()
    server_config = uvicorn.Config(
        create_app(config=config),
        host=args.host,
        port=args.port,
        ssl_context_factory=lambda _cfg, _default: reloading.context,
        access_log=False,
        # the API server calls us directly: no X-Forwarded-* to trust, and no middleware for it
        proxy_headers=False,
        server_header=False,
        log_level=args.log_level,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        workers=1,
        loop=args.loop,
        http=http_protocol(args.http, header_seconds=args.header_timeout),
    )
    # everything built so far lives as long as the server: collect start-up's garbage once,
    # then keep the rest out of every collection
    gc.collect()
    gc.freeze()
    try:
        uvicorn.Server(server_config).run()
    finally:
        stop.set()
        reloading.stop()
    return 0
