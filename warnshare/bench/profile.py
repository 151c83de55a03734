"""Sampling profile of the server under test with py-spy (optional), summarised as text.

``py-spy record --format raw`` writes one collapsed stack per line with its sample count; the
summary lists the functions holding the most samples, inclusive and self, so a report can say
where the relay spends its time under a given load.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

_SEND_PATH = ("WebSocket.send_bytes", "Protocol.send (", "Frame.serialize", "data_to_send")


def py_spy_path() -> str | None:
    return shutil.which("py-spy")


def start_py_spy(pid: int, duration_s: float, raw_path: Path, rate_hz: int = 200) -> subprocess.Popen[bytes]:
    """Sample ``pid`` for ``duration_s`` into ``raw_path`` (collapsed stacks), without pausing it."""
    path = py_spy_path()
    if path is None:
        raise FileNotFoundError("py-spy is not installed (pip install py-spy)")
    return subprocess.Popen(
        [path, "record", "-p", str(pid), "-d", str(max(1, int(duration_s))), "-r", str(rate_hz),
         "-f", "raw", "--nonblocking", "-o", str(raw_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarize_collapsed(lines: list[str], top: int = 30) -> str:
    """Inclusive and self sample shares of the hottest frames of collapsed stacks."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        for f in set(frames):
            inclusive[f] += n
        own[frames[-1]] += n
    if not total:
        return "no samples\n"
    out = [f"{total} samples (the process is sampled only while it runs Python code; idle time is not counted)", "",
           "inclusive  function (file:line)"]
    # the server loop and middleware chain are in nearly every sample and say nothing: list
    # the project's own frames and the WebSocket send path
    interesting = [
        (f, c) for f, c in inclusive.most_common()
        if "warnshare/" in f and "warnshare/bench/" not in f or any(k in f for k in _SEND_PATH)
    ]
    out += [f"{100 * c / total:8.1f}%  {f}" for f, c in interesting[:top]]
    out += ["", "self       function (file:line)"]
    out += [f"{100 * c / total:8.1f}%  {f}" for f, c in own.most_common(top)]
    return "\n".join(out) + "\n"
