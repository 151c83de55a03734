"""`warnshare` command line: one subcommand per job, each implemented in its own module.

A subcommand's module is imported only when that subcommand runs, so `warnshare subscribe`
does not pay for the relay's or the simulator's imports. Each module provides
``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "relay": ("warnshare.relay.server", "run the relay (FastAPI + uvicorn)"),
    "node": ("warnshare.node", "run one nation's node: simulate its sensors and publish tracks"),
    "subscribe": ("warnshare.subscriber", "print the relay's alerts, one a line"),
    "demo": ("warnshare.demo", "relay + three nodes + a subscriber in one command"),
    "sim": ("sims.cli", "list, run and plot scenarios (no relay)"),
    "keys": ("warnshare.keys", "create node signing keys, subscriber tokens and a trust store"),
    "bench": ("warnshare.bench", "benchmarks: `bench fusion`, `bench relay`"),
}


#: The argv being parsed, for subcommands (``bench``) that pick their own lazy sub-subcommand.
CURRENT_ARGV: list[str] = []


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="warnshare",
        description="Real-time missile-warning data sharing between USA, JPN and KOR nodes "
        "through a fusing relay.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:
            module = importlib.import_module(module_name)
            module.add_arguments(sp)
            sp.set_defaults(_run=module.run)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("warnshare")
    except PackageNotFoundError:
        return "0+unknown"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    CURRENT_ARGV[:] = argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in COMMANDS else None)
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
