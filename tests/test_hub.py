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
