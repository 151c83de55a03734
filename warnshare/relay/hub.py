"""Alert fan-out: encode each alert once, one frame for all caught-up subscribers, bounded queues.

The publisher never awaits a subscriber. Alerts published during one turn of the event loop
are sent at the end of it as one broadcast: each frame is built once (``wire.frame_bytes``) and
written straight to the transport of every subscriber that is caught up and whose transport is
not over its high-water mark, as a raw fan-out would. A subscriber that is behind, or that the
direct path cannot reach (another server stack, tests), gets the alerts in its own bounded
queue instead, drained by its writer task, which coalesces everything pending into one frame;
it rejoins the broadcast once its queue is empty. A queued subscriber first has its pending
TRACK_UPDATEs and TRACK_COASTs conflated (the newest per event kept); one that cannot keep up even with the
critical alerts is closed with SLOW_CONSUMER and may resume with ``since=``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import msgpack

from warnshare.protocol import CRITICAL_KINDS, Alert, AlertKind, Nation, encode
from warnshare.relay.wire import DirectWriter, frame_bytes

log = logging.getLogger(__name__)

_PACKER = msgpack.Packer(use_bin_type=True)
#: the last-value cache's one slot per event for the running picture (``PICTURE_KINDS``)
_PICTURE = "picture"
_BATCH_HEAD = b"\x84" + _PACKER.pack("type") + _PACKER.pack("alert_batch")
_K_SENT = _PACKER.pack("relay_sent_ns")
_K_ALERTS = _PACKER.pack("alerts")
_K_CONFLATED = _PACKER.pack("conflated")


class EncodedAlert:
    """An alert as its msgpack bytes, made once, and what fan-out needs to know of it.

    Only bytes and a few small values are kept (not the pydantic object): the ring of recent
    alerts then holds no objects for the garbage collector to traverse. JSON is made from the
    bytes once, on first demand.
    """

    __slots__ = ("alert_id", "event_id", "kind", "critical", "releasable", "msgpack", "_json")

    def __init__(self, alert: Alert) -> None:
        self.alert_id = alert.alert_id
        self.event_id = alert.event_id
        self.kind = alert.kind
        self.critical = alert.kind in CRITICAL_KINDS
        self.releasable = frozenset(alert.releasable_to)
        self.msgpack: bytes = encode(alert)
        self._json: str | None = None

    @classmethod
    def from_msgpack(cls, body: bytes) -> EncodedAlert:
        """Rebuild from stored bytes (the journal), checking them against the schema."""
        return cls(Alert.model_validate(msgpack.unpackb(body, raw=False)))

    @property
    def json(self) -> str:
        if self._json is None:
            doc = msgpack.unpackb(self.msgpack, raw=False)
            try:
                self._json = json.dumps(doc, separators=(",", ":"), allow_nan=False)
            except ValueError:
                # JSON has no NaN nor infinity. The engine should never make one, but if it did,
                # raising here would lose the whole broadcast (and close the node session that
                # flushed it): the number goes out as null instead, and is logged.
                log.error("alert %d holds a non-finite number; sent to JSON subscribers as null",
                          self.alert_id)
                self._json = json.dumps(_finite_or_null(doc), separators=(",", ":"))
        return self._json


def _finite_or_null(doc: object) -> object:
    """``doc`` with every NaN or infinity replaced by None."""
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, dict):
        return {k: _finite_or_null(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_finite_or_null(v) for v in doc]
    return doc


def msgpack_batch(alerts: list[EncodedAlert], relay_sent_ns: int, conflated: int) -> bytes:
    """An AlertBatch frame spliced from pre-encoded alerts (no re-encoding per subscriber)."""
    return b"".join(
        (
            _BATCH_HEAD,
            _K_SENT,
            _PACKER.pack(relay_sent_ns),
            _K_ALERTS,
            _PACKER.pack_array_header(len(alerts)),
            *(a.msgpack for a in alerts),
            _K_CONFLATED,
            _PACKER.pack(conflated),
        )
    )


def json_batch(alerts: list[EncodedAlert], relay_sent_ns: int, conflated: int) -> str:
    body = ",".join(a.json for a in alerts)
    return (
        f'{{"type":"alert_batch","relay_sent_ns":{relay_sent_ns},"alerts":[{body}],'
        f'"conflated":{conflated}}}'
    )


Sender = Callable[[bytes | str], Awaitable[None]]


@dataclass(eq=False)
class Subscriber:
    """One subscriber's queue and writer state."""

    name: str
    fmt: str  # "msgpack" or "json"
    #: Only alerts releasable to this nation are offered (None: an open relay, everything).
    nation: Nation | None
    send: Sender
    max_pending: int
    max_frame_alerts: int
    #: The wall clock that stamps each frame's ``relay_sent_ns``.
    clock: Callable[[], int]
    #: Least time between two frames to this subscriber (ns), asked before each frame: the hub
    #: shares a budget of frames per second among its subscribers, so that under load alerts
    #: coalesce into fewer, larger frames instead of the writers falling behind.
    min_gap_ns: Callable[[], int] = lambda: 0
    queue: deque[EncodedAlert] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    conflated_pending: int = 0
    conflated_total: int = 0
    frames_sent: int = 0
    alerts_sent: int = 0
    overflowed: bool = False
    closed: bool = False
    #: When the last frame went, on ``pace_clock``: a monotonic clock, so that a step of the
    #: wall clock back does not hold the next frame for as long as the step.
    last_frame_ns: int = 0
    pace_clock: Callable[[], int] = time.monotonic_ns
    writer: asyncio.Task | None = field(default=None, repr=False)
    #: Alerts at the head of the queue replayed for since= or the current picture: exempt from
    #: the limit and from conflation, or a subscriber resuming after SLOW_CONSUMER (a backlog
    #: of more than max_pending critical alerts) would overflow again at once, forever.
    replay_pending: int = 0
    #: Frames written straight to this subscriber's transport by the hub's broadcast (None:
    #: every frame goes through the queue and ``send``).
    direct: DirectWriter | None = field(default=None, repr=False)
    #: The writer is inside ``send`` (awaiting a slow transport): the broadcast must not write
    #: past it, or frames would reach the subscriber out of order.
    sending: bool = False

    def offer(self, items: Iterable[EncodedAlert], replay: bool = False) -> None:
        # once overflowed the subscriber is being closed and resumes with since=: queue no more
        if self.closed or self.overflowed:
            return
        if self.nation is not None:
            nation = self.nation
            items = [a for a in items if nation in a.releasable]
        before = len(self.queue)
        self.queue.extend(items)
        if replay:
            self.replay_pending += len(self.queue) - before
        elif len(self.queue) - self.replay_pending > self.max_pending:
            self._conflate()
            if len(self.queue) - self.replay_pending > self.max_pending:
                self.overflowed = True
                # a writer blocked in send (a peer that stopped reading) would never see the
                # flag: end it so that the session closes the subscriber
                if self.writer is not None and self.writer is not asyncio.current_task():
                    self.writer.cancel()
        self.wake.set()

    def _conflate(self) -> None:
        """Keep every critical alert and only the newest picture alert (TRACK_UPDATE or
        TRACK_COAST) of each event."""
        newest: dict[int, int] = {}
        live = list(self.queue)[self.replay_pending :]
        for a in live:
            if not a.critical:
                newest[a.event_id] = a.alert_id
        kept = deque(list(self.queue)[: self.replay_pending])
        kept.extend(a for a in live if a.critical or newest[a.event_id] == a.alert_id)
        dropped = len(self.queue) - len(kept)
        self.queue = kept
        self.conflated_pending += dropped
        self.conflated_total += dropped

    async def run_writer(self) -> None:
        """Drain the queue until closed; each wake-up sends everything pending in few frames."""
        self.writer = asyncio.current_task()
        while not self.closed:
            await self.wake.wait()
            wait_ns = self.last_frame_ns + self.min_gap_ns() - self.pace_clock()
            if wait_ns > 0:
                await asyncio.sleep(wait_ns / 1e9)
            self.wake.clear()
            if self.overflowed:
                return
            while self.queue and not self.closed:
                n = min(len(self.queue), self.max_frame_alerts)
                items = [self.queue.popleft() for _ in range(n)]
                replayed = min(n, self.replay_pending)
                self.replay_pending -= replayed
                conflated, self.conflated_pending = self.conflated_pending, 0
                now, paced = self.clock(), self.pace_clock()
                if self.fmt == "json":
                    frame: bytes | str = json_batch(items, now, conflated)
                else:
                    frame = msgpack_batch(items, now, conflated)
                self.sending = True
                try:
                    await self.send(frame)
                except asyncio.CancelledError:  # not sent: the queue's head stays the resume point
                    self.queue.extendleft(reversed(items))
                    self.replay_pending += replayed
                    self.conflated_pending += conflated
                    raise
                finally:
                    self.sending = False
                self.last_frame_ns = paced
                self.frames_sent += 1
                self.alerts_sent += n
                if self.overflowed:
                    return


class Hub:
    """All subscribers, the recent-alert ring for ``since=`` and the last-value cache per event."""

    def __init__(
        self,
        *,
        ring_size: int = 50_000,
        max_events_cached: int = 1000,
        older=None,
        frames_per_s: float = 25_000.0,
        broadcast_frames_per_s: float | None = None,
        clock: Callable[[], int] | None = None,
        pace_clock: Callable[[], int] | None = None,
    ) -> None:
        self.max_events_cached = max_events_cached
        #: Frames a second the queued writers may send in all; each gets an equal share. The
        #: broadcast keeps to it too while the relay is behind its input (``behind``).
        self.frames_per_s = frames_per_s
        #: Frames a second the broadcast may send while the relay keeps up with its input
        #: (None: ``frames_per_s``): then the CPU a broadcast takes delays no waiting report.
        self.broadcast_frames_per_s = broadcast_frames_per_s or frames_per_s
        #: The node sessions whose next frames were already waiting when they last looked
        #: (``input_waiting``): while there is one, the relay is behind its input.
        self.waiting_sources: set[object] = set()
        #: ``older(after_alert_id) -> list[EncodedAlert]``: alerts the ring no longer holds.
        self.older = older
        self.subscribers: set[Subscriber] = set()
        self.ring: deque[EncodedAlert] = deque(maxlen=ring_size)
        # event_id -> kind -> newest alert of that kind (the current picture for late joiners);
        # TRACK_UPDATE and TRACK_COAST share one slot, ``_PICTURE``: a newer one of either
        # supersedes the other (a late joiner must not get a coast older than the update)
        self.last_value: OrderedDict[int, dict[AlertKind | str, EncodedAlert]] = OrderedDict()
        self.last_alert_id = 0
        #: Stamps the frames (wall); the broadcast budget runs on ``pace_clock`` (monotonic), so
        #: that a step of the wall clock back does not hold the next broadcast that long.
        self.clock = clock or time.time_ns
        self.pace_clock = pace_clock or time.monotonic_ns
        #: Subscribers the broadcast can write to directly, and the alerts waiting for the
        #: broadcast at the end of this turn of the event loop.
        self.direct: set[Subscriber] = set()
        self.pending: list[EncodedAlert] = []
        self._flush_handle: asyncio.Handle | None = None
        self._flush_now_ok = False  # the scheduled broadcast is due at once (not budget-delayed)
        self.broadcasts = 0
        self.direct_frames = 0
        self.last_broadcast_ns = 0

    @property
    def behind(self) -> bool:
        return bool(self.waiting_sources)

    def input_waiting(self, source: object, frames: int) -> None:
        """A node session says how many of its frames are received and not yet read (0 also
        when it ends): the relay is behind while any session has some, whoever looked last."""
        if frames:
            self.waiting_sources.add(source)
        else:
            self.waiting_sources.discard(source)

    def broadcast_gap_ns(self) -> int:
        """Least gap between two broadcasts: the direct subscribers' share of the frame budget
        (the smaller one while the relay is behind its input)."""
        rate = self.frames_per_s if self.behind else self.broadcast_frames_per_s
        return int(len(self.direct) * 1e9 / rate)

    def min_gap_ns(self) -> int:
        """Least gap between two frames to one queued subscriber: its share of the frame budget."""
        return int(len(self.subscribers) * 1e9 / self.frames_per_s)

    def publish(self, alerts: list[Alert]) -> list[EncodedAlert]:
        encoded = [EncodedAlert(a) for a in alerts]
        self.fan_out(encoded)
        return encoded

    def fan_out(self, encoded: list[EncodedAlert]) -> None:
        """Remember already-encoded alerts and send them to every subscriber: the direct ones
        at the end of this turn of the loop (one broadcast for all alerts of the turn), the
        others through their queues now."""
        if not encoded:
            return
        for e in encoded:
            self.ring.append(e)
            self.last_value.setdefault(e.event_id, {})[e.kind if e.critical else _PICTURE] = e
        self.last_alert_id = encoded[-1].alert_id
        while len(self.last_value) > self.max_events_cached:
            self.last_value.popitem(last=False)
        if self.direct:
            self.pending.extend(encoded)
            if self._flush_handle is None:
                loop = asyncio.get_running_loop()
                # the frame budget: with N subscribers, one broadcast every N / frames_per_s s
                # at most; what arrives meanwhile joins it (each write costs a system call)
                wait_ns = self.last_broadcast_ns + self.broadcast_gap_ns() - self.pace_clock()
                if wait_ns > 0:
                    self._flush_handle = loop.call_later(wait_ns / 1e9, self.flush)
                    self._flush_now_ok = False
                else:
                    self._flush_handle = loop.call_soon(self.flush)
                    self._flush_now_ok = True
        for sub in self.subscribers:
            if sub.direct is None:
                sub.offer(encoded)

    def flush_if_due(self) -> None:
        """Broadcast now what is pending, if the frame budget already allows it (else the
        scheduled broadcast keeps its time). The relay calls it before acknowledging a batch:
        the ack wakes the node's process, which on a busy machine may take the CPU from the
        relay for milliseconds, and the subscribers' frames should be on their way first."""
        if self._flush_handle is not None and self._flush_now_ok:
            self.flush()

    def flush(self) -> None:
        """Send the pending alerts: each distinct frame built once, written to every caught-up
        direct subscriber; a subscriber that is behind or whose transport is full queues them."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        items, self.pending = self.pending, []
        if not items:
            return
        self.broadcasts += 1
        now, self.last_broadcast_ns = self.clock(), self.pace_clock()
        frames: dict[tuple[str, Nation | None, int], list[tuple[bytes, int]]] = {}
        for sub in list(self.direct):
            d = sub.direct
            if sub.closed or sub.overflowed:
                continue
            if sub.queue or sub.sending or d is None or not d.ready():
                sub.offer(items)  # behind: its writer sends these after what it already holds
                continue
            key = (sub.fmt, sub.nation, sub.max_frame_alerts)
            built = frames.get(key)
            if built is None:
                built = frames[key] = _frames(items, sub.fmt, sub.nation, sub.max_frame_alerts, now)
            for frame, n in built:
                d.write(frame)
                sub.alerts_sent += n
            sub.frames_sent += len(built)
            self.direct_frames += len(built)

    def snapshot(self) -> list[EncodedAlert]:
        """The current picture: per event, the newest alert of each critical kind and the newest
        picture alert (TRACK_UPDATE or TRACK_COAST), in alert-id order."""
        items = [a for kinds in self.last_value.values() for a in kinds.values()]
        items.sort(key=lambda a: a.alert_id)
        return items

    def since(self, alert_id: int) -> list[EncodedAlert] | None:
        """Every alert after ``alert_id``, or None when the ring no longer reaches back that far."""
        if alert_id >= self.last_alert_id:
            return []
        if not self.ring or self.ring[0].alert_id > alert_id + 1:
            if self.older is None:
                return None
            return self.older(alert_id)
        return [a for a in self.ring if a.alert_id > alert_id]

    def attach(self, sub: Subscriber, backlog: list[EncodedAlert]) -> None:
        """Register ``sub`` with its backlog queued first: no await between the two, so no gap.
        The backlog was read from the ring, which already holds the alerts still waiting for the
        broadcast: those go out to the others first, so that ``sub`` does not get them twice."""
        self.flush()
        self.subscribers.add(sub)
        if sub.direct is not None:
            self.direct.add(sub)
        sub.offer(backlog, replay=True)

    def detach(self, sub: Subscriber) -> None:
        sub.closed = True
        sub.wake.set()
        self.subscribers.discard(sub)
        self.direct.discard(sub)


def _frames(
    items: list[EncodedAlert], fmt: str, nation: Nation | None, max_alerts: int, now: int
) -> list[tuple[bytes, int]]:
    """The WebSocket frames (and their alert counts) that carry ``items`` to one kind of
    subscriber: its format, only what is releasable to its nation, at most ``max_alerts`` a frame."""
    if nation is not None:
        items = [a for a in items if nation in a.releasable]
    out = []
    for i in range(0, len(items), max_alerts):
        chunk = items[i : i + max_alerts]
        body = json_batch(chunk, now, 0) if fmt == "json" else msgpack_batch(chunk, now, 0)
        out.append((frame_bytes(body), len(chunk)))
    return out
