"""``meshinject serve``: the admission webhook, over TLS only (flags; the server is
:mod:`injector.webhook.server`)."""

from __future__ import annotations

import argparse
import logging
import ssl
import sys
import threading
from typing import Any

from injector.webhook.certsource import CertSource, cert_files
from injector.webhook.server import HEADER_SECONDS, ServeOptions, exit_cleanly_on_stop, serve
from injector.webhook.tls import ReloadingSSLContext
from mesh.errors import MeshError, SettingsError, UsageError
from mesh.settings import load_config

DESCRIPTION = (
    "Run the mutating admission webhook over TLS: POST /mutate answers AdmissionReview v1 with a "
    "JSONPatch; /healthz, /readyz and /metrics for probes and Prometheus."
)


def run(args: argparse.Namespace) -> int:
    exit_cleanly_on_stop()  # before the self-signed key exists, so a stop always removes it
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    source = CertSource(
        tls_cert=args.tls_cert, tls_key=args.tls_key, self_signed=args.self_signed,
        dns_names=tuple(args.dns_name), cert_secret=args.cert_secret,
        webhook_config=args.webhook_config, service_name=args.service_name,
        cert_dir=args.cert_dir, extra_sans=tuple(args.extra_san),
        cert_check_seconds=args.cert_check_seconds,
    )
    try:
        config = load_config(args.config)
        cert_file, key_file = cert_files(source, stop)
        tls = ReloadingSSLContext(cert_file, key_file)
    except (UsageError, SettingsError) as err:
        print(f"meshinject serve: {err}", file=sys.stderr)
        return 2
    except (OSError, ssl.SSLError, MeshError) as err:
        print(f"meshinject serve: cannot load the certificate: {err}", file=sys.stderr)
        return 1
    options = ServeOptions(host=args.host, port=args.port, loop=args.loop, http=args.http,
                           header_timeout=args.header_timeout, log_level=args.log_level)
    return serve(options, config=config, tls=tls, stop=stop)


def register(subparsers: Any, name: str) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        name, help="run the admission webhook (TLS)", description=DESCRIPTION
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
        "--extra-san",
        action="append",
        default=[],
        metavar="NAME|IP",
        help="another name for the certificate (--cert-secret), e.g. 127.0.0.1 when the webhook "
        "is registered by clientConfig.url on this host; an IP address becomes an IP SAN",
    )
    p.add_argument(
        "--cert-check-seconds",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how often the cert store re-reads its Secret to renew or follow it (default 60)",
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
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
        help="log level (default info)",
    )
    p.set_defaults(run=run)
