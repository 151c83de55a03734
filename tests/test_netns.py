"""A multi-host run in network namespaces: the relay and each nation on a host of its own.

The Japan and Korea links to the relay carry 40 ms of delay each way and lose 1% of their
packets (``tc netem``, or the user-space delay line of ``netns_helpers`` on kernels without
netem); the USA link is clean. Real processes (``warnshare relay``, ``node``, ``subscribe``)
run in the namespaces. Alerts must still arrive complete, and the node→relay hop latency the
relay reports (its clock-offset estimate applied) must show the link delay where there is one
and not where there is none: the fastest report over a link takes about the link's delay, and
the relay's estimate of the link's round trip is about twice it. (Medians are printed too; on a
busy machine the relay's own queueing dominates them.)
"""

from __future__ import annotations

import json
import select
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.deploy_checks import describe, events_from_alerts
from tests.netns_helpers import RELAY_ADDR, LinkSpec, NetnsUnavailable, Topology, ensure_iproute2
from warnshare.protocol import NATIONS, AlertKind

pytestmark = [pytest.mark.netns, pytest.mark.slow]

SCENARIO = "srbm-salvo-2022-06-05"
#: Played faster than real time, a link's delay grows in scenario time by the same factor (40 ms
#: is 2 s of flight at 50x, a 200 ms TCP retransmission 10 s): 50x keeps that well inside the
#: fusion's staleness limits, where 100x does not (the events then split by nation).
SPEED = 50.0
#: Longest wait for the nodes to simulate their sensors and connect (3-5 s alone; 15-20 s on a
#: 2-core machine busy with other work).
READY_TIMEOUT_S = 120.0
PORT = 8000  # inside the relay's own namespace: nothing else listens there
LINK_DELAY_MS = 40.0
LINKS = {
    "USA": LinkSpec(),
    "JPN": LinkSpec(delay_ms=LINK_DELAY_MS, loss=0.01),
    "KOR": LinkSpec(delay_ms=LINK_DELAY_MS, loss=0.01),
}
PY = [sys.executable, "-m", "warnshare.cli"]


@pytest.fixture
def topology(tmp_path: Path):
    try:
        ensure_iproute2()
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))
    with Topology(LINKS, tmp_path, seed=6) as topo:
        yield topo
    for nation, log in topo.wire_logs.items():  # written as each delay line exits
        print(f"{nation} link: {log.read_text().strip()}")


def _read_alerts(path: Path) -> list[dict]:
    alerts = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("{"):
            alerts.append(json.loads(line))
    return alerts


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no output)"


def _wait_healthy(topo: Topology, relay: subprocess.Popen, log: Path, timeout_s: float = 60.0) -> None:
    probe = f"import urllib.request; urllib.request.urlopen('http://{RELAY_ADDR}:{PORT}/healthz', timeout=2)"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert relay.poll() is None, f"the relay exited with {relay.returncode}:\n{_tail(log)}"
        if topo.run(topo.relay_ns, [sys.executable, "-c", probe], timeout_s=10).returncode == 0:
            return
        time.sleep(0.3)
    raise AssertionError(f"the relay was not healthy within {timeout_s:.0f} s:\n{_tail(log)}")


@pytest.mark.timeout(400)
def test_alerts_complete_and_latency_shows_link_delay(topology: Topology, tmp_path: Path) -> None:
    from sims import load_scenario

    topo = topology
    scenario = load_scenario(SCENARIO)
    url = f"ws://{RELAY_ADDR}:{PORT}"
    logs = {name: tmp_path / f"{name}.log" for name in ("relay", "subscriber", *LINKS)}
    alerts_path = tmp_path / "alerts.jsonl"

    def started(ns: str, argv: list[str], log: Path, stdout: Path | None = None) -> subprocess.Popen:
        """A process in a namespace, its output (or only its stderr, with ``stdout``) in ``log``."""
        if stdout is None:
            with open(log, "w") as out:
                return topo.popen(ns, argv, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
        with open(log, "w") as err, open(stdout, "w") as out:
            return topo.popen(ns, argv, stdout=out, stderr=err, cwd=tmp_path)

    try:
        relay = started(topo.relay_ns, [*PY, "relay", "--host", RELAY_ADDR, "--port", str(PORT),
                                        "--time-scale", f"{SPEED:g}", "--journal", str(tmp_path / "relay.sqlite3"),
                                        "--log-level", "warning"], logs["relay"])
        _wait_healthy(topo, relay, logs["relay"])
        subscriber = started(topo.relay_ns, [*PY, "subscribe", url, "--json", "--since", "0"],
                             logs["subscriber"], stdout=alerts_path)
        # Each node simulates its sensors, connects and says READY; then scenario t=0 plays for
        # all three at one instant.
        nodes = {}
        for nation in LINKS:
            with open(logs[nation], "w") as err:
                nodes[nation] = topo.popen(topo.host_ns[nation], [
                    *PY, "node", "--nation", nation, "--relay", url, "--scenario", SCENARIO,
                    "--speed", f"{SPEED:g}", "--start-at", "-", "--log-level", "info",
                ], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, cwd=tmp_path)
        ready_by = time.monotonic() + READY_TIMEOUT_S
        for nation, proc in nodes.items():
            readable, _, _ = select.select([proc.stdout], [], [], max(0.0, ready_by - time.monotonic()))
            line = proc.stdout.readline() if readable else ""
            assert line.strip() == "READY", f"node {nation} never said READY ({line!r}):\n{_tail(logs[nation])}"
        start_at = time.time() + 1.0
        for proc in nodes.values():
            proc.stdin.write(f"{start_at:.6f}\n")
            proc.stdin.close()
        played_s = max(60.0, 2.0 * (scenario.duration_s or 3600.0) / SPEED)
        status = {}
        for nation, proc in nodes.items():
            try:
                status[nation] = proc.wait(timeout=max(1.0, start_at + played_s + 60.0 - time.time()))
            except subprocess.TimeoutExpired:
                status[nation] = None
        # the relay's own time-outs (impact, final assessment) run after the last report
        grace_end = time.monotonic() + 10.0 + 300.0 / SPEED
        while time.monotonic() < grace_end:
            alerts = _read_alerts(alerts_path)
            events = {a["event_id"] for a in alerts}
            final = {a["event_id"] for a in alerts if a["kind"] == AlertKind.FINAL_ASSESSMENT}
            if events and final >= events:
                break
            time.sleep(0.5)
        subscriber.send_signal(signal.SIGINT)
        subscriber.wait(timeout=10)
        assert relay.poll() is None, f"the relay died:\n{_tail(logs['relay'])}"
    except BaseException:
        for name, path in logs.items():
            print(f"--- {name} ---\n{_tail(path)}")
        raise

    for nation, code in status.items():
        assert code == 0, f"node {nation} exited with {code}:\n{_tail(logs[nation])}"
    alerts = _read_alerts(alerts_path)
    assert alerts, f"no alerts reached the subscriber:\n{_tail(logs['subscriber'])}"

    live, duplicates = events_from_alerts(alerts)
    summary = f"live: {describe(live)} | withdrawn duplicates: {describe(duplicates)}"
    # Every missile arrives complete: one event fused from two or more nations per missile, each
    # with its launch and impact-prediction alerts. Under 40 ms / 1% loss links the engine can
    # still open an extra single-nation event beside a fused one (a fusion shortcoming, tracked
    # with the fusion work, not a loss of alerts): tolerated, at most one per four missiles.
    fused = {i: e for i, e in live.items() if len(e.nations) >= 2}
    assert len(fused) == len(scenario.missiles), summary
    assert len(live) - len(fused) <= len(scenario.missiles) // 4, summary
    for event in live.values():
        assert {AlertKind.LAUNCH_DETECTED, AlertKind.IMPACT_PREDICTED} <= event.kinds, summary
    all_three = {n.value for n in NATIONS}
    assert any(e.nations >= all_three for e in live.values()), summary

    hop_ms: dict[str, list[float]] = defaultdict(list)
    offset_ms: dict[str, list[float]] = defaultdict(list)
    rtt_ms: dict[str, list[float]] = defaultdict(list)
    for a in alerts:
        h = a["hops"]
        hop_ms[h["source_nation"]].append((h["relay_received_ns"] - h["node_sent_ns"]) / 1e6)
        offset_ms[h["source_nation"]].append(h["clock_offset_ns"] / 1e6)
        rtt_ms[h["source_nation"]].append(h["clock_rtt_ns"] / 1e6)
    assert set(hop_ms) == all_three, f"alerts were triggered by reports from {sorted(hop_ms)} only"
    figures = {
        n: {"hop_min": min(hop_ms[n]), "hop_median": statistics.median(hop_ms[n]),
            "rtt_median": statistics.median(rtt_ms[n]), "offset_median": statistics.median(offset_ms[n])}
        for n in LINKS
    }
    print(f"link mode {topo.mode}; {len(alerts)} alerts, {len(live)} events ({len(duplicates)} duplicates withdrawn)")
    for nation, f in figures.items():
        print(f"  {nation}: node_sent→relay_received min {f['hop_min']:7.2f} ms, median {f['hop_median']:7.2f} ms "
              f"(n={len(hop_ms[nation])}); link RTT {f['rtt_median']:7.2f} ms; clock offset {f['offset_median']:7.3f} ms")
    for nation, stats in topo.netem_stats().items():
        print(f"  {nation} link: {stats}")
    for nation, spec in LINKS.items():
        f = figures[nation]
        # one clock serves every namespace, so a right offset estimate is close to zero
        assert abs(f["offset_median"]) < 10.0, (nation, figures)
        if spec.impaired:
            # The fastest report shows the link: not far above its delay, and below it only by
            # the offset estimate's error (half the excess of its exchange's RTT: a few ms early
            # on a busy machine). The median adds the relay's queueing, which is the machine's
            # load, so it is printed, not judged.
            assert 0.75 * spec.delay_ms <= f["hop_min"] <= spec.delay_ms + 60.0, (nation, figures)
            assert 1.75 * spec.delay_ms <= f["rtt_median"] <= 2 * spec.delay_ms + 60.0, (nation, figures)
        else:
            assert f["hop_min"] < 0.5 * LINK_DELAY_MS, (nation, figures)
            assert f["rtt_median"] < LINK_DELAY_MS, (nation, figures)
