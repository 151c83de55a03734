"""Faults on a live relay, each ending with the complete and correct alert set at every subscriber:
a node process killed (SIGKILL) mid-stream and restarted, a link partitioned and healed, a node
clock that jumps. (The relay killed with -9 and restarted is tests/test_journal.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import websockets

from tests.clients import Recorder
from tests.conftest import settled_alert_id, start_relay
from tests.synth import ballistic_arc, national_reports
from warnshare.node import NodeClock, NodePublisher, report_from_update
from warnshare.protocol import (
    AlertKind,
    DataMode,
    Hello,
    Nation,
    ReportBatch,
    decode_relay_to_node,
    encode,
)
from warnshare.relay.app import RelayConfig

#: Faults injected in this file's run (RELIABILITY.md quotes them).
INJECTED: list[str] = []


async def assert_complete(url: str, relay, collectors: list[Recorder]) -> list:
    """Every subscriber holds alerts 1..last exactly once, identical to the relay's since=0 replay.
    ``last`` is taken once the relay has gone quiet (ticks may still close events)."""
    last = await settled_alert_id(relay, quiet_s=1.5, timeout_s=30.0)
    reference = await Recorder(url, since=0).start()
    for c in [*collectors, reference]:
        await c.until(last)
    await reference.stop()
    assert [a.alert_id for a in reference.alerts] == list(range(1, last + 1))
    for c in collectors:
        assert [a.alert_id for a in c.alerts] == list(range(1, last + 1)), "a gap or a duplicate"
        assert c.alerts == reference.alerts
    return reference.alerts


def assert_no_event_born_after(alerts: list, alert_id: int) -> None:
    """The fault opened no new event: every report after it joined an event that existed before.
    (Whether two nations' first reports of one missile open one event or two is the fusion
    engine's business, decided before any fault; it is not asserted here.)"""
    born = [a.event_id for a in alerts if a.kind == AlertKind.LAUNCH_DETECTED and a.alert_id > alert_id]
    assert not born, f"events {born} were opened after the fault"


# ------------------------------------------------------------------- node killed with -9

SCENARIO = "kn23-2023-03-19"
SPEED = 40.0


def _node(port: int, start_at: float | str | None, speed: float = SPEED, nation: str = "JPN",
          **popen) -> subprocess.Popen:
    start = [] if start_at is None else ["--start-at", start_at if isinstance(start_at, str) else f"{start_at:.6f}"]
    return subprocess.Popen(
        [sys.executable, "-m", "warnshare.cli", "node", "--nation", nation, "--relay", f"ws://127.0.0.1:{port}",
         "--scenario", SCENARIO, "--speed", str(speed), *start, "--log-level", "warning"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, **popen,
    )


@pytest.mark.slow
async def test_node_killed_mid_stream_and_restarted_loses_nothing_and_duplicates_nothing() -> None:
    from sims import load_scenario, simulate

    scenario = load_scenario(SCENARIO)
    updates = simulate(scenario, seed=0, nations=["JPN"]).national_tracks["JPN"]
    first_s = (updates[0].available_ns - scenario.start_ns) / 1e9
    # unscaled time-outs: the two-second restart is not eighty simulated seconds of silence
    running = start_relay(RelayConfig())
    relay = running.relay
    node = None
    try:
        subs = [Recorder(running.ws_url), Recorder(running.ws_url, "json")]
        for s in subs:
            await s.start()
        # scenario t = first update plays 3 s from now (the node simulates for a moment first)
        start_at = time.time() + 3.0 - first_s / SPEED
        node = _node(running.port, start_at)
        # kill once about a third is acknowledged (paced: the rest is still to come)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            link = relay.nodes.links.get("jpn-node")
            if link is not None and link.last_seq >= len(updates) // 3:
                break
            await asyncio.sleep(0.02)
        link = relay.nodes.links.get("jpn-node")
        assert link is not None and 0 < link.last_seq < len(updates), "kill must fall mid-stream"
        before = link.last_seq
        node.send_signal(signal.SIGKILL)
        node.wait(10)
        INJECTED.append(f"node SIGKILL after {before} of {len(updates)} reports")
        node = _node(running.port, start_at)  # the same start: it re-plays from t=0
        assert node.wait(90) == 0, "the restarted node did not get every report acknowledged"
        assert link.last_seq == link.accepted == len(updates), (link.last_seq, link.accepted, len(updates))
        # the NodePublisher trims what welcome says is held, so it re-sends nothing; a node that
        # re-sends anyway (another client, a lost welcome) has its reports dropped as duplicates
        last_alert = await running.settled_alert_id()
        resent = [report_from_update(u, i + 1, u.time_of_validity_ns, 0, DataMode.SIMULATED) for i, u in enumerate(updates[:before])]
        async with websockets.connect(f"{running.ws_url}/v1/ingest", compression=None) as ws:
            await ws.send(encode(Hello(protocol_version=1, nation=Nation.JPN, node_id="jpn-node", sent_ns=time.time_ns())))
            assert decode_relay_to_node(await ws.recv()).last_acked_seq == len(updates)
            await ws.send(encode(ReportBatch(sent_ns=time.time_ns(), reports=resent)))
            for _ in range(100):
                msg = decode_relay_to_node(await asyncio.wait_for(ws.recv(), 10))
                if msg.type == "ack":
                    break
            assert msg.type == "ack" and msg.acked_seq == len(updates)
        assert link.duplicates == before and link.accepted == len(updates)
        assert relay.hub.last_alert_id == last_alert, "a duplicate made an alert"
        alerts = await assert_complete(running.ws_url, relay, subs)
        updates_fused = [a for a in alerts if a.kind == AlertKind.TRACK_UPDATE]
        # every report but a track's last ("lost") one updates the fused track exactly once,
        # except the first reports of a track first seen falling, which the engine holds until
        # it is confirmed (FusionConfig.confirm_descending_reports)
        held = relay.engine.reports_held
        n_tracks = len({u.track_number for u in updates})
        assert held <= (relay.engine.config.confirm_descending_reports - 1) * n_tracks
        assert len(updates_fused) == sum(not u.lost for u in updates) - held, "a report fused twice or not at all"
        assert len({a.event_id for a in alerts}) == 1
        print(f"\nnode kill: {before} reports acked before SIGKILL, {len(updates)} after restart, "
              f"{link.duplicates} re-sent reports dropped by the relay as duplicates")
        for s in subs:
            await s.stop()
    finally:
        if node is not None and node.poll() is None:
            node.kill()
            node.wait(10)
        running.stop()


async def test_a_node_run_again_against_a_relay_that_kept_its_state_is_shown_again() -> None:
    """`warnshare node` run a second time (a second `docker compose up`, the relay's journal
    kept) numbers its reports from seq 1 again. The relay held those seqs, dropped every report
    as a duplicate and acknowledged it: the node exited 0, "all acked", and no alert of the
    second flight was made. Without a fixed --start-at a run makes new reports, so the node
    numbers them on after what the relay holds."""
    running = start_relay(RelayConfig().scaled(400.0))
    relay = running.relay
    try:
        sub = Recorder(running.ws_url)
        await sub.start()
        accepted = []
        for _ in range(2):
            node = _node(running.port, None, speed=400.0)
            assert await asyncio.to_thread(node.wait, 120) == 0
            accepted.append(relay.nodes.links["jpn-node"].accepted)
        link = relay.nodes.links["jpn-node"]
        assert accepted[1] == 2 * accepted[0] > 0 and link.duplicates == 0, (accepted, link.duplicates)
        await sub.until(relay.hub.last_alert_id)
        assert sum(a.kind == AlertKind.LAUNCH_DETECTED for a in sub.alerts) == 2, "the second flight is not shown"
        await sub.stop()
    finally:
        running.stop()


@pytest.mark.parametrize("start", ["auto", "each its own"])
async def test_nodes_started_apart_play_one_scenario_clock_with_start_at_auto(start: str) -> None:
    """The compose demo starts each node once it has simulated its sensors, seconds apart; each
    played the scenario from its own start, so at 400x the nations' pictures of one missile were
    hundreds of simulated seconds apart and the relay opened an event per nation. With
    ``--start-at auto`` (the compose default) they agree, through the relay, on one instant."""
    running = start_relay(RelayConfig().scaled(400.0))
    relay = running.relay
    nodes = []
    try:
        sub = Recorder(running.ws_url)
        await sub.start()
        for nation in ("KOR", "JPN", "USA"):
            nodes.append(_node(running.port, "auto" if start == "auto" else None, 400.0, nation))
            await asyncio.sleep(1.5)
        for node in nodes:
            assert await asyncio.to_thread(node.wait, 120) == 0
        await sub.until(relay.hub.last_alert_id)
        launches = [a for a in sub.alerts if a.kind == AlertKind.LAUNCH_DETECTED]
        withdrawn = {a.corrects_alert_id for a in sub.alerts if a.kind == AlertKind.CORRECTION}
        live = [a for a in launches if a.alert_id not in withdrawn]
        print(f"\n{start}: {len(launches)} LAUNCH_DETECTED, {len(live)} not withdrawn")
        if start == "auto":
            assert len(launches) == 1, f"{len(launches)} events for one missile"
        else:  # the fault the default removes: if this passes, the test shows nothing
            assert len(live) > 1
        await sub.stop()
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait(10)
        running.stop()


def test_the_node_cli_replays_only_when_restarted_into_a_run_under_way() -> None:
    """The CLI's default numbering: a fixed --start-at already passed is a restart of a run under
    way (the kill test above: the same reports again, so "replay"); any other start makes new
    reports ("continue": the run above)."""
    import argparse

    from warnshare import node as node_module

    parser = argparse.ArgumentParser()
    node_module.add_arguments(parser)

    def numbering(*argv: str) -> str:
        return node_module.cli_numbering(parser.parse_args(["--nation", "JPN", *argv]), now_s=2000.0)

    assert numbering("--start-at", "1999.5") == "replay"
    assert numbering("--start-at", "2003") == "continue"
    assert numbering() == "continue"
    assert numbering("--start-at", "-") == "continue"
    assert numbering("--start-at", "1999.5", "--numbering", "continue") == "continue"
    assert numbering("--numbering", "replay") == "replay"


# ------------------------------------------------------------------ partition and healing


def _live_reports(nation: Nation, states: np.ndarray, clock, track_number: int, seed: int) -> list:
    """Reports of ``states`` (one per 1 s of flight), stamped when published, on ``clock``."""
    return national_reports(states, nation, track_number=track_number, seed=seed)


async def _play(pub: NodePublisher, reports: list, interval_s: float, clock, during=None) -> list[int]:
    """Publish one report every ``interval_s``, validity and measurement on ``clock`` at publication;
    ``during(k)`` runs before report k (fault injection). Returns the physical (unskewed) times."""
    physical = []
    for k, r in enumerate(reports):
        if during:
            during(k)
        now = clock()
        physical.append(time.time_ns())
        pub.submit([r.model_copy(update={"seq": pub.next_seq(), "time_of_validity_ns": now, "measured_ns": now})])
        await asyncio.sleep(interval_s)
    return physical


async def test_link_partitioned_and_healed_loses_nothing() -> None:
    running = start_relay(RelayConfig(clock_period_s=0.25))
    relay = running.relay
    try:
        subs = [Recorder(running.ws_url), Recorder(running.ws_url, "json")]
        for s in subs:
            await s.start()
        states = ballistic_arc(39.5, 125.2, 100, 5000, 40, 29)
        pubs = {n: NodePublisher(running.ws_url, n, f"{n.value.lower()}-part", backoff_initial_s=0.05, backoff_max_s=0.3)
                for n in (Nation.JPN, Nation.KOR)}
        for pub in pubs.values():
            pub.task = asyncio.create_task(pub.run())
        jpn = pubs[Nation.JPN]
        partitioned = {}

        def fault(k: int) -> None:
            if k == 8:
                partitioned["alert_id"] = relay.hub.last_alert_id
                jpn.pause()
                partitioned["acked"] = jpn.acked_seq
                INJECTED.append("link partition JPN, 10 reports queued behind it, healed")
            elif k == 18:
                partitioned["queued"] = len(jpn.outbox)
                jpn.resume()

        reports = {n: _live_reports(n, states, time.time_ns, 300 + i, i) for i, n in enumerate(pubs)}
        await asyncio.gather(
            _play(jpn, reports[Nation.JPN], 0.1, time.time_ns, fault),
            _play(pubs[Nation.KOR], reports[Nation.KOR], 0.1, time.time_ns),
        )
        for pub in pubs.values():
            assert await pub.wait_acked(20), pub.node_id
        assert partitioned["queued"] >= 10, "the partition must have held reports back"
        assert jpn.stats.reconnects >= 1
        for n, pub in pubs.items():
            link = relay.nodes.links[pub.node_id]
            assert link.last_seq == link.accepted == len(reports[n])
        alerts = await assert_complete(running.ws_url, relay, subs)
        for n in pubs:
            got = [a for a in alerts if a.kind == AlertKind.TRACK_UPDATE and a.hops.source_nation == n]
            assert len(got) == len(reports[n]), n
        assert_no_event_born_after(alerts, partitioned["alert_id"])
        for pub in pubs.values():
            pub.task.cancel()
        await asyncio.gather(*(p.task for p in pubs.values()), return_exceptions=True)
        for s in subs:
            await s.stop()
    finally:
        running.stop()


class CuttableProxy:
    """A TCP proxy in front of the relay whose link can be cut (every connection reset, new ones
    refused) and healed: a partition the node does not choose, unlike NodePublisher.pause()."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut = False
        self.cuts = 0
        self.pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            self._reset(writer)
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.pairs.append((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                for _ in range(1 << 30):
                    data = await src.read(65536)
                    if not data:
                        break
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    @staticmethod
    def _reset(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
        writer.transport.abort()

    def partition(self) -> None:
        self.cut = True
        self.cuts += 1
        for a, b in self.pairs:
            self._reset(a)
            self._reset(b)
        self.pairs.clear()

    def heal(self) -> None:
        self.cut = False

    async def close(self) -> None:
        self.partition()
        self.server.close()


async def test_link_cut_by_a_proxy_mid_stream_and_healed_loses_nothing() -> None:
    running = start_relay(RelayConfig(clock_period_s=0.25))
    relay = running.relay
    proxy = CuttableProxy(running.port)
    proxy_port = await proxy.start()
    try:
        subs = [Recorder(running.ws_url)]
        for s in subs:
            await s.start()
        states = ballistic_arc(39.5, 125.2, 100, 5000, 40, 29)
        jpn = NodePublisher(f"ws://127.0.0.1:{proxy_port}", Nation.JPN, "jpn-proxied", backoff_initial_s=0.05, backoff_max_s=0.3)
        kor = NodePublisher(running.ws_url, Nation.KOR, "kor-direct", backoff_initial_s=0.05, backoff_max_s=0.3)
        for pub in (jpn, kor):
            pub.task = asyncio.create_task(pub.run())

        cut_at: dict[str, int] = {}

        def fault(k: int) -> None:
            if k == 8:
                cut_at["alert_id"] = relay.hub.last_alert_id
                proxy.partition()
                INJECTED.append("TCP link reset by a proxy for 1 s (JPN), healed")
            elif k == 18:
                proxy.heal()

        reports = {n: _live_reports(n, states, time.time_ns, 500 + i, i) for i, n in enumerate((Nation.JPN, Nation.KOR))}
        await asyncio.gather(_play(jpn, reports[Nation.JPN], 0.1, time.time_ns, fault),
                             _play(kor, reports[Nation.KOR], 0.1, time.time_ns))
        for pub in (jpn, kor):
            assert await pub.wait_acked(20), pub.node_id
        assert jpn.stats.reconnects >= 1 and proxy.cuts == 1
        for pub, n in ((jpn, Nation.JPN), (kor, Nation.KOR)):
            link = relay.nodes.links[pub.node_id]
            assert link.last_seq == link.accepted == len(reports[n])
        alerts = await assert_complete(running.ws_url, relay, subs)
        for n in (Nation.JPN, Nation.KOR):
            got = [a for a in alerts if a.kind == AlertKind.TRACK_UPDATE and a.hops.source_nation == n]
            assert len(got) == len(reports[n]), n
        assert_no_event_born_after(alerts, cut_at["alert_id"])
        for pub in (jpn, kor):
            pub.task.cancel()
        await asyncio.gather(jpn.task, kor.task, return_exceptions=True)
        for s in subs:
            await s.stop()
    finally:
        await proxy.close()
        running.stop()


# ------------------------------------------------------------------------------ clock jump


async def test_a_node_clock_jump_is_detected_within_two_exchanges_and_alerts_stay_right() -> None:
    running = start_relay(RelayConfig(clock_period_s=0.2))
    relay = running.relay
    try:
        subs = [Recorder(running.ws_url)]
        for s in subs:
            await s.start()
        states = ballistic_arc(39.5, 125.2, 100, 5000, 40, 39)
        jpn_clock = NodeClock()
        pubs = {
            Nation.JPN: NodePublisher(running.ws_url, Nation.JPN, "jpn-jump", clock=jpn_clock),
            Nation.KOR: NodePublisher(running.ws_url, Nation.KOR, "kor-steady"),
        }
        for pub in pubs.values():
            pub.task = asyncio.create_task(pub.run())
        await asyncio.wait_for(pubs[Nation.JPN].connected.wait(), 10)
        deadline = time.monotonic() + 10
        while not relay.nodes.links.get("jpn-jump") or not relay.nodes.links["jpn-jump"].clock.known:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        estimator = relay.nodes.links["jpn-jump"].clock
        exchanges: list[int] = []  # steps seen after each exchange once the clock has jumped
        original = estimator.add_exchange
        jumped = {}

        def watched(*args):
            sample = original(*args)
            if jumped:
                exchanges.append(estimator.steps)
            return sample

        estimator.add_exchange = watched
        step_ns = 3_000_000_000

        def fault(k: int) -> None:
            if k == 15:
                jumped["alert_id"] = relay.hub.last_alert_id
                jpn_clock.skew_ns += step_ns
                jumped["at"] = k
                INJECTED.append("node clock step +3 s (JPN) mid-stream")

        reports = {n: _live_reports(n, states, None, 400 + i, i) for i, n in enumerate(pubs)}
        physical = await asyncio.gather(
            _play(pubs[Nation.JPN], reports[Nation.JPN], 0.1, jpn_clock, fault),
            _play(pubs[Nation.KOR], reports[Nation.KOR], 0.1, time.time_ns),
        )
        for pub in pubs.values():
            assert await pub.wait_acked(20), pub.node_id
        assert estimator.steps == 1, "the step was not detected (or seen twice)"
        assert 1 in exchanges[:2], f"detected only after {exchanges.index(1) + 1} exchanges"
        assert abs(estimator.offset_ns - step_ns) < 20_000_000, estimator.offset_ns
        alerts = await assert_complete(running.ws_url, relay, subs)
        jpn_updates = [a for a in alerts if a.kind == AlertKind.TRACK_UPDATE and a.hops.source_nation == Nation.JPN]
        assert len(jpn_updates) == len(reports[Nation.JPN])
        # once the step is known, JPN's reports are put back on the right time: the fused state's
        # time of validity is the physical time the report was made
        settled = [(a, t) for a, t in zip(jpn_updates, physical[0], strict=True) if a.hops.clock_offset_ns > step_ns // 2]
        assert len(settled) >= len(jpn_updates) - jumped["at"] - 5
        for a, t in settled:
            assert abs(a.state.time_of_validity_ns - t) < 50_000_000, (a.alert_id, a.state.time_of_validity_ns - t)
        events = {a.event_id for a in alerts}
        print(f"\nclock jump: detected after {exchanges.index(1) + 1} exchange(s); events {len(events)}; "
              f"{len(jpn_updates) - len(settled) - jumped['at']} JPN reports fused before the estimate caught up")
        assert_no_event_born_after(alerts, jumped["alert_id"])
        for pub in pubs.values():
            pub.task.cancel()
        await asyncio.gather(*(p.task for p in pubs.values()), return_exceptions=True)
        for s in subs:
            await s.stop()
    finally:
        running.stop()


async def test_a_tracker_glitch_costs_one_report_not_the_nations_feed() -> None:
    # Two updates of JPN's tracker are wrong: a velocity of 1e200 m/s (finite: the schema lets
    # it through, the relay would refuse the batch with SCHEMA_INVALID, and a node cannot go on
    # after that) and a NaN position (the schema refuses it at the node). The node leaves both
    # out, numbers the rest without a gap, and every one of those is acknowledged and fused.
    import dataclasses

    from sims import load_scenario, simulate
    from warnshare.node import play_scenario

    updates = simulate(load_scenario(SCENARIO), seed=0, nations=["JPN"]).national_tracks["JPN"]
    live = [k for k, u in enumerate(updates) if not u.lost]
    bad = {live[len(live) // 3]: {"velocity_ecef_mps": (1e200, 0.0, 0.0)},
           live[2 * len(live) // 3]: {"position_ecef_m": (float("nan"), 0.0, 0.0)}}
    updates = [dataclasses.replace(u, **bad[k]) if k in bad else u for k, u in enumerate(updates)]
    running = start_relay()
    try:
        pub = NodePublisher(running.ws_url, Nation.JPN, "jpn-glitch", backoff_initial_s=0.05)
        task = asyncio.create_task(pub.run())
        t0 = updates[0].available_ns
        res = await play_scenario(pub, updates, scenario_start_ns=t0, start_wall_ns=time.time_ns(),
                                  speed=200.0, ack_timeout_s=30)
        assert not task.done(), "the node was refused"
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert res.unsendable == 2 and res.acked
        assert res.published == len(updates) - 2
        link = running.relay.nodes.links["jpn-glitch"]
        assert link.last_seq == link.accepted == len(updates) - 2
        assert not pub.stats.errors
    finally:
        running.stop()


async def test_a_step_back_of_the_node_hosts_wall_clock_does_not_hold_its_replay(monkeypatch) -> None:
    # The replay's schedule is in wall-clock instants (nodes share --start-at); paced on the
    # wall clock itself, a 600 s step back (an NTP step) after the first reports held the rest
    # for 600 s.
    import types

    from sims import load_scenario, simulate
    from warnshare import node as node_module

    updates = simulate(load_scenario(SCENARIO), seed=0, nations=["JPN"]).national_tracks["JPN"]
    step = {"ns": 0}
    host_time = types.SimpleNamespace(
        time_ns=lambda: time.time_ns() + step["ns"], monotonic_ns=time.monotonic_ns,
    )
    monkeypatch.setattr(node_module, "time", host_time)

    class Publisher:
        node_id, paused = "jpn-stepped", False

        def __init__(self) -> None:
            self.seq, self.submitted = 0, []

        def next_seq(self) -> int:
            self.seq += 1
            return self.seq

        def submit(self, reports) -> None:
            self.submitted.extend(reports)
            step["ns"] = -600_000_000_000  # the host's clock steps back once reports flow

        async def wait_acked(self, timeout_s: float) -> bool:
            return True

    pub, speed = Publisher(), 400.0
    t0 = updates[0].available_ns
    planned_s = (updates[-1].available_ns - t0) / 1e9 / speed
    started = time.monotonic()
    res = await asyncio.wait_for(
        node_module.play_scenario(pub, updates, scenario_start_ns=t0, start_wall_ns=time.time_ns(),
                                  speed=speed), timeout=planned_s + 20)
    took = time.monotonic() - started
    assert res.published == len(pub.submitted) == len(updates) and step["ns"] < 0
    assert took < planned_s + 5, f"replay of {planned_s:.1f} s took {took:.1f} s"
