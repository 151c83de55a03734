"""`warnshare relay`: serve the relay app with uvicorn (uvloop, no permessage-deflate)."""

from __future__ import annotations

import argparse
import logging

from warnshare.envdefaults import env_float, env_int, env_str
from warnshare.protocol import MAX_NODE_FRAME_BYTES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default=env_str("HOST", "127.0.0.1"), help="bind address (WARNSHARE_HOST)"
    )
    parser.add_argument(
        "--port", type=int, default=env_int("PORT", 8000), help="port (WARNSHARE_PORT)"
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=env_float("TIME_SCALE", 1.0),
        help="divide the fusion's wall-clock time-outs (track lost, final assessment) by this, "
        "for scenarios replayed faster than real time (WARNSHARE_TIME_SCALE)",
    )
    parser.add_argument(
        "--journal",
        default=env_str("JOURNAL", "warnshare-relay.sqlite3"),
        help="SQLite journal; a restarted relay replays it (WARNSHARE_JOURNAL; '' or 'none' to run without)",
    )
    parser.add_argument(
        "--trust-store",
        default=env_str("TRUST_STORE", ""),
        help="trust.json from `warnshare keys init`: nodes must sign, subscribers need a token (WARNSHARE_TRUST_STORE)",
    )
    parser.add_argument(
        "--tls-cert",
        default=env_str("TLS_CERT", ""),
        help="PEM certificate: serve wss:// and https://",
    )
    parser.add_argument(
        "--tls-key", default=env_str("TLS_KEY", ""), help="PEM private key of --tls-cert"
    )
    parser.add_argument(
        "--log-level", default=env_str("LOG_LEVEL", "info"), help="WARNSHARE_LOG_LEVEL"
    )


def uvicorn_options(host: str, port: int, log_level: str = "info") -> dict:
    """The server settings the relay is built and measured with."""
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    return {
        "host": host,
        "port": port,
        "loop": loop,
        "http": "httptools",
        "ws": "websockets-sansio",
        "ws_max_size": MAX_NODE_FRAME_BYTES,
        "ws_per_message_deflate": False,
        "ws_ping_interval": 20.0,
        "ws_ping_timeout": 20.0,
        "log_level": log_level.lower(),
        "access_log": False,
        "lifespan": "on",
    }


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from warnshare.auth import TrustStore
    from warnshare.relay.app import RelayConfig, create_app

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.time_scale <= 0:
        raise SystemExit("warnshare relay: --time-scale must be > 0")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("warnshare relay: --tls-cert and --tls-key go together")
    journal = None if args.journal.lower() in ("", "none") else args.journal
    config = RelayConfig(
        journal_path=journal,
        trust=TrustStore.load(args.trust_store) if args.trust_store else None,
    ).scaled(args.time_scale)
    options = uvicorn_options(args.host, args.port, args.log_level)
    if args.tls_cert:
        options.update(ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key)
    uvicorn.run(create_app(config), **options)
    return 0
