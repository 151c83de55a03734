"""`warnshare demo`, run as a user runs it: a relay, three nodes and a subscriber as processes."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_prints_fused_launch_and_impact_alerts_for_every_missile_and_exits_0(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "warnshare.cli", "demo", "--scenario", "srbm-salvo-2022-06-05"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    summary = re.search(r"(\d+) alerts, (\d+) event\(s\) for (\d+) missile\(s\)", out)
    assert summary, out[-2000:]
    alerts, events, missiles = map(int, summary.groups())
    assert missiles == 8 and events == missiles and alerts > events
    rows = re.findall(r"^  event (\d+): seen by ([A-Z+]+): (.*)$", out, re.M)
    assert len(rows) == events
    for _, nations, kinds in rows:
        assert "LAUNCH_DETECTED" in kinds and "IMPACT_PREDICTED" in kinds
        assert set(nations.split("+")) <= {"USA", "JPN", "KOR"}
    assert any(len(n.split("+")) == 3 for _, n, _ in rows), "no event fused from all three nations"
    # alert lines name their nations and carry an end-to-end latency
    lines = re.findall(r"LAUNCH_DETECTED +\[([A-Z, ]+)\] e2e +([\d.]+) ms", out)
    assert len(lines) == events
    e2e = re.search(r"^end_to_end +([\d.]+) +([\d.]+) +(\d+)$", out, re.M)
    assert e2e and float(e2e.group(1)) > 0 and int(e2e.group(3)) == alerts
    assert not list(tmp_path.iterdir()), "the demo must leave nothing behind in the working directory"
