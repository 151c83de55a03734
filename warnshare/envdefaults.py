"""Command-line defaults taken from WARNSHARE_* environment variables (for containers)."""

from __future__ import annotations

import os


def env_str(name: str, default: str) -> str:
    return os.environ.get(f"WARNSHARE_{name}", default)


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(f"WARNSHARE_{name}")
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"WARNSHARE_{name}={raw!r} is not a number") from None


def env_int(name: str, default: int) -> int:
    return int(env_float(name, default))
