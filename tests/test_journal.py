"""Durability: the journal rebuilds the same state and alerts; a kill -9 loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import websockets

from tests.clients import all_alerts
from tests.conftest import raw_node, send_report, start_relay
from tests.synth import ballistic_arc, national_reports
from warnshare.node import NodePublisher
from warnshare.protocol import NATIONS, AlertKind, decode_relay_to_subscriber
from warnshare.relay.app import RelayConfig
from warnshare.relay.journal import SCHEMA, Journal
from warnshare.subscriber import AlertSubscriber

STATES = ballistic_arc(39.0, 125.5, 90, 5200, 42, 60)


async def publish_all(url: str, reports_by_nation: dict, numbering: str = "continue") -> list:
    pubs = []
    for nation, reports in reports_by_nation.items():
        pub = NodePublisher(
            url, nation, f"{nation.value.lower()}-j", backoff_initial_s=0.05, backoff_max_s=0.5,
            numbering=numbering,
        )
        pub.submit(reports)
        pub.task = asyncio.create_task(pub.run())
        pubs.append(pub)
    for pub in pubs:
        assert await pub.wait_acked(30), pub.node_id
    for pub in pubs:
        pub.task.cancel()
    await asyncio.wait_for(asyncio.gather(*(p.task for p in pubs), return_exceptions=True), 10)
    return pubs


async def test_restart_replays_the_journal_to_the_same_alerts_and_state(tmp_path) -> None:
    journal = str(tmp_path / "relay.sqlite3")
    reports = {
        n: national_reports(STATES, n, track_number=20 + i, seed=i) for i, n in enumerate(NATIONS)
    }
    first = start_relay(RelayConfig(journal_path=journal))
    try:
        await publish_all(first.ws_url, reports)
        await asyncio.sleep(0.6)  # a few ticks go into the journal too
        before = await all_alerts(first.ws_url)
        async with httpx.AsyncClient(base_url=first.http_url) as http:
            events_before = (await http.get("/v1/events")).json()
        epoch_before = first.relay.epoch
    finally:
        first.stop()
    assert len(before) > len(STATES)
    # the impact predictions ran as inputs of their own (after the reports' updates went out)
    assert AlertKind.IMPACT_PREDICTED in {a.kind for a in before}
    assert "predict" in {r.kind for r in Journal(journal).inputs()}

    second = start_relay(RelayConfig(journal_path=journal, tick_interval_s=3600))
    try:
        relay = second.relay
        assert relay.metrics.replay_mismatches._value.get() == 0
        assert relay.metrics.replayed_inputs._value.get() > 0
        # the same numbering of alert ids: subscribers resume where they were, not from scratch
        assert relay.epoch == epoch_before
        after = await all_alerts(second.ws_url)
        assert after == before
        async with httpx.AsyncClient(base_url=second.http_url) as http:
            assert (await http.get("/v1/events")).json() == events_before
        for nation in NATIONS:
            assert relay.nodes.links[f"{nation.value.lower()}-j"].last_seq == len(STATES)
        # a node that re-plays everything after the restart adds nothing and sends nothing
        pubs = await publish_all(second.ws_url, reports, numbering="replay")
        assert relay.hub.last_alert_id == before[-1].alert_id
        assert [p.stats.reports_sent for p in pubs] == [0] * len(NATIONS)
        assert [p.stats.reports_already_held for p in pubs] == [len(STATES)] * len(NATIONS)
    finally:
        second.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn_relay(port: int, journal: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "warnshare.cli",
            "relay",
            "--port",
            str(port),
            "--journal",
            journal,
            "--log-level",
            "warning",
        ],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("relay did not start")


async def test_kill_9_mid_stream_loses_nothing(tmp_path) -> None:
    port = _free_port()
    url = f"ws://127.0.0.1:{port}"
    journal = str(tmp_path / "relay.sqlite3")
    proc = _spawn_relay(port, journal)
    try:
        received = []
        sub = AlertSubscriber(url)

        async def listen() -> None:
            async for item in sub.alerts():
                received.append(item.alert)

        listener = asyncio.create_task(listen())
        pubs = []
        for nation in NATIONS:
            pub = NodePublisher(
                url, nation, f"{nation.value.lower()}-k", backoff_initial_s=0.05, backoff_max_s=0.3
            )
            pub.task = asyncio.create_task(pub.run())
            pubs.append(pub)
        streams = {
            p.nation: national_reports(STATES, p.nation, track_number=40 + i, seed=i)
            for i, p in enumerate(pubs)
        }
        for k in range(len(STATES)):  # paced: ~60 reports per nation over ~1.5 s
            for pub in pubs:
                r = streams[pub.nation][k]
                pub.submit([r])
            await asyncio.sleep(0.025)
            if k == len(STATES) // 2:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                proc = _spawn_relay(port, journal)
        for pub in pubs:
            assert await pub.wait_acked(30), pub.node_id
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            nodes = {n["node_id"]: n for n in (await http.get("/v1/nodes")).json()}
            health = (await http.get("/healthz")).json()
            metrics = (await http.get("/metrics")).text
        replayed = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("warnshare_journal_replayed_inputs")
        )
        assert replayed > 0, "the second relay must have started from the journal"
        assert "warnshare_journal_replay_mismatches 0.0" in metrics
        for pub in pubs:
            assert nodes[pub.node_id]["last_acked_seq"] == len(STATES)
        last = health["last_alert_id"]
        deadline = time.monotonic() + 10
        while (not received or received[-1].alert_id < last) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        ids = [a.alert_id for a in received]
        assert ids == list(range(1, last + 1)), "a gap or a duplicate across the restart"
        assert received == (await all_alerts(url))[: len(received)]
        listener.cancel()
        for pub in pubs:
            pub.task.cancel()
        await asyncio.gather(listener, *(p.task for p in pubs), return_exceptions=True)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_a_journal_from_before_predict_inputs_is_migrated_without_loss(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA.replace("'batch', 'tick', 'predict'", "'batch', 'tick'"))
    db.execute("INSERT INTO inputs (kind, received_ns, fused_ns, clock_offset_ns, clock_rtt_ns) VALUES ('tick', 5, 6, 0, 0)")
    db.commit()
    db.close()
    journal = Journal(path)
    journal.record_tick(7, 8, [], kind="predict")
    assert [(r.kind, r.received_ns, r.fused_ns) for r in journal.inputs()] == [("tick", 5, 6), ("predict", 7, 8)]
    journal.close()


def _write_batch(journal: Journal, seq: int, alert_ids: list[int], payload: bytes = b"p",
                 body: bytes = b"x") -> None:
    """Journal node "n"'s batch ``seq`` with alerts ``alert_ids`` (stand-ins with a body)."""
    from types import SimpleNamespace

    alerts = [SimpleNamespace(alert_id=i, event_id=1, kind=AlertKind.TRACK_UPDATE, msgpack=body)
              for i in alert_ids]
    journal.record_batch(node_id="n", nation="KOR", payload=payload, first_seq=seq, last_seq=seq,
                         clock_offset_ns=0, clock_rtt_ns=0, received_ns=seq, fused_ns=seq, alerts=alerts)


def test_batches_are_durable_at_commit_and_a_failed_batch_leaves_its_group_intact(tmp_path) -> None:
    import sqlite3

    import pytest

    path = tmp_path / "group.sqlite3"
    journal = Journal(path)
    reader = sqlite3.connect(path)

    def batch(seq: int, alert_ids: list[int]) -> None:
        _write_batch(journal, seq, alert_ids)

    def committed() -> list[tuple[str, int | None]]:
        return reader.execute("SELECT kind, last_seq FROM inputs ORDER BY id").fetchall()

    batch(1, [1])
    batch(2, [2])
    assert journal.open and committed() == [], "nothing is durable before the commit"
    with pytest.raises(sqlite3.IntegrityError):
        batch(3, [3, 2])  # alert 2 again: this batch is refused whole, the group is kept
    journal.commit()
    assert not journal.open and committed() == [("batch", 1), ("batch", 2)]
    assert reader.execute("SELECT alert_id FROM alerts").fetchall() == [(1,), (2,)]
    batch(3, [3])
    journal.record_tick(9, 9, [])  # a clock input commits the group before it, then itself
    assert committed() == [("batch", 1), ("batch", 2), ("batch", 3), ("tick", None)]
    reader.close()
    journal.close()


def test_the_wal_is_checkpointed_by_a_thread_of_its_own_not_by_a_commit(tmp_path) -> None:
    import os

    path = tmp_path / "ckpt.sqlite3"
    journal = Journal(path, checkpoint_interval_s=0.05)
    assert journal.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    empty = os.path.getsize(path)
    for seq in range(1, 301):
        _write_batch(journal, seq, [seq], payload=bytes(500), body=bytes(1000))
        if seq % 10 == 0:
            journal.commit()
    deadline = time.monotonic() + 10
    while (journal.checkpointer.checkpoints < 2 or os.path.getsize(path) <= empty) and time.monotonic() < deadline:
        time.sleep(0.02)
    # the committed pages reached the database file itself, with no commit doing it
    assert journal.checkpointer.checkpoints >= 2 and os.path.getsize(path) > empty + 300 * 1500
    journal.close()
    assert not journal.checkpointer._thread.is_alive()
    assert Journal(path).counts() == {"inputs": 300, "alerts": 300}


async def test_a_failed_journal_stops_the_input_and_a_restart_takes_it_up_where_it_was(tmp_path) -> None:
    """Fail-stop: a batch the relay could not journal is never acknowledged nor shown, nodes are
    refused until a restart, and the restarted relay (replaying its journal) asks for it again."""
    import sqlite3

    from warnshare.protocol import Nation

    path = tmp_path / "relay.sqlite3"
    reports = national_reports(STATES, Nation.USA, track_number=7)[:5]

    async def session(url: str) -> tuple[websockets.ClientConnection, object]:
        return await raw_node(url, Nation.USA, "usa-f")

    async def send(ws: websockets.ClientConnection, k: int) -> object:
        return await send_report(ws, reports[k])

    running = start_relay(RelayConfig(journal_path=str(path)))
    try:
        ws, welcome = await session(running.ws_url)
        assert welcome.type == "welcome" and welcome.last_acked_seq == 0
        for k in range(3):
            assert (await send(ws, k)).acked_seq == reports[k].seq
        shown = running.relay.hub.last_alert_id

        def broken(*args: object) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        running.relay.journal._insert_batch = broken  # the disk fails
        refused = await send(ws, 3)
        assert refused.type == "error" and refused.code.value == "INTERNAL" and "journal" in refused.message
        await ws.close()
        assert running.relay.hub.last_alert_id == shown, "nothing of the batch was shown"
        health = httpx.get(f"{running.http_url}/healthz", timeout=5)
        assert health.status_code == 503 and health.json()["status"] == "journal failed"
        # a node that reconnects is refused: a welcome could not say which seqs are durable
        ws, answer = await session(running.ws_url)
        assert answer.type == "error" and "journal" in answer.message
        await ws.close()
    finally:
        running.stop()
    running = start_relay(RelayConfig(journal_path=str(path)))
    try:
        ws, welcome = await session(running.ws_url)
        assert welcome.last_acked_seq == reports[2].seq, "the refused batch is asked for again"
        assert (await send(ws, 3)).acked_seq == reports[3].seq
        assert running.relay.hub.last_alert_id > shown
        await ws.close()
    finally:
        running.stop()


def test_under_sustained_writes_the_wal_starts_over_instead_of_growing(tmp_path) -> None:
    """A checkpoint beside the writer never catches up with it; past ``wal_restart_bytes`` the
    writer completes one itself, and the WAL file is cut back to that size."""
    import os

    path = tmp_path / "wal.sqlite3"
    limit = 256 << 10
    journal = Journal(path, checkpoint_interval_s=0.01, wal_restart_bytes=limit)
    written = 0
    deadline = time.monotonic() + 20
    seq = 0
    while (journal.writer_checkpoints < 3 or written < 40 * limit) and time.monotonic() < deadline:
        for _ in range(4):
            seq += 1
            _write_batch(journal, seq, [seq], payload=bytes(500), body=bytes(1000))
            written += 1500
        journal.commit()
    assert journal.writer_checkpoints >= 3, "the writer never had to complete a checkpoint"
    # A WAL that never starts over holds ~3 times what is written (each commit rewrites whole
    # pages); this one holds what was written since the last restart, whatever the total.
    assert written >= 40 * limit and os.path.getsize(f"{path}-wal") < written / 2
    journal.close()
    assert Journal(path).counts() == {"inputs": seq, "alerts": seq}


async def test_a_journal_holding_a_report_todays_screen_refuses_still_replays(tmp_path) -> None:
    # A relay from before the plausibility screen journaled whatever passed the schema. Its
    # successor must replay that journal as it happened (the batch was acknowledged then), not
    # refuse to start, nor drop the batch and then find a gap in the node's seqs.
    from warnshare.protocol import Nation, ReportBatch, encode
    from warnshare.relay.app import Relay

    path = tmp_path / "old.sqlite3"
    reports = national_reports(STATES, Nation.KOR, track_number=3)[:3]
    reports[1] = reports[1].model_copy(update={"velocity_ecef_mps": [3e8, 0.0, 0.0]})
    journal = Journal(path)
    for seq, chunk in ((1, reports[:2]), (3, reports[2:])):
        payload = encode(ReportBatch(sent_ns=seq, reports=chunk))
        journal.record_batch(node_id="kor-old", nation="KOR", payload=payload, first_seq=chunk[0].seq,
                             last_seq=chunk[-1].seq, clock_offset_ns=0, clock_rtt_ns=0,
                             received_ns=seq, fused_ns=seq, alerts=[])
    journal.commit()
    journal.close()
    relay = Relay(RelayConfig(journal_path=str(path)))
    try:
        assert relay.nodes.links["kor-old"].last_seq == 3
        assert relay.metrics.replayed_inputs._value.get() == 2
    finally:
        relay.journal.close()


async def test_a_step_of_the_relays_wall_clock_is_an_input_journaled_and_replayed(tmp_path, monkeypatch) -> None:
    # Between two ticks the relay's wall clock jumps 600 s: the engine's stored wall times move
    # with it (its event is not silent for 600 s), the step is journaled as an input of its own,
    # and a relay restarted on the journal replays it to the same state, alert for alert.
    from warnshare.protocol import Hello, Nation, ReportBatch, encode
    from warnshare.relay.app import Relay

    path = tmp_path / "relay.sqlite3"
    relay = Relay(RelayConfig(journal_path=str(path)))
    link = relay.nodes.hello(Hello(protocol_version=1, nation=Nation.KOR, node_id="kor-s", sent_ns=1))
    now = time.time_ns()
    for r in national_reports(STATES, Nation.KOR, track_number=4, t0_ns=now - 10**10)[:5]:
        batch = ReportBatch(sent_ns=now, reports=[r])
        relay.ingest_batch(link, batch, encode(batch), time.time_ns())
    relay.commit()
    relay.tick()
    (event,) = relay.engine._events.values()
    before = event.last_received_ns
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() + 600 * 10**9)
    relay.tick()
    assert relay.metrics.wall_clock_steps._value.get() == 1
    assert 599.9 < (event.last_received_ns - before) / 1e9 < 600.1
    steps = [r.clock_offset_ns for r in relay.journal.inputs() if r.kind == "clock_step"]
    assert len(steps) == 1 and 599.9 < steps[0] / 1e9 < 600.1
    last_alert = relay.hub.last_alert_id
    relay.journal.close()
    again = Relay(RelayConfig(journal_path=str(path)))
    try:
        assert again.metrics.replay_mismatches._value.get() == 0
        assert again.hub.last_alert_id == last_alert
        (replayed,) = again.engine._events.values()
        assert replayed.last_received_ns == event.last_received_ns
    finally:
        again.journal.close()


async def test_an_alert_with_a_non_finite_number_goes_out_without_that_part(tmp_path, monkeypatch) -> None:
    """The relay checks what the engine hands it. A NaN in an alert (a numerical fault) went out
    as it was: every client decoding with the schema failed on its frame, resumed with since=
    and failed on it again, and a restarted relay refused the journal's copy. Now the part that
    holds it is withheld, the alert keeps its id and place, and a replay does the same."""
    from warnshare.fusion import FusionEngine
    from warnshare.protocol import Nation

    real_ingest = FusionEngine.ingest
    poisoned = {5, 9}  # seqs of the KOR reports whose TRACK_UPDATE state the engine gets wrong

    def ingest(self, report, **kw):
        alerts = real_ingest(self, report, **kw)
        if report.seq in poisoned:
            for a in alerts:
                if a.kind == AlertKind.TRACK_UPDATE:
                    a.state = a.state.model_copy(update={"lat_deg": float("nan")})
        return alerts

    monkeypatch.setattr(FusionEngine, "ingest", ingest)
    journal = str(tmp_path / "relay.sqlite3")
    reports = {Nation.KOR: national_reports(STATES, Nation.KOR, track_number=31, seed=3)}
    first = start_relay(RelayConfig(journal_path=journal, tick_interval_s=3600))
    try:
        received: dict[str, list] = {"msgpack": [], "json": []}

        async def follow(fmt: str) -> None:
            async for item in AlertSubscriber(first.ws_url, fmt=fmt, reconnect=False).alerts():
                received[fmt].append(item.alert)

        followers = [asyncio.create_task(follow(fmt)) for fmt in received]
        await asyncio.sleep(0.3)
        await publish_all(first.ws_url, reports)
        last = first.relay.hub.last_alert_id
        deadline = time.monotonic() + 15
        while min(len(v) for v in received.values()) < last and time.monotonic() < deadline:
            assert not any(f.done() for f in followers), [f.exception() for f in followers if f.done()]
            await asyncio.sleep(0.05)
        for f in followers:
            f.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        for fmt, alerts in received.items():
            assert [a.alert_id for a in alerts] == list(range(1, last + 1)), fmt
        withheld = [a for a in received["msgpack"] if "withheld" in a.text]
        assert len(withheld) == len(poisoned) and all(a.state is None for a in withheld)
        assert all(a.kind == AlertKind.TRACK_UPDATE for a in withheld)
        assert received["json"] == received["msgpack"]
        assert first.relay.metrics.alerts_withheld._value.get() == len(poisoned)
    finally:
        first.stop()

    second = start_relay(RelayConfig(journal_path=journal, tick_interval_s=3600))
    try:
        assert second.relay.metrics.replay_mismatches._value.get() == 0
        assert await all_alerts(second.ws_url) == received["msgpack"]
    finally:
        second.stop()


def test_the_output_check_withholds_only_the_bad_part_and_never_raises() -> None:
    """``outcheck.checked`` also runs in the relay's ticker, where an exception would stop its
    clock inputs: whatever the engine gives, it returns an alert that every reader takes when
    the fault is a non-finite number, and withholds nothing from a good one."""
    from warnshare.fusion import FusionEngine
    from warnshare.protocol import Nation
    from warnshare.relay.hub import msgpack_batch
    from warnshare.relay.outcheck import checked

    engine = FusionEngine()
    alerts = [a for r in national_reports(STATES, Nation.KOR, track_number=41, seed=4)
              for a in engine.ingest(r, node_sent_ns=r.measured_ns, received_ns=r.measured_ns)]
    good = next(a for a in alerts if a.state is not None and a.impact is not None)
    assert checked(good)[1] == []
    nan = good.model_copy(update={"state": good.state.model_copy(update={"alt_m": float("nan")})})
    encoded, withheld = checked(nan)
    assert withheld == ["state"]
    back = decode_relay_to_subscriber(msgpack_batch([encoded], 1, 0)).alerts[0]
    assert back.state is None and back.impact == good.impact and "withheld" in back.text
    # a fault that withholding no one part mends (here also a top-level field out of range):
    # every part withheld, and no exception
    worse = nan.model_copy(update={"event_id": 0})
    _encoded, withheld = checked(worse)
    assert set(withheld) == {p for p in ("state", "launch", "impact", "assessment")
                             if getattr(worse, p) is not None}
