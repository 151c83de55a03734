"""Fan-out: one encoding per alert, coalesced frames, conflation of slow subscribers, resume."""

from __future__ import annotations

import asyncio
import json

from warnshare.protocol import (
    Alert,
    AlertKind,
    DataMode,
    Hops,
    Nation,
    decode_relay_to_subscriber,
)
from warnshare.relay.hub import Hub, Subscriber


def make_alert(alert_id: int, event_id: int = 1, kind: AlertKind = AlertKind.TRACK_UPDATE) -> Alert:
    return Alert(
        alert_id=alert_id,
        event_id=event_id,
        kind=kind,
        issued_ns=alert_id,
        nations=[Nation.JPN],
        releasable_to=[Nation.JPN, Nation.KOR, Nation.USA],
        data_mode=DataMode.SIMULATED,
        hops=Hops(
            measured_ns=1, node_sent_ns=2, relay_received_ns=3, fused_ns=4, source_nation=Nation.JPN
        ),
        text=f"alert {alert_id}",
    )


def collecting_subscriber(
    fmt: str, frames: list, max_pending: int = 1000, gate: asyncio.Event | None = None
) -> Subscriber:
    async def send(frame):
        if gate is not None:
            await gate.wait()
        frames.append(frame)

    return Subscriber(
        name=fmt,
        fmt=fmt,
        nation=None,
        send=send,
        max_pending=max_pending,
        max_frame_alerts=500,
        clock=lambda: 42,
    )


def ids(frames: list) -> list[int]:
    return [a.alert_id for f in frames for a in decode_relay_to_subscriber(f).alerts]


async def test_msgpack_and_json_subscribers_get_the_same_alerts_in_order() -> None:
    hub = Hub()
    mp, js = [], []
    subs = [collecting_subscriber("msgpack", mp), collecting_subscriber("json", js)]
    tasks = []
    for s in subs:
        hub.attach(s, [])
        tasks.append(asyncio.create_task(s.run_writer()))
    for i in range(1, 51):
        hub.publish(
            [make_alert(i, kind=AlertKind.LAUNCH_DETECTED if i == 1 else AlertKind.TRACK_UPDATE)]
        )
        if i % 7 == 0:
            await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    assert ids(mp) == ids(js) == list(range(1, 51))
    a_mp = [a for f in mp for a in decode_relay_to_subscriber(f).alerts]
    a_js = [a for f in js for a in decode_relay_to_subscriber(f).alerts]
    assert a_mp == a_js
    assert all(isinstance(f, bytes) for f in mp) and all(isinstance(f, str) for f in js)
    assert json.loads(js[0])["relay_sent_ns"] == 42
    for s in subs:
        hub.detach(s)
    await asyncio.gather(*tasks)


async def test_pending_alerts_are_coalesced_into_few_frames() -> None:
    hub = Hub()
    frames: list = []
    sub = collecting_subscriber("msgpack", frames)
    hub.attach(sub, [])
    for i in range(1, 301):  # all published before the writer first runs
        hub.publish([make_alert(i)])
    task = asyncio.create_task(sub.run_writer())
    await asyncio.sleep(0.01)
    assert ids(frames) == list(range(1, 301))
    assert len(frames) == 1
    hub.detach(sub)
    await task


async def test_slow_subscriber_loses_only_track_updates_and_healthy_one_loses_nothing() -> None:
    hub = Hub()
    gate = asyncio.Event()  # the slow subscriber's socket is stuck until the gate opens
    slow_frames: list = []
    fast_frames: list = []
    slow = collecting_subscriber("msgpack", slow_frames, max_pending=50, gate=gate)
    fast = collecting_subscriber("msgpack", fast_frames)
    tasks = []
    for s in (slow, fast):
        hub.attach(s, [])
        tasks.append(asyncio.create_task(s.run_writer()))
    critical = set()
    for i in range(1, 401):
        kind = AlertKind.IMPACT_PREDICTED if i % 40 == 0 else AlertKind.TRACK_UPDATE
        if kind != AlertKind.TRACK_UPDATE:
            critical.add(i)
        hub.publish([make_alert(i, event_id=1 + i % 3, kind=kind)])
        await asyncio.sleep(0)
    assert not slow.overflowed
    gate.set()
    await asyncio.sleep(0.05)
    assert ids(fast_frames) == list(range(1, 401))
    got = ids(slow_frames)
    assert critical <= set(got)  # every critical alert arrives
    assert got == sorted(got)
    assert len(got) < 400 and slow.conflated_total == 400 - len(got)
    assert sum(decode_relay_to_subscriber(f).conflated for f in slow_frames) == slow.conflated_total
    for s in (slow, fast):
        hub.detach(s)
    await asyncio.gather(*tasks)


async def test_subscriber_that_cannot_keep_up_with_critical_alerts_overflows() -> None:
    hub = Hub()
    gate = asyncio.Event()
    sub = collecting_subscriber("msgpack", [], max_pending=10, gate=gate)
    hub.attach(sub, [])
    task = asyncio.create_task(sub.run_writer())
    for i in range(1, 30):
        hub.publish([make_alert(i, kind=AlertKind.LAUNCH_DETECTED)])
    assert sub.overflowed
    gate.set()
    await asyncio.wait_for(task, 1)


def test_snapshot_is_the_newest_alert_of_each_kind_per_event() -> None:
    hub = Hub()
    hub.publish(
        [
            make_alert(1, 1, AlertKind.LAUNCH_DETECTED),
            make_alert(2, 1),
            make_alert(3, 2, AlertKind.LAUNCH_DETECTED),
            make_alert(4, 1),
            make_alert(5, 1, AlertKind.IMPACT_PREDICTED),
        ]
    )
    assert [a.alert_id for a in hub.snapshot()] == [1, 3, 4, 5]


def test_snapshot_holds_one_picture_alert_per_event_the_newest_update_or_coast() -> None:
    hub = Hub()
    hub.publish([make_alert(1, 1, AlertKind.LAUNCH_DETECTED), make_alert(2, 1), make_alert(3, 1, AlertKind.TRACK_COAST)])
    assert [(a.alert_id, a.kind) for a in hub.snapshot()] == [(1, "LAUNCH_DETECTED"), (3, "TRACK_COAST")]
    # the track is held again: its update supersedes the coast
    hub.publish([make_alert(4, 1)])
    assert [(a.alert_id, a.kind) for a in hub.snapshot()] == [(1, "LAUNCH_DETECTED"), (4, "TRACK_UPDATE")]


def test_since_replays_from_the_ring_or_says_it_cannot() -> None:
    hub = Hub(ring_size=10)
    hub.publish([make_alert(i) for i in range(1, 26)])
    assert [a.alert_id for a in hub.since(20)] == [21, 22, 23, 24, 25]
    assert hub.since(25) == []
    assert hub.since(15) == [a for a in hub.ring if a.alert_id > 15]
    assert hub.since(3) is None


async def test_the_frame_budget_coalesces_alerts_under_load_and_loses_none() -> None:
    import time

    hub = Hub(frames_per_s=1000.0)  # 10 subscribers: each may send a frame every 10 ms
    frames = {i: [] for i in range(10)}
    subs = []
    for i in range(10):
        s = collecting_subscriber("msgpack", frames[i])
        s.clock = time.time_ns
        s.min_gap_ns = hub.min_gap_ns
        hub.attach(s, [])
        subs.append((s, asyncio.create_task(s.run_writer())))
    assert hub.min_gap_ns() == 10_000_000
    for i in range(1, 201):  # 200 alerts over ~0.2 s, one publish per millisecond
        hub.publish([make_alert(i)])
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)
    for i in range(10):
        assert ids(frames[i]) == list(range(1, 201))
        assert len(frames[i]) <= 0.3 * 200  # far fewer frames than alerts
    for s, task in subs:
        hub.detach(s)
        await task


# ------------------------------------------------------------------ direct (broadcast) writes


class FakeDirect:
    """Stands in for wire.DirectWriter: records written frames; ``full`` plays a transport over
    its high-water mark."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.full = False
        self.open = True

    def ready(self) -> bool:
        return self.open and not self.full

    def usable(self) -> bool:
        return self.open

    def write(self, frame: bytes) -> None:
        self.written.append(frame)


def ws_payloads(frames: list[bytes]) -> list[bytes | str]:
    """Parse unmasked server frames back with the websockets library's own parser."""
    from websockets.frames import Frame, Opcode
    from websockets.streams import StreamReader

    reader = StreamReader()
    for f in frames:
        reader.feed_data(f)
    out: list[bytes | str] = []
    for _ in frames:
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            next(parser)
        except StopIteration as done:
            frame = done.value
        out.append(frame.data.decode() if frame.opcode == Opcode.TEXT else bytes(frame.data))
    return out


def test_frame_bytes_is_what_the_websockets_library_parses() -> None:
    from websockets.frames import Frame, Opcode

    from warnshare.relay.wire import frame_bytes

    for n in (0, 1, 125, 126, 127, 65535, 65536, 70000):
        payload = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
        assert frame_bytes(payload) == Frame(Opcode.BINARY, payload).serialize(mask=False, extensions=[])
        text = "é" * (n // 2)
        assert frame_bytes(text) == Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])
    assert ws_payloads([frame_bytes(b"abc"), frame_bytes("xyz")]) == [b"abc", "xyz"]


def direct_subscriber(fmt: str, direct: FakeDirect, queued: list, nation=None) -> Subscriber:
    sub = collecting_subscriber(fmt, queued)
    sub.direct = direct
    sub.nation = nation
    return sub


async def test_one_broadcast_per_loop_turn_builds_each_frame_once_for_all_direct_subscribers() -> None:
    hub = Hub(frames_per_s=1e12)
    directs = [FakeDirect() for _ in range(5)]
    queued: list = []
    subs = [direct_subscriber("msgpack", d, queued) for d in directs]
    for s in subs:
        hub.attach(s, [])
    for i in range(1, 4):  # three publishes in one turn of the loop: one frame
        hub.publish([make_alert(i)])
    assert all(not d.written for d in directs)  # nothing before the end of the turn
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    for d in directs:
        assert len(d.written) == 1
        assert d.written[0] is directs[0].written[0]  # the same bytes object: built once
    assert [a.alert_id for p in ws_payloads(directs[0].written)
            for a in decode_relay_to_subscriber(p).alerts] == [1, 2, 3]
    assert not queued and hub.broadcasts == 1


async def test_a_subscriber_whose_transport_is_full_is_queued_and_rejoins_in_order() -> None:
    hub = Hub(frames_per_s=1e12)
    fast, slow = FakeDirect(), FakeDirect()
    fast_sub = direct_subscriber("msgpack", fast, [])
    slow_frames: list = []
    slow_sub = direct_subscriber("msgpack", slow, slow_frames)
    gate = asyncio.Event()

    async def send(frame) -> None:  # the ASGI path: waits until the transport drains
        await gate.wait()
        slow_frames.append(frame)

    slow_sub.send = send
    for s in (fast_sub, slow_sub):
        hub.attach(s, [])
    writer = asyncio.create_task(slow_sub.run_writer())
    slow.full = True
    hub.publish([make_alert(1)])
    await asyncio.sleep(0.01)
    assert len(fast.written) == 1 and not slow.written
    assert list(a.alert_id for a in slow_sub.queue) == [] and slow_sub.sending  # in its writer
    slow.full = False
    hub.publish([make_alert(2)])  # must not overtake alert 1, still in the writer's hands
    await asyncio.sleep(0.01)
    assert not slow.written and [a.alert_id for a in slow_sub.queue] == [2]
    gate.set()
    await asyncio.sleep(0.01)
    hub.publish([make_alert(3)])  # caught up: back on the broadcast
    await asyncio.sleep(0.01)
    got = [a.alert_id for f in slow_frames for a in decode_relay_to_subscriber(f).alerts]
    got += [a.alert_id for p in ws_payloads(slow.written) for a in decode_relay_to_subscriber(p).alerts]
    assert got == [1, 2, 3]
    assert len(slow.written) == 1
    assert [a.alert_id for p in ws_payloads(fast.written) for a in decode_relay_to_subscriber(p).alerts] == [1, 2, 3]
    hub.detach(slow_sub)
    hub.detach(fast_sub)
    await asyncio.wait_for(writer, 1)


async def test_a_late_joiner_gets_alerts_awaiting_the_broadcast_once() -> None:
    hub = Hub(frames_per_s=1e12)
    first = FakeDirect()
    hub.attach(direct_subscriber("msgpack", first, []), [])
    hub.publish([make_alert(1, kind=AlertKind.LAUNCH_DETECTED)])
    late, late_queue = FakeDirect(), []
    late_sub = direct_subscriber("msgpack", late, late_queue)
    hub.attach(late_sub, hub.snapshot())  # alert 1 is in the snapshot and still pending
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [a.alert_id for a in late_sub.queue] == [1]  # once, as its backlog
    assert not late.written
    assert len(first.written) == 1


async def test_direct_frames_are_filtered_per_nation_and_format() -> None:
    hub = Hub(frames_per_s=1e12)
    kor, usa_js = FakeDirect(), FakeDirect()
    hub.attach(direct_subscriber("msgpack", kor, [], nation=Nation.KOR), [])
    hub.attach(direct_subscriber("json", usa_js, [], nation=Nation.USA), [])
    usa_only = make_alert(2)
    usa_only.releasable_to = [Nation.USA]
    hub.publish([make_alert(1), usa_only])
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    (k,) = ws_payloads(kor.written)
    (u,) = ws_payloads(usa_js.written)
    assert isinstance(k, bytes) and isinstance(u, str)
    assert [a.alert_id for a in decode_relay_to_subscriber(k).alerts] == [1]
    assert [a.alert_id for a in decode_relay_to_subscriber(u).alerts] == [1, 2]


async def test_the_frame_budget_spaces_broadcasts_and_loses_nothing() -> None:
    import time

    hub = Hub(frames_per_s=1000.0)  # 10 direct subscribers: one broadcast every 10 ms at most
    directs = [FakeDirect() for _ in range(10)]
    for d in directs:
        hub.attach(direct_subscriber("msgpack", d, []), [])
    t0 = time.monotonic()
    for i in range(1, 101):  # 100 alerts over ~0.1 s
        hub.publish([make_alert(i)])
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)
    elapsed = time.monotonic() - t0
    for d in directs:
        got = [a.alert_id for p in ws_payloads(d.written) for a in decode_relay_to_subscriber(p).alerts]
        assert got == list(range(1, 101))
        assert len(d.written) <= elapsed / 0.010 + 1  # the budget, not one frame per alert


async def test_flush_if_due_sends_at_once_unless_the_budget_holds_the_broadcast_back() -> None:
    # the relay calls it before acknowledging a batch: the alerts leave before the ack
    hub = Hub(frames_per_s=1e12)
    direct = FakeDirect()
    hub.attach(direct_subscriber("msgpack", direct, []), [])
    hub.publish([make_alert(1)])
    hub.flush_if_due()
    assert len(direct.written) == 1  # now, not at the end of the loop's turn
    await asyncio.sleep(0)
    assert len(direct.written) == 1  # and not twice

    slow = Hub(frames_per_s=10.0)  # one subscriber: one broadcast every 100 ms at most
    held = FakeDirect()
    slow.attach(direct_subscriber("msgpack", held, []), [])
    slow.publish([make_alert(1)])
    slow.flush_if_due()
    assert len(held.written) == 1
    slow.publish([make_alert(2)])  # within the budget's gap: the broadcast keeps its time
    slow.flush_if_due()
    assert len(held.written) == 1
    await asyncio.sleep(0.15)
    assert len(held.written) == 2


async def test_the_broadcast_budget_is_wider_while_the_relay_keeps_up_with_its_input() -> None:
    now = [1_000_000_000]
    # 10 direct subscribers: a broadcast every 2.5 ms while keeping up, every 10 ms while behind
    hub = Hub(frames_per_s=1000.0, broadcast_frames_per_s=4000.0, clock=lambda: now[0],
              pace_clock=lambda: now[0])
    directs = [FakeDirect() for _ in range(10)]
    for d in directs:
        hub.attach(direct_subscriber("msgpack", d, []), [])
    assert hub.broadcast_gap_ns() == 2_500_000
    hub.input_waiting("node a", 3)
    assert hub.broadcast_gap_ns() == 10_000_000
    # another node with nothing waiting does not make the relay look caught up
    hub.input_waiting("node b", 0)
    assert hub.behind and hub.broadcast_gap_ns() == 10_000_000
    hub.input_waiting("node a", 0)  # a's frames read (or its session ended)
    assert not hub.behind and hub.broadcast_gap_ns() == 2_500_000

    def frames() -> int:
        return len(directs[0].written)

    for behind, expect_sent in ((False, True), (True, False)):
        hub.publish([make_alert(1)])
        hub.flush_if_due()
        before = frames()
        now[0] += 3_000_000  # 3 ms later: past the keeping-up gap, inside the behind one
        hub.input_waiting("node a", int(behind))
        hub.publish([make_alert(2)])
        hub.flush_if_due()
        assert (frames() > before) is expect_sent, (behind, frames(), before)
        hub.flush()  # what the budget held back still goes out, nothing is lost
        hub.input_waiting("node a", 0)
        now[0] += 20_000_000
    got = [a.alert_id for p in ws_payloads(directs[0].written) for a in decode_relay_to_subscriber(p).alerts]
    assert got == [1, 2, 1, 2]


async def test_a_non_finite_number_in_an_alert_goes_to_json_subscribers_as_null() -> None:
    # JSON has no NaN. The engine should never put one in an alert; if it did, encoding the JSON
    # frame raised inside the broadcast: every subscriber lost that broadcast, and the node
    # session that flushed it was closed. Now the number goes out as null, and the rest as is.
    from warnshare.protocol import GroundEstimate

    bad = make_alert(2)
    bad.impact = GroundEstimate.model_construct(
        time_ns=1, lat_deg=float("nan"), lon_deg=float("inf"), semi_major_m=1.0, semi_minor_m=1.0,
        orientation_deg=0.0, time_sigma_s=0.0,
    )
    hub = Hub(frames_per_s=1e12)
    js, mp = FakeDirect(), FakeDirect()
    for sub in (direct_subscriber("json", js, []), direct_subscriber("msgpack", mp, [])):
        hub.attach(sub, [])
    hub.publish([make_alert(1), bad, make_alert(3)])
    hub.flush()
    (text,) = ws_payloads(js.written)
    doc = json.loads(text)
    assert [a["alert_id"] for a in doc["alerts"]] == [1, 2, 3]
    assert doc["alerts"][1]["impact"]["lat_deg"] is None and doc["alerts"][1]["impact"]["lon_deg"] is None
    assert doc["alerts"][1]["impact"]["semi_major_m"] == 1.0
    assert len(mp.written) == 1  # msgpack carries the number as it is


async def test_a_step_of_the_wall_clock_back_holds_no_frame() -> None:
    # The broadcast budget and each writer's frame spacing are measured on a monotonic clock;
    # frames are stamped with the wall clock. Paced on the wall clock, a step back of 600 s (an
    # NTP step) held the next broadcast, and the next queued frame, for 600 s.
    wall = [1_700_000_000 * 10**9]
    hub = Hub(frames_per_s=1000.0, clock=lambda: wall[0])
    direct = FakeDirect()
    hub.attach(direct_subscriber("msgpack", direct, []), [])
    queued: list = []
    sub = collecting_subscriber("msgpack", queued)
    sub.clock = lambda: wall[0]
    sub.min_gap_ns = hub.min_gap_ns
    hub.attach(sub, [])
    writer = asyncio.create_task(sub.run_writer())
    try:
        hub.publish([make_alert(1)])
        await asyncio.sleep(0.02)
        assert len(direct.written) == 1 and ids(queued) == [1]
        wall[0] -= 600 * 10**9
        hub.publish([make_alert(2)])
        await asyncio.sleep(0.05)
        assert len(direct.written) == 2, "the broadcast waited for the wall clock to catch up"
        assert ids(queued) == [1, 2], "the writer waited for the wall clock to catch up"
        assert decode_relay_to_subscriber(queued[-1]).relay_sent_ns == wall[0]  # stamped on the wall clock
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
