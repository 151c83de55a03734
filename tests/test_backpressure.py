"""Backpressure on a real relay: one subscriber stalls at the TCP level among nine healthy ones.

The healthy nine receive every alert, contiguous and never conflated; the stalled one has its
TRACK_UPDATEs conflated, never a critical alert, and is closed with SLOW_CONSUMER (4009) when
critical alerts alone overflow its queue; it resumes with ``since`` without a gap. The relay's
queues stay bounded throughout.
"""

from __future__ import annotations

import asyncio
import threading
import time

import msgpack
import psutil
import pytest
import websockets

from tests.backpressure_helpers import Salvo, StalledSubscriber, publish_salvo
from tests.conftest import start_relay
from warnshare.protocol import (
    CRITICAL_KINDS,
    AlertBatch,
    AlertKind,
    CloseCode,
    ErrorCode,
    ErrorMessage,
    ReportBatch,
    decode_relay_to_subscriber,
    encode,
)
from warnshare.relay.app import RelayConfig

MAX_PENDING = 40


class Healthy:
    """A subscriber that reads as fast as it can: it only splits frames while the relay runs (the
    relay shares this process) and validates them afterwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.raw: list[bytes] = []
        self.last_id = 0
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.ws = await websockets.connect(self.url, max_size=None, compression=None)
        assert decode_relay_to_subscriber(await self.ws.recv()).type == "welcome"
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for frame in self.ws:
            doc = msgpack.unpackb(frame)
            if doc["type"] == "alert_batch" and doc["alerts"]:
                self.last_id = doc["alerts"][-1]["alert_id"]
            self.raw.append(frame)

    def batches(self) -> list[AlertBatch]:
        return [m for m in map(decode_relay_to_subscriber, self.raw) if isinstance(m, AlertBatch)]

    @property
    def alerts(self) -> list:
        return [a for b in self.batches() for a in b.alerts]

    @property
    def conflated(self) -> int:
        return sum(b.conflated for b in self.batches())

    async def stop(self) -> None:
        await self.ws.close()
        await asyncio.gather(self.task, return_exceptions=True)


class QueueWatch:
    """Samples the relay's per-subscriber queue lengths and RSS from another thread."""

    def __init__(self, relay) -> None:
        self.relay = relay
        self.max_queue = 0
        self.rss = [psutil.Process().memory_info().rss]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for i in range(100_000):
            if self.stop.wait(0.005):
                return
            for sub in list(self.relay.hub.subscribers):
                self.max_queue = max(self.max_queue, len(sub.queue))
            if i % 20 == 0:
                self.rss.append(psutil.Process().memory_info().rss)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.mark.slow
async def test_a_stalled_subscriber_is_conflated_then_closed_and_the_others_get_everything() -> None:
    running = start_relay(RelayConfig(subscriber_max_pending=MAX_PENDING, subscriber_close_timeout_s=30.0))
    relay = running.relay
    try:
        healthy = [Healthy(f"{running.ws_url}/v1/alerts") for _ in range(9)]
        for h in healthy:
            await h.start()
        stalled = await asyncio.to_thread(StalledSubscriber, running.port)
        await asyncio.sleep(0.2)  # the relay has registered it
        stalled.shrink_relay_send_buffer(running.server)
        watch = QueueWatch(relay)
        salvo = Salvo(n_missiles=30, reports_each=20)
        await publish_salvo(running.ws_url, salvo, step_interval_s=0.03)

        last = await running.settled_alert_id()
        deadline = time.monotonic() + 20
        while any(h.last_id < last for h in healthy) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        watch.finish()
        # up to ``last``: the ticker may already have issued more (silent events' TRACK_COAST)
        everything = [a for a in healthy[0].alerts if a.alert_id <= last]
        assert [a.alert_id for a in everything] == list(range(1, last + 1))
        for h in healthy[1:]:
            assert [a for a in h.alerts if a.alert_id <= last] == everything, "a healthy subscriber missed or reordered an alert"
        for h in healthy:
            assert h.conflated == 0, "a healthy subscriber was conflated"
        assert relay.metrics.slow_closed._value.get() == 1, "the stalled subscriber was not closed"
        # bounded: a queue never holds more than the limit plus one fan-out's alerts
        assert watch.max_queue <= MAX_PENDING + 20, watch.max_queue

        # the stalled subscriber wakes up while the relay still waits to tell it why it is
        # closed: what reached it, then the documented error and close code
        close_code = await asyncio.to_thread(stalled.drain)
        deadline = time.monotonic() + 10
        while relay.metrics.subscribers._value.get() > 9 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the session ends and counts what it conflated
        assert relay.metrics.conflated._value.get() > 0, "nothing was conflated for the stalled subscriber"
        frames = [decode_relay_to_subscriber(f) for f in stalled.data_frames()]
        got = [a for f in frames if isinstance(f, AlertBatch) for a in f.alerts]
        errors = [f for f in frames if isinstance(f, ErrorMessage)]
        assert errors and errors[-1].code == ErrorCode.SLOW_CONSUMER, frames[-1:]
        assert close_code == CloseCode.SLOW_CONSUMER
        ids = [a.alert_id for a in got]
        assert ids == sorted(set(ids))
        held = ids[-1] if ids else 0
        missing = [a for a in everything if a.alert_id <= held and a.alert_id not in set(ids)]
        assert all(a.kind == AlertKind.TRACK_UPDATE for a in missing), "a critical alert was conflated"
        assert sum(f.conflated for f in frames if isinstance(f, AlertBatch)) == len(missing)

        # it resumes from the last alert it holds: no gap, no duplicate
        resumed = Healthy(f"{running.ws_url}/v1/alerts?since={held}")
        await resumed.start()
        deadline = time.monotonic() + 10
        while resumed.last_id < last and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await resumed.stop()
        resumed_ids = [a.alert_id for a in resumed.alerts]
        # everything after what it held, in order; alerts the engine issued since ``last`` (the
        # TRACK_COAST of silent events, on the ticker) may follow, still without gap
        assert resumed_ids[: last - held] == list(range(held + 1, last + 1))
        assert resumed_ids == list(range(held + 1, held + 1 + len(resumed_ids)))
        assert {a.alert_id for a in everything if a.kind in CRITICAL_KINDS} <= set(ids) | {a.alert_id for a in resumed.alerts}
        for h in healthy:
            await h.stop()
        growth_mb = (max(watch.rss) - watch.rss[0]) / 1e6
        print(f"\nbackpressure: {last} alerts, {len(got)} reached the stalled subscriber before 4009, "
              f"{relay.metrics.conflated._value.get():.0f} conflated, max queue {watch.max_queue}, "
              f"process RSS growth {growth_mb:.1f} MB")
    finally:
        running.stop()


async def test_batches_queued_back_to_back_do_not_overflow_a_subscriber_that_keeps_up() -> None:
    """A node that sends many batches at once (a reconnect, a burst) must not make the relay
    fan them all out before any writer runs: a reader that keeps up is never conflated."""
    max_pending = 40
    running = start_relay(RelayConfig(subscriber_max_pending=max_pending))
    try:
        listener = Healthy(f"{running.ws_url}/v1/alerts")
        await listener.start()
        reports = Salvo(n_missiles=1, reports_each=3 * max_pending).plan
        async with websockets.connect(f"{running.ws_url}/v1/ingest", compression=None) as node:
            await node.send(msgpack.packb({"type": "hello", "protocol_version": 1, "nation": reports[0][0].nation.value,
                                           "node_id": "burst", "sent_ns": time.time_ns()}))
            assert msgpack.unpackb(await node.recv())["type"] == "welcome"
            for seq, step in enumerate(reports, start=1):  # one report a batch, all at once
                r = step[0].model_copy(update={"seq": seq})
                await node.send(encode(ReportBatch(sent_ns=time.time_ns(), reports=[r])))
            acked = 0
            for _ in range(10 * len(reports)):
                msg = msgpack.unpackb(await asyncio.wait_for(node.recv(), 20))
                acked = msg.get("acked_seq", acked)
                if acked == len(reports):
                    break
        last = await running.settled_alert_id()
        assert last > max_pending
        deadline = time.monotonic() + 10
        while listener.last_id < last and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await listener.stop()
        assert [a.alert_id for a in listener.alerts] == list(range(1, last + 1))
        assert listener.conflated == 0
        assert running.relay.metrics.slow_closed._value.get() == 0
    finally:
        running.stop()


async def test_a_writer_blocked_on_a_peer_that_stopped_reading_still_ends_on_overflow() -> None:
    """Overflow must close a subscriber whose writer is stuck in send, and stop its queue growing."""
    from tests.test_hub import make_alert
    from warnshare.relay.hub import Hub, Subscriber

    stuck = asyncio.Event()  # never set: the peer never reads

    async def send(frame) -> None:
        await stuck.wait()

    sub = Subscriber(name="stalled", fmt="msgpack", nation=None, send=send, max_pending=10,
                     max_frame_alerts=5, clock=time.time_ns)
    hub = Hub()
    hub.attach(sub, [])
    writer = asyncio.create_task(sub.run_writer())
    for i in range(1, 200):
        hub.publish([make_alert(i, event_id=i, kind=AlertKind.LAUNCH_DETECTED)])
        await asyncio.sleep(0)
        if writer.done():
            break
    assert writer.done() and sub.overflowed, "the blocked writer never noticed the overflow"
    assert len(sub.queue) <= sub.max_pending + sub.max_frame_alerts + 1
    assert sub.queue[0].alert_id == 1, "the alerts of the frame that was never sent must stay queued"


async def test_a_resume_backlog_larger_than_the_queue_is_replayed_whole() -> None:
    """since= after SLOW_CONSUMER means a backlog of more than max_pending critical alerts: it must
    be replayed whole, not overflow again at once, and live alerts after it still obey the limit."""
    from tests.test_hub import make_alert
    from warnshare.relay.hub import EncodedAlert, Hub, Subscriber

    frames: list[bytes] = []

    async def send(frame) -> None:
        frames.append(frame)

    sub = Subscriber(name="resuming", fmt="msgpack", nation=None, send=send, max_pending=10,
                     max_frame_alerts=7, clock=time.time_ns)
    hub = Hub()
    backlog = [EncodedAlert(make_alert(i, event_id=1 + i % 3, kind=AlertKind.TRACK_UPDATE if i % 2 else AlertKind.IMPACT_PREDICTED))
               for i in range(1, 51)]
    hub.attach(sub, backlog)
    hub.publish([make_alert(51, event_id=1, kind=AlertKind.TRACK_UPDATE)])
    assert not sub.overflowed
    writer = asyncio.create_task(sub.run_writer())
    for _ in range(100):
        await asyncio.sleep(0)
        if not sub.queue:
            break
    sub.closed = True
    sub.wake.set()
    await asyncio.wait_for(writer, 5)
    got = [a["alert_id"] for f in frames for a in msgpack.unpackb(f)["alerts"]]
    assert got == list(range(1, 52)) and sub.conflated_total == 0
