"""`warnshare bench`: `fusion` (engine quality and speed against Stone Soup) and `relay` (latency)."""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHES: dict[str, tuple[str, str]] = {
    "fusion": ("warnshare.bench.fusion", "fusion quality and speed against the Stone Soup anchor"),
    "relay": ("warnshare.bench.relay", "relay latency and throughput against raw baselines"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH")
    from warnshare.cli import CURRENT_ARGV

    after = CURRENT_ARGV[CURRENT_ARGV.index("bench") + 1 :] if "bench" in CURRENT_ARGV else []
    chosen = next((a for a in after if not a.startswith("-")), None)
    for name, (module_name, help_text) in BENCHES.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(sp)
            sp.set_defaults(_bench_run=module.run)


def run(args: argparse.Namespace) -> int:
    bench_run = getattr(args, "_bench_run", None)
    if bench_run is None:
        print("usage: warnshare bench {fusion,relay} [options]  (see --help)", file=sys.stderr)
        return 2
    return int(bench_run(args) or 0)
