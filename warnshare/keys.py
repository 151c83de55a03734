"""`warnshare keys`: create a demo key set (node signing keys, subscriber tokens, trust store)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION")
    init = sub.add_parser(
        "init", help="create one Ed25519 key per nation, a token per consumer and trust.json"
    )
    init.add_argument("directory", help="where to write the keys (created if missing)")
    init.add_argument("--force", action="store_true", help="overwrite an existing key set")


def run(args: argparse.Namespace) -> int:
    from warnshare.auth import init_keys

    if args.keys_command != "init":
        print("usage: warnshare keys init DIR")
        return 2
    d = Path(args.directory)
    if (d / "trust.json").exists() and not args.force:
        print(f"warnshare keys: {d / 'trust.json'} exists; use --force to replace the key set")
        return 1
    for what, path in init_keys(d).items():
        print(f"{what:16s} {path}")
    print(f"\nrelay:      warnshare relay --trust-store {d / 'trust.json'}")
    print(f"node:       warnshare node --nation JPN --keys-dir {d} ...")
    print(f"subscriber: warnshare subscribe ws://127.0.0.1:8000 --token-file {d / 'jpn-ops.token'}")
    return 0
