"""A multi-host run in network namespaces: the relay and each nation on a host of its own.

The Japan and Korea links to the relay carry 40 ms of delay each way and lose 1% of their
packets (``tc netem``, or the user-space delay line of ``netns_helpers`` on kernels without
netem); the USA link is clean. Real processes (``warnshare relay``, ``node``, ``subscribe``)
run in the namespaces. Alerts must still arrive complete, and the node→relay hop latency the
relay reports (its clock-offset estimate applied) must show the link delay where there is one:
at least the delay, and about the delay more than on the clean link (the relay's own load adds
to every link alike, so the difference, not the clean link's figure, is what is checked).
"""

from __future__ import annotations

import json
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
SPEED = 100.0
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
                return topo.popen(ns, argv, stdout=out, stderr=subprocess.STDOUT)
        with open(log, "w") as err, open(stdout, "w") as out:
            return topo.popen(ns, argv, stdout=out, stderr=err)

    try:
        relay = started(topo.relay_ns, [*PY, "relay", "--host", RELAY_ADDR, "--port", str(PORT),
                                        "--time-scale", f"{SPEED:g}", "--log-level", "warning"], logs["relay"])
        _wait_healthy(topo, relay, logs["relay"])
        subscriber = started(topo.relay_ns, [*PY, "subscribe", url, "--json", "--since", "0"],
                             logs["subscriber"], stdout=alerts_path)
        # the nodes simulate their sensors first; scenario t=0 plays for all at the same instant
        start_at = time.time() + 8.0
        nodes = {
            nation: started(topo.host_ns[nation], [
                *PY, "node", "--nation", nation, "--relay", url, "--scenario", SCENARIO,
                "--speed", f"{SPEED:g}", "--start-at", f"{start_at:.6f}", "--log-level", "info",
            ], logs[nation])
            for nation in LINKS
        }
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
    assert len(live) == len(scenario.missiles), summary
    for event in live.values():
        assert {AlertKind.LAUNCH_DETECTED, AlertKind.IMPACT_PREDICTED} <= event.kinds, summary
    all_three = {n.value for n in NATIONS}
    assert any(e.nations >= all_three for e in live.values()), summary

    hop_ms: dict[str, list[float]] = defaultdict(list)
    offset_ms: dict[str, list[float]] = defaultdict(list)
    for a in alerts:
        h = a["hops"]
        hop_ms[h["source_nation"]].append((h["relay_received_ns"] - h["node_sent_ns"]) / 1e6)
        offset_ms[h["source_nation"]].append(h["clock_offset_ns"] / 1e6)
    assert set(hop_ms) == all_three, f"alerts were triggered by reports from {sorted(hop_ms)} only"
    medians = {n: statistics.median(v) for n, v in hop_ms.items()}
    print(f"link mode {topo.mode}; {len(alerts)} alerts, {len(live)} events ({len(duplicates)} duplicates withdrawn)")
    for nation in LINKS:
        print(f"  {nation}: node_sent→relay_received median {medians[nation]:7.2f} ms "
              f"(n={len(hop_ms[nation])}), clock offset median {statistics.median(offset_ms[nation]):7.3f} ms")
    for nation, stats in topo.netem_stats().items():
        print(f"  {nation} link: {stats}")
    clean = statistics.median(v for n, spec in LINKS.items() if not spec.impaired for v in hop_ms[n])
    for nation, spec in LINKS.items():
        # one clock serves every namespace, so a right offset estimate is close to zero
        assert abs(statistics.median(offset_ms[nation])) < 10.0, (nation, medians)
        if spec.impaired:
            # never less than the link's own delay; and the link, not the relay's load (which
            # the clean link shares), accounts for the difference from the clean link
            assert medians[nation] >= 0.875 * spec.delay_ms, (nation, medians)
            assert 0.75 * spec.delay_ms <= medians[nation] - clean <= 150.0, (nation, medians)
