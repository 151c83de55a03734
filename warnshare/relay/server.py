"""`warnshare relay`: serve the relay app with uvicorn (uvloop, no permessage-deflate)."""

from __future__ import annotations

import argparse
import logging

from warnshare.envdefaults import env_float, env_int, env_str
from warnshare.protocol import MAX_NODE_FRAME_BYTES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=env_str("HOST", "127.0.0.1"), help="bind address (WARNSHARE_HOST)")
    parser.add_argument("--port", type=int, default=env_int("PORT", 8000), help="port (WARNSHARE_PORT)")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=env_float("TIME_SCALE", 1.0),
        help="divide the fusion time-outs (track lost, impact) by this factor, for scenarios "
        "replayed faster than real time (WARNSHARE_TIME_SCALE)",
    )
    parser.add_argument("--log-level", default=env_str("LOG_LEVEL", "info"), help="WARNSHARE_LOG_LEVEL")


def serve(host: str, port: int, config=None, log_level: str = "info") -> None:
    """Run the relay until interrupted."""
    import uvicorn

    from warnshare.relay.app import RelayConfig, create_app

    app = create_app(config or RelayConfig())
    uvicorn.run(app, **uvicorn_options(host, port, log_level))


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
    from warnshare.relay.app import RelayConfig

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = RelayConfig()
    config.fusion = config.fusion.scaled(args.time_scale) if hasattr(config.fusion, "scaled") else config.fusion
    serve(args.host, args.port, config, args.log_level)
    return 0
