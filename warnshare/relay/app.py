"""The relay's FastAPI app: node ingest and alert WebSockets, events, health and metrics.

A thin shell around the fusion core: it checks frames (ingest.py, auth.py), journals what the
engine is given (journal.py), feeds the engine, stamps the wall-clock hops and hands the alerts
to the hub (hub.py) for fan-out. Decisions live in the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Query, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.websockets import WebSocketDisconnect, WebSocketState

from warnshare import regions
from warnshare.auth import DEFAULT_TIME_WINDOW_NS, Consumer, ReplayGuard, TrustStore
from warnshare.fusion import FusionConfig, FusionEngine
from warnshare.latency import WallClockSteps
from warnshare.protocol import (
    MAX_SUBSCRIBER_FRAME_BYTES,
    PROTOCOL_VERSION,
    Ack,
    Alert,
    ErrorCode,
    ErrorMessage,
    EventSummary,
    Hello,
    ProtocolError,
    ReportBatch,
    SignedBatch,
    TimeReply,
    TimeRequest,
    Welcome,
    construct,
    decode_node_message,
    decode_subscriber_message,
    encode,
    encode_json,
    unpack,
)
from warnshare.relay.hub import EncodedAlert, Hub, Subscriber
from warnshare.relay.ingest import AcceptedBatch, NodeLink, NodeRegistry, accept_batch
from warnshare.relay.journal import Journal
from warnshare.relay.limits import TokenBucket
from warnshare.relay.outcheck import checked
from warnshare.relay.wire import DirectWriter, ServerSend, frame_bytes

log = logging.getLogger("warnshare.relay")


@dataclass
class RelayConfig:
    #: The engine's impact predictions run after the TRACK_UPDATE of the report that made them
    #: due has gone out (``Relay.predict_due``), not on that report's path.
    fusion: FusionConfig = field(default_factory=lambda: FusionConfig(defer_impact=True, screen_reports=False))
    tick_interval_s: float = 0.25
    #: Clock exchange with each node: a burst at connect, then one every period.
    clock_burst: int = 3
    clock_period_s: float = 1.0
    subscriber_max_pending: int = 10_000
    subscriber_max_frame_alerts: int = 500
    subscriber_close_timeout_s: float = 2.0
    ring_size: int = 50_000
    #: Frames a second to all subscribers together while the relay is behind its input (some
    #: node's next frames already waiting), and always to the queued ones (those behind, or on
    #: a server stack without direct writes): past it, alerts coalesce into larger frames.
    frames_per_s: float = 25_000.0
    #: ... and the broadcast's budget while the relay keeps up with its input, when the CPU a
    #: broadcast takes delays no waiting report: with 100 subscribers, one broadcast every
    #: 1.7 ms at most instead of every 4 ms.
    broadcast_frames_per_s: float = 60_000.0
    #: Write frames straight to the subscribers' transports when uvicorn's websockets-sansio
    #: serves them (one frame built once for all); False: every frame through ASGI.
    direct_writes: bool = True
    #: SQLite journal (None: nothing survives a restart).
    journal_path: str | None = None
    #: Trust store (trust.json): when set, nodes must sign and subscribers need a token.
    trust: TrustStore | None = None
    time_window_ns: int = DEFAULT_TIME_WINDOW_NS
    #: Frames a second one node connection may send (a token bucket; past it, RATE_LIMITED).
    #: A node that sends every report in a frame of its own, as the benchmark's do when they keep
    #: to their schedule, sends a third of 20,000 reports/s: 6,667 frames/s.
    node_frames_per_s: float = 10_000.0
    node_frames_burst: float = 20_000.0
    #: A node's frames that are already received and waiting when one is done are taken at
    #: once, up to this many in a row, with one ack (cumulative) and one broadcast after them:
    #: a relay that fell behind catches up with less work per frame. 1: an ack per frame.
    ack_group_max: int = 16
    subscriber_frames_per_s: float = 20.0
    subscriber_frames_burst: float = 50.0
    max_connections: int = 2_000
    #: A node must say hello this soon after connecting, or be closed (HELLO_REQUIRED).
    hello_timeout_s: float = 5.0
    #: Distinct node ids the relay keeps state for (an open relay must not grow without bound).
    max_node_ids: int = 1_000
    #: Keep the garbage collector from stalling the event loop: what exists at start-up is moved
    #: out of its way (``gc.freeze``); full (generation 2) collections, which walk the whole
    #: heap (tens of ms with the engine's state and the alert ring), run only from the ticker:
    #: after ``gc_full_idle_s`` without a report, and at the latest every ``gc_full_max_s``.
    #: Young collections (0.1-3 ms, where cyclic garbage mostly dies) run at Python's own
    #: thresholds but at chosen moments: after a batch's alerts have gone out, and in the
    #: ticker, never in the middle of a report. False: Python's own collector throughout.
    gc_control: bool = True
    #: ... when no report came for this long, and the last one is at least ``gc_full_min_s`` old
    gc_full_idle_s: float = 1.0
    gc_full_min_s: float = 60.0
    gc_full_max_s: float = 600.0

    def scaled(self, time_scale: float) -> RelayConfig:
        """The same config with the fusion's wall-clock time-outs divided by ``time_scale``."""
        if time_scale == 1.0:
            return self
        changes = {
            f.name: int(getattr(self.fusion, f.name) / time_scale)
            for f in dataclasses.fields(self.fusion)
            if f.name.endswith("_timeout_ns")
        }
        return dataclasses.replace(self, fusion=dataclasses.replace(self.fusion, **changes))


class RelayMetrics:
    """Prometheus metrics in a registry of the app's own (several apps can share a process)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        # the labelled children used per report and per alert, looked up once
        self._by_kind: dict[Any, Any] = {}
        self._by_nation: dict[Any, Any] = {}
        self.reports = Counter(
            "warnshare_reports_accepted", "Reports accepted", ["nation"], registry=r
        )
        self.duplicates = Counter(
            "warnshare_reports_duplicate", "Re-sent reports dropped as duplicates", registry=r
        )
        self.rejected = Counter(
            "warnshare_frames_rejected",
            "Frames or connections refused, by error code",
            ["code"],
            registry=r,
        )
        self.alerts = Counter("warnshare_alerts", "Alerts issued", ["kind"], registry=r)
        self.engine_errors = Counter(
            "warnshare_engine_errors", "Reports the fusion engine failed on", registry=r
        )
        self.resumed_elsewhere = Counter(
            "warnshare_subscribers_resumed_elsewhere",
            "Subscribers resuming after an alert of another relay's numbering (sent all it holds)",
            registry=r,
        )
        self.alerts_withheld = Counter(
            "warnshare_alert_parts_withheld",
            "Alerts from the engine with a non-finite number, sent without that part",
            registry=r,
        )
        self.conflated = Counter(
            "warnshare_alerts_conflated", "TRACK_UPDATEs conflated for slow subscribers", registry=r
        )
        self.slow_closed = Counter(
            "warnshare_subscribers_closed_slow", "Subscribers closed as too slow", registry=r
        )
        self.nodes = Gauge("warnshare_nodes_connected", "Node connections open", registry=r)
        self.subscribers = Gauge(
            "warnshare_subscribers_connected", "Subscriber connections open", registry=r
        )
        self.clock_offset = Gauge(
            "warnshare_node_clock_offset_seconds",
            "Node clock minus relay clock",
            ["node_id"],
            registry=r,
        )
        self.clock_rtt = Gauge(
            "warnshare_node_clock_rtt_seconds",
            "Round trip of the best clock sample",
            ["node_id"],
            registry=r,
        )
        self.seq_taken_up = Counter(
            "warnshare_node_numbering_taken_up",
            "Nodes whose first batch to this relay started past seq 1 (the relay held nothing of "
            "them: it lost its state, or another relay acknowledged their earlier reports)",
            registry=r,
        )
        self.replayed_inputs = Gauge(
            "warnshare_journal_replayed_inputs", "Journal inputs replayed at start-up", registry=r
        )
        self.wall_clock_steps = Counter(
            "warnshare_wall_clock_steps",
            "Steps of the relay host's wall clock (over 1 s) seen between two ticks",
            registry=r,
        )
        self.journal_failed = Gauge(
            "warnshare_journal_failed",
            "1 once the journal failed: the relay then accepts nothing until restarted",
            registry=r,
        )
        self.replay_mismatches = Gauge(
            "warnshare_journal_replay_mismatches",
            "Replayed alerts that differ from the journal",
            registry=r,
        )
        self.gc_seconds = Histogram(
            "warnshare_gc_pause_seconds",
            "Garbage collections (each stops the event loop), by generation",
            ["generation"],
            buckets=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1),
            registry=r,
        )
        self.ingest_seconds = Histogram(
            "warnshare_batch_processing_seconds",
            "Receipt of a report batch to its alerts made and journaled (committed with its group)",
            buckets=(1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1),
            registry=r,
        )


    def alert_count(self, kind: Any) -> Any:
        child = self._by_kind.get(kind)
        if child is None:
            child = self._by_kind[kind] = self.alerts.labels(kind.value)
        return child

    def report_count(self, nation: Any) -> Any:
        child = self._by_nation.get(nation)
        if child is None:
            child = self._by_nation[nation] = self.reports.labels(nation.value)
        return child


class Relay:
    """The relay's state: one engine, one hub, the node links, the journal, metrics."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.engine = FusionEngine(config.fusion)
        self.nodes = NodeRegistry(max_nodes=config.max_node_ids)
        self.metrics = RelayMetrics()
        self.journal = Journal(config.journal_path) if config.journal_path else None
        #: Which numbering this relay's alert ids are: its journal's, or new with its state
        #: (told to subscribers in the welcome, echoed back when they resume).
        fresh_epoch = os.urandom(8).hex()
        self.epoch = self.journal.epoch(fresh_epoch) if self.journal else fresh_epoch
        self.hub = Hub(
            ring_size=config.ring_size,
            older=self._older_alerts if self.journal else None,
            frames_per_s=config.frames_per_s,
            broadcast_frames_per_s=config.broadcast_frames_per_s,
        )
        #: Per node id and kind of token ("hello" nonces, "batch" signatures): apart, so that a
        #: node's batches, however many, cannot push its hellos' nonces out of the memory.
        self.replay_guards: dict[tuple[str, str], ReplayGuard] = {}
        self._after_handle: asyncio.Handle | None = None
        #: Alerts of the batches ingested since the last ``commit``, in alert-id order.
        self.uncommitted: list[EncodedAlert] = []
        #: Why the journal failed, if it did: the relay then accepts and acknowledges nothing
        #: more, and issues nothing more, until it is restarted (and replays its journal).
        self.journal_error: str | None = None
        #: Young-generation thresholds while the relay runs the collector itself (None: it
        #: does not; set by the app's lifespan, see ``RelayConfig.gc_control``).
        self.gc_thresholds: tuple[int, int] | None = None
        self.connections = 0
        self.wall_steps = WallClockSteps()
        self.started_s = time.monotonic()  # uptime: not moved by steps of the wall clock
        self.last_ingest_s = self.last_full_gc_s = time.monotonic()
        regions.warm()
        if self.journal:
            self._replay_journal()

    # -- the input path ---------------------------------------------------------------

    def ingest_batch(
        self, link: NodeLink, batch: ReportBatch, payload: bytes, received_ns: int
    ) -> Ack:
        """Accept, fuse and journal one batch. Its alerts go out, and the returned ack may be
        sent, after ``commit``: a node session commits once per group of frames it takes."""
        if self.journal_error:
            raise self.journal_refusal()
        offset, rtt = link.clock.offset_ns, link.clock.rtt_ns
        before = (link.last_seq, link.accepted, link.duplicates)
        accepted = accept_batch(link, batch, offset)
        self.last_ingest_s = time.monotonic()
        try:
            self._take(link, accepted, payload, received_ns, offset, rtt)
        except ProtocolError:
            raise  # the journal failed: the relay stops taking input (``_journal``)
        except Exception:
            # A fault after the batch was taken (a bug: the engine's own are caught per report).
            # The batch is not acknowledged, so its seqs must not count as taken either: the
            # node's resend would be dropped as a duplicate and its alerts never shown.
            link.last_seq, link.accepted, link.duplicates = before
            raise
        if accepted.taken_up_at:
            self.metrics.seq_taken_up.inc()
            log.warning("node %s (%s): this relay holds nothing of it and its reports start at "
                        "seq %d; taken up there (seqs before it were acknowledged by a relay "
                        "whose state this one does not have)",
                        link.node_id, link.nation.value, accepted.taken_up_at)
        self.metrics.ingest_seconds.observe((time.time_ns() - received_ns) / 1e9)
        # every batch makes one (the acks of a group are cumulative: only the last is sent)
        return construct(Ack, {
            "type": "ack", "acked_seq": accepted.acked_seq, "relay_received_ns": received_ns,
        })

    def _take(
        self, link: NodeLink, accepted: AcceptedBatch, payload: bytes, received_ns: int,
        offset: int, rtt: int,
    ) -> None:
        """Fuse and journal a batch's new reports; their alerts join ``uncommitted`` last, when
        nothing can fail any more."""
        if accepted.duplicates:
            self.metrics.duplicates.inc(accepted.duplicates)
        if accepted.reports:
            alerts = self._fuse(
                link, accepted.reports, accepted.node_sent_ns, received_ns, offset, rtt
            )
            fused_ns = time.time_ns()
            encoded = self._stamp(alerts, fused_ns)
            self.metrics.report_count(link.nation).inc(len(accepted.reports))
            if self.journal:
                self._journal(
                    self.journal.record_batch,
                    node_id=link.node_id,
                    nation=link.nation.value,
                    payload=payload,
                    first_seq=accepted.reports[0].seq,
                    last_seq=accepted.reports[-1].seq,
                    clock_offset_ns=offset,
                    clock_rtt_ns=rtt,
                    received_ns=received_ns,
                    fused_ns=fused_ns,
                    alerts=encoded,
                )
            self.uncommitted += encoded

    def commit(self) -> None:
        """Make the batches ingested since the last commit durable (one journal transaction),
        then hand their alerts to the hub. Nothing of a batch reaches a subscriber, and its ack
        is not sent, before this; a crash before it loses only batches nobody was told about."""
        if self.journal_error:
            raise self.journal_refusal()
        if self.journal:
            self._journal(self.journal.commit)
        encoded, self.uncommitted = self.uncommitted, []
        if encoded:
            self.hub.fan_out(encoded)
            if self._after_handle is None and (self.engine.predictions_due or self.gc_thresholds):
                # after the broadcast these alerts joined (queued first, runs first)
                self._after_handle = asyncio.get_running_loop().call_soon(self._after_broadcast)

    def _journal(self, write: Callable[..., None], **kw: Any) -> None:
        """One journal write; a failure of the journal stops the relay's input (fail-stop): what
        it fused and could not journal is never acknowledged nor shown, so the nodes keep it,
        and a restarted relay, replaying the journal, is where it was before."""
        try:
            write(**kw)
        except sqlite3.Error as exc:
            self.journal_error = f"{type(exc).__name__}: {exc}"
            self.uncommitted.clear()
            self.metrics.journal_failed.set(1)
            log.critical("journal %s failed (%s): the relay accepts nothing more until it is "
                         "restarted", self.config.journal_path, self.journal_error)
            raise self.journal_refusal() from exc

    def journal_refusal(self) -> ProtocolError:
        """The error every node gets once the journal failed."""
        return ProtocolError(
            ErrorCode.INTERNAL,
            f"the relay's journal failed ({self.journal_error}); it accepts nothing until it is "
            "restarted: keep the reports and resend them then",
        )

    def _fuse(
        self,
        link: NodeLink,
        reports: list,
        node_sent_ns: int,
        received_ns: int,
        offset: int,
        rtt: int,
    ) -> list[Alert]:
        alerts: list[Alert] = []
        for report in reports:
            try:
                alerts.extend(
                    self.engine.ingest(
                        report,
                        node_sent_ns=node_sent_ns,
                        received_ns=received_ns,
                        clock_offset_ns=offset,
                        clock_rtt_ns=rtt,
                    )
                )
            except Exception:  # the engine must never take the relay down
                self.metrics.engine_errors.inc()
                log.exception("fusion engine failed on %s seq %d", link.node_id, report.seq)
        return alerts

    def _stamp(self, alerts: list[Alert], fused_ns: int) -> list[EncodedAlert]:
        for a in alerts:
            a.hops.fused_ns = fused_ns
            self.metrics.alert_count(a.kind).inc()
        return [self._encoded(a) for a in alerts]

    def _encoded(self, alert: Alert) -> EncodedAlert:
        """The alert encoded once for every subscriber, with any part that no reader would
        take (a non-finite number from the engine) withheld (``outcheck``)."""
        encoded, withheld = checked(alert)
        if withheld:
            self.metrics.alerts_withheld.inc()
            log.error("alert %d (%s, event %d): the engine gave a non-finite number in its %s; "
                      "sent without it", alert.alert_id, alert.kind.value, alert.event_id,
                      ", ".join(withheld))
        return encoded

    def _after_broadcast(self) -> None:
        """What can wait until a batch's alerts are on their way: the impact predictions the
        batch made due, then (after the broadcast of theirs) a young garbage collection."""
        self._after_handle = None
        if self.engine.predictions_due:
            self.predict_due()
        if self.gc_thresholds:
            asyncio.get_running_loop().call_soon(self.collect_young)

    def collect_young(self) -> None:
        """Generation 0 (or 1) when its count is past Python's own threshold for it."""
        if self.gc_thresholds is None:
            return
        t0, t1 = self.gc_thresholds
        c0, c1, _ = gc.get_count()
        if c1 >= t1:
            gc.collect(1)
        elif c0 >= t0:
            gc.collect(0)

    def predict_due(self) -> None:
        """The impact predictions the latest reports made due (sigma-point flights, 1-2 ms
        each), as an input of their own: journaled, replayed in the same place."""
        self._clock_input("predict")

    def tick(self) -> None:
        step = self.wall_steps.observe(time.time_ns(), time.monotonic_ns())
        if step:
            # The engine's time-outs are wall-clock differences: unless its stored wall times
            # move with the clock, a step forward reads as that much silence from every event
            self.metrics.wall_clock_steps.inc()
            log.warning("the relay's wall clock stepped by %+.3f s: the engine's wall times move "
                        "with it; hop latencies across the step are wrong", step / 1e9)
            self._clock_input("clock_step", step)
        self._clock_input("tick")

    def _clock_input(self, kind: str, step_ns: int = 0) -> None:
        """Run one of the engine's inputs that take only the time (``tick`` or ``predict``) or
        a step of the wall clock (``clock_step``), journal it (every one, alerts or not: replay
        needs them all to rebuild the state) and fan its alerts out."""
        try:
            self.commit()  # the batches before it go first, in alert-id order
        except ProtocolError:
            return  # a failed journal: no more inputs (the engine would run ahead of it)
        now = time.time_ns()
        try:
            alerts = self._time_input(kind, now, step_ns)
        except Exception:
            self.metrics.engine_errors.inc()
            log.exception("fusion engine %s failed", kind)
            return
        fused_ns = time.time_ns()
        encoded = self._stamp(alerts, fused_ns)
        if self.journal:
            try:
                self._journal(self.journal.record_tick, now_ns=now, fused_ns=fused_ns,
                              alerts=encoded, kind=kind, step_ns=step_ns)
            except ProtocolError:
                return  # logged: its alerts are not shown
        self.hub.fan_out(encoded)

    def _time_input(self, kind: str, now_ns: int, step_ns: int) -> list[Alert]:
        if kind == "clock_step":
            return self.engine.clock_stepped(step_ns)
        return self.engine.tick(now_ns) if kind == "tick" else self.engine.predict_due(now_ns)

    def maybe_collect_garbage(self, now_s: float) -> bool:
        """A full garbage collection when the relay is idle or the last one is long ago."""
        c = self.config
        since_full = now_s - self.last_full_gc_s
        idle = now_s - self.last_ingest_s >= c.gc_full_idle_s
        if not ((idle and since_full >= c.gc_full_min_s) or since_full >= c.gc_full_max_s):
            return False
        gc.collect()
        self.last_full_gc_s = now_s
        return True

    # -- restart ------------------------------------------------------------------------

    def _replay_journal(self) -> None:
        """Rebuild engine, node links and hub from the journal; check the alerts come out equal."""
        assert self.journal is not None
        stored = dict(self.journal.alert_bodies(0))
        inputs = mismatches = 0
        for rec in self.journal.inputs():
            inputs += 1
            if rec.kind in ("tick", "predict", "clock_step"):
                try:
                    alerts = self._time_input(rec.kind, rec.received_ns, rec.clock_offset_ns)
                except Exception:
                    alerts = []
            else:
                link = self.nodes.links.get(rec.node_id) or self.nodes.restore(
                    rec.node_id, rec.nation
                )
                batch = ReportBatch.model_validate(unpack(rec.payload))
                # as it was accepted then, whatever today's rules say (a journal written before
                # the plausibility screen may hold a report the screen refuses)
                accepted = accept_batch(link, batch, rec.clock_offset_ns, screen=False)
                alerts = self._fuse(
                    link,
                    accepted.reports,
                    accepted.node_sent_ns,
                    rec.received_ns,
                    rec.clock_offset_ns,
                    rec.clock_rtt_ns,
                )
            for a in alerts:
                a.hops.fused_ns = rec.fused_ns
            encoded = [self._encoded(a) for a in alerts]
            for e in encoded:
                if stored.get(e.alert_id) != e.msgpack:
                    mismatches += 1
            self.hub.fan_out(encoded)
        self.metrics.replayed_inputs.set(inputs)
        self.metrics.replay_mismatches.set(mismatches)
        if inputs:
            log.warning(
                "journal %s: replayed %d inputs, %d alerts (last alert id %d), %d mismatches",
                self.config.journal_path,
                inputs,
                len(stored),
                self.hub.last_alert_id,
                mismatches,
            )

    def _older_alerts(self, after_alert_id: int) -> list[EncodedAlert]:
        assert self.journal is not None
        return [
            EncodedAlert.from_msgpack(body) for _, body in self.journal.alert_bodies(after_alert_id)
        ]

    def replay_guard(self, node_id: str, kind: str) -> ReplayGuard:
        guard = self.replay_guards.get((node_id, kind))
        if guard is None:
            guard = self.replay_guards[node_id, kind] = ReplayGuard(self.config.time_window_ns)
        return guard


class _Conn:
    """Serialises sends on one WebSocket (the reader and a background task both send).

    A frame goes straight to the transport (``wire.DirectWriter``) when the connection allows it,
    its transport is not over its high-water mark and no ASGI send is waiting (which keeps the
    frames in order); otherwise through ASGI, which waits for the transport to drain."""

    def __init__(self, ws: WebSocket, fmt: str = "msgpack") -> None:
        self.ws = ws
        self.fmt = fmt
        self.lock = asyncio.Lock()
        self.direct: DirectWriter | None = None

    def enable_direct(self) -> DirectWriter | None:
        """After the handshake: use direct writes if this connection's server stack allows them."""
        self.direct = DirectWriter.of(self.ws)
        return self.direct

    def frames_waiting(self) -> bool:
        """Whether the peer's next frames are already received (known only with direct writes)."""
        return self.direct is not None and self.direct.received_waiting() > 0

    async def send_raw(self, frame: bytes | str) -> None:
        direct = self.direct
        if direct is not None and not self.lock.locked() and direct.ready():
            direct.write(frame_bytes(frame))
            return
        async with self.lock:
            if isinstance(frame, bytes):
                await self.ws.send_bytes(frame)
            else:
                await self.ws.send_text(frame)

    async def send(self, message: Any) -> None:
        await self.send_raw(encode_json(message) if self.fmt == "json" else encode(message))

    async def fail(self, error: ProtocolError, timeout_s: float = 2.0) -> None:
        """Send the error frame, then close with its code; never hang on a peer that stopped reading."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self.send(ErrorMessage(code=error.code, message=error.message, seq=error.seq)),
                timeout_s,
            )
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self.ws.close(code=int(error.close_code), reason=error.code.value), timeout_s
            )


async def _receive(ws: WebSocket) -> bytes | str | None:
    """Next data frame, or None when the peer is gone."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        return None
    data = message.get("bytes")
    return data if data is not None else message.get("text")


def create_app(config: RelayConfig | None = None) -> FastAPI:
    relay = Relay(config or RelayConfig())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def ticker() -> None:
            while True:
                await asyncio.sleep(relay.config.tick_interval_s)
                relay.tick()
                if relay.config.gc_control:
                    relay.collect_young()
                    relay.maybe_collect_garbage(time.monotonic())

        task = asyncio.create_task(ticker())
        thresholds = gc.get_threshold()
        if relay.config.gc_control:
            # Everything loaded so far (modules, the app, a replayed journal) lives as long as
            # the process: out of the collector's way, a full collection walks only what the
            # relay allocated since.
            gc.collect()
            gc.freeze()
            gc.disable()
            relay.gc_thresholds = (thresholds[0], thresholds[1])
        gc_started = [0.0]
        gc_histograms = [relay.metrics.gc_seconds.labels(str(g)) for g in range(3)]

        def gc_watch(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                gc_started[0] = time.perf_counter()
            else:
                gc_histograms[info["generation"]].observe(time.perf_counter() - gc_started[0])

        gc.callbacks.append(gc_watch)
        try:
            yield
        finally:
            gc.callbacks.remove(gc_watch)
            if relay.gc_thresholds:
                relay.gc_thresholds = None
                gc.enable()
            task.cancel()
            if relay.journal:
                relay.journal.close()

    app = FastAPI(
        title="warnshare relay",
        version=str(PROTOCOL_VERSION),
        description=(
            "Fuses national missile-warning tracks (USA, JPN, KOR) into one event per missile "
            "and pushes alerts. WebSockets (not in this schema, see docs/PROTOCOL.md): "
            "`/v1/ingest` for nodes, `/v1/alerts?format=json|msgpack&since=ID&token=T` for subscribers."
        ),
        lifespan=lifespan,
    )
    app.state.relay = relay
    app.add_middleware(ServerSend)

    @app.get("/healthz", summary="Liveness and a few counters (503 once the journal failed)")
    async def healthz() -> Any:
        body = {
            "status": "journal failed" if relay.journal_error else "ok",
            "protocol_version": PROTOCOL_VERSION,
            "uptime_s": round(time.monotonic() - relay.started_s, 3),
            "nodes_connected": sum(1 for n in relay.nodes.links.values() if n.connection),
            "subscribers": len(relay.hub.subscribers),
            "last_alert_id": relay.hub.last_alert_id,
            "journal": relay.config.journal_path is not None,
            "journal_error": relay.journal_error,
            "authentication": relay.config.trust is not None,
        }
        return JSONResponse(body, status_code=503) if relay.journal_error else body

    @app.get("/v1/events", response_model=list[EventSummary], summary="Current fused events")
    async def events() -> list[EventSummary]:
        return relay.engine.events()

    @app.get("/v1/nodes", summary="Node links: last acked seq and clock offset estimates")
    async def nodes() -> list[dict[str, Any]]:
        return [
            {
                "node_id": n.node_id,
                "nation": n.nation.value,
                "connected": n.connection is not None,
                "connected_ns": n.connected_ns if n.connection is not None else 0,
                "last_acked_seq": n.last_seq,
                "reports_accepted": n.accepted,
                "duplicates": n.duplicates,
                "clock_offset_ns": n.clock.offset_ns,
                "clock_rtt_ns": n.clock.rtt_ns,
                "clock_known": n.clock.known,
            }
            for n in relay.nodes.links.values()
        ]

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(
            generate_latest(relay.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    @contextlib.asynccontextmanager
    async def admitted(ws: WebSocket, conn: _Conn) -> AsyncIterator[bool]:
        """Count the connection; refuse it over the cap."""
        if relay.connections >= relay.config.max_connections:
            relay.metrics.rejected.labels(ErrorCode.RATE_LIMITED.value).inc()
            await conn.fail(
                ProtocolError(
                    ErrorCode.RATE_LIMITED,
                    f"the relay holds {relay.connections} connections, its limit",
                )
            )
            yield False
            return
        relay.connections += 1
        try:
            yield True
        finally:
            relay.connections -= 1

    @app.websocket("/v1/ingest")
    async def ingest(ws: WebSocket) -> None:
        await ws.accept()
        conn = _Conn(ws)
        if relay.config.direct_writes:
            conn.enable_direct()
        async with admitted(ws, conn) as ok:
            if ok:
                await _node_session(relay, ws, conn)

    @app.websocket("/v1/alerts")
    async def alerts(
        ws: WebSocket,
        format: str = Query("msgpack"),  # noqa: A002 - the documented query parameter name
        # parsed by the session, not by FastAPI, so a bad value gets BAD_REQUEST rather than a 403
        since: str | None = Query(None),
        token: str | None = Query(None),
        epoch: str | None = Query(None),
    ) -> None:
        await ws.accept()
        conn = _Conn(ws, format if format in ("msgpack", "json") else "json")
        if relay.config.direct_writes:
            conn.enable_direct()
        async with admitted(ws, conn) as ok:
            if ok:
                await _subscriber_session(relay, ws, conn, format, since, token, epoch)

    return app


# ------------------------------------------------------------------------ node sessions


async def _node_session(relay: Relay, ws: WebSocket, conn: _Conn) -> None:
    link: NodeLink | None = None
    clock_task: asyncio.Task | None = None
    pending: dict[int, int] = {}  # time request id -> t1
    pending_ack: Ack | None = None  # the latest batch's, not yet sent
    grouped = 0  # batches taken since the last ack
    limit = TokenBucket(
        relay.config.node_frames_per_s, relay.config.node_frames_burst, time.time_ns()
    )
    relay.metrics.nodes.inc()
    try:
        try:
            data = await asyncio.wait_for(_receive(ws), relay.config.hello_timeout_s)
        except TimeoutError:
            raise ProtocolError(
                ErrorCode.HELLO_REQUIRED, f"no hello within {relay.config.hello_timeout_s:g} s"
            ) from None
        if data is None:
            return
        hello = _decode_node(data)
        if not isinstance(hello, Hello):
            raise ProtocolError(ErrorCode.HELLO_REQUIRED, "the first frame must be a hello")
        if relay.journal_error:
            # its welcome would say which seqs are durable, and the journal cannot tell
            raise relay.journal_refusal()
        key_id = _authenticate_hello(relay, hello)
        link = relay.nodes.hello(hello)
        link.key_id = key_id
        old = link.connection
        link.connection = conn
        link.connected_ns = time.time_ns()
        if isinstance(old, _Conn):
            asyncio.create_task(
                old.fail(ProtocolError(ErrorCode.SUPERSEDED, "a newer connection took over"))
            )
        await conn.send(Welcome(relay_time_ns=time.time_ns(), last_acked_seq=link.last_seq))
        log.info(
            "node %s (%s) connected, resuming after seq %d",
            link.node_id,
            link.nation.value,
            link.last_seq,
        )

        async def clock_exchange() -> None:
            for n in range(1, 1 << 62):
                t1 = time.time_ns()
                pending[n] = t1
                await conn.send(TimeRequest(id=n, t1_ns=t1))
                await asyncio.sleep(
                    0.05 if n < relay.config.clock_burst else relay.config.clock_period_s
                )

        clock_task = asyncio.create_task(clock_exchange())
        while True:
            waiting = conn.frames_waiting()
            relay.hub.input_waiting(conn, waiting)
            if pending_ack is not None and (grouped >= relay.config.ack_group_max or not waiting):
                # The group's batches are durable, then their alerts go out, then the ack. Until
                # then nothing is awaited: the next frames are already received.
                relay.commit()
                relay.hub.flush_if_due()
                await conn.send(pending_ack)
                pending_ack, grouped = None, 0
                # Frames already queued are read without suspending: yield once per group so the
                # subscribers' writers drain what it queued before the next one adds more.
                await asyncio.sleep(0)
            data = await _receive(ws)
            received_ns = time.time_ns()
            if data is None:
                return
            if not limit.take(received_ns):
                raise ProtocolError(
                    ErrorCode.RATE_LIMITED,
                    f"more than {relay.config.node_frames_per_s:.0f} frames/s",
                )
            msg = _decode_node(data)
            if isinstance(msg, (ReportBatch, SignedBatch)):
                batch, payload = _open_batch(relay, link, msg, data, received_ns)
                try:
                    pending_ack = relay.ingest_batch(link, batch, payload, received_ns)
                except ProtocolError as exc:
                    exc.seq = batch.reports[0].seq
                    raise
                grouped += 1  # acked at the top of the loop, or after the frames waiting
            elif isinstance(msg, TimeReply):
                t1 = pending.pop(msg.id, None)
                if t1 is not None and t1 == msg.t1_ns:
                    link.clock.add_exchange(t1, msg.t2_ns, msg.t3_ns, received_ns)
                    relay.metrics.clock_offset.labels(link.node_id).set(link.clock.offset_ns / 1e9)
                    relay.metrics.clock_rtt.labels(link.node_id).set(link.clock.rtt_ns / 1e9)
            elif isinstance(msg, TimeRequest):
                relay.commit()  # before anything is awaited (the group's ack waits for its turn)
                await conn.send(
                    TimeReply(id=msg.id, t1_ns=msg.t1_ns, t2_ns=received_ns, t3_ns=time.time_ns())
                )
            else:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "hello may be sent only once")
    except ProtocolError as exc:
        relay.metrics.rejected.labels(exc.code.value).inc()
        log.warning("node %s: %s", link.node_id if link else "?", exc)
        await _ack_accepted(relay, conn, pending_ack)
        await conn.fail(exc)
    except WebSocketDisconnect:
        pass
    except Exception:  # a fault here must cost this connection only, never the relay
        log.exception("node %s: internal error", link.node_id if link else "?")
        relay.metrics.rejected.labels(ErrorCode.INTERNAL.value).inc()
        await _ack_accepted(relay, conn, pending_ack)
        await conn.fail(ProtocolError(ErrorCode.INTERNAL, "internal error; reconnect and resend"))
    finally:
        # the peer went away in the middle of a group: what was accepted is fused, its alerts go
        # out (unacknowledged, the node sends it again and the copies are dropped)
        _commit(relay)
        relay.hub.input_waiting(conn, 0)
        if clock_task:
            clock_task.cancel()
        if link is not None and link.connection is conn:
            link.connection = None
        relay.metrics.nodes.dec()


def _commit(relay: Relay) -> bool:
    """``relay.commit()`` on the way out of a node session: whether it worked. A failed journal
    (logged where it failed) or any other fault must not keep the session from closing."""
    try:
        relay.commit()
    except ProtocolError:
        return False
    except Exception:
        log.exception("commit failed")
        return False
    return True


async def _ack_accepted(relay: Relay, conn: _Conn, pending_ack: Ack | None) -> None:
    """Before a node's connection is closed on an error: what was accepted before the bad frame
    stays accepted. The group is committed and, if that worked, acknowledged."""
    if not _commit(relay):
        return  # nothing of the group may be acknowledged
    if pending_ack is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.send(pending_ack), 2.0)


def _authenticate_hello(relay: Relay, hello: Hello) -> str | None:
    trust = relay.config.trust
    if trust is None:
        return None
    auth = hello.auth
    if auth.scheme != "ed25519":
        raise ProtocolError(ErrorCode.AUTH_FAILED, "this relay requires ed25519-signed hellos")
    trust.verify_hello(
        hello.nation, hello.node_id, hello.sent_ns, auth.key_id, auth.nonce, auth.signature
    )
    relay.replay_guard(hello.node_id, "hello").check(
        auth.nonce, hello.sent_ns, time.time_ns(), "hello"
    )
    return auth.key_id


def _open_batch(
    relay: Relay, link: NodeLink, msg: ReportBatch | SignedBatch, data: bytes, received_ns: int
) -> tuple[ReportBatch, bytes]:
    """The batch inside a frame and the bytes to journal; checks signature and replay."""
    trust = relay.config.trust
    if isinstance(msg, ReportBatch):
        if trust is not None:
            raise ProtocolError(
                ErrorCode.AUTH_FAILED, "this relay accepts only signed_batch frames"
            )
        return msg, data
    if trust is None:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, "this relay has no trust store; send report_batch frames"
        )
    if msg.key_id != link.key_id:
        raise ProtocolError(
            ErrorCode.AUTH_FAILED, f"batch signed with key {msg.key_id}, hello used {link.key_id}"
        )
    trust.verify_batch(link.nation, msg.key_id, link.node_id, msg.payload, msg.signature)
    inner = decode_node_message(msg.payload)
    if not isinstance(inner, ReportBatch):
        raise ProtocolError(ErrorCode.SCHEMA_INVALID, "signed_batch payload must be a report_batch")
    relay.replay_guard(link.node_id, "batch").check(
        msg.signature, link.clock.to_local(inner.sent_ns), received_ns, "batch"
    )
    return inner, msg.payload


def _decode_node(data: bytes | str) -> Any:
    if isinstance(data, str):
        raise ProtocolError(
            ErrorCode.MALFORMED_FRAME, "node frames must be binary msgpack, not text"
        )
    return decode_node_message(data)


# ------------------------------------------------------------------ subscriber sessions


async def _subscriber_session(
    relay: Relay, ws: WebSocket, conn: _Conn, fmt: str, since_text: str | None, token: str | None,
    epoch: str | None = None,
) -> None:
    try:
        if fmt not in ("msgpack", "json"):
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"format must be msgpack or json, not {fmt!r}"
            )
        since = _parse_since(since_text)
        if epoch is not None and len(epoch) > 64:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "epoch is at most 64 characters")
        consumer = _authenticate_subscriber(relay, ws, token)
    except ProtocolError as exc:
        relay.metrics.rejected.labels(exc.code.value).inc()
        await conn.fail(exc)
        return
    await conn.send(Welcome(relay_time_ns=time.time_ns(), last_alert_id=relay.hub.last_alert_id,
                            relay_epoch=relay.epoch))
    if since is not None and (since > relay.hub.last_alert_id or epoch not in (None, "", relay.epoch)):
        # The subscriber's last alert came from a relay whose state this one does not have (run
        # without its journal, a standby): another epoch, or an id this relay never issued. This
        # one's ids started again at 1, so everything it holds is new to the subscriber.
        relay.metrics.resumed_elsewhere.inc()
        log.warning("subscriber resumes after alert %d of epoch %s, but this relay is epoch %s "
                    "with last alert %d: it is sent every alert this relay holds", since,
                    epoch or "(not given)", relay.epoch, relay.hub.last_alert_id)
        since = 0
    backlog = relay.hub.snapshot() if since is None else relay.hub.since(since)
    if backlog is None:
        await conn.fail(
            ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"since={since} is older than the alerts this relay still holds",
            )
        )
        return
    sub = Subscriber(
        name=consumer.name
        if consumer
        else (f"{ws.client.host}:{ws.client.port}" if ws.client else "?"),
        fmt=fmt,
        nation=consumer.nation if consumer else None,
        send=conn.send_raw,
        max_pending=relay.config.subscriber_max_pending,
        max_frame_alerts=relay.config.subscriber_max_frame_alerts,
        clock=time.time_ns,
        min_gap_ns=relay.hub.min_gap_ns,
        direct=conn.direct,
    )
    relay.hub.attach(sub, backlog)
    relay.metrics.subscribers.inc()
    writer = asyncio.create_task(sub.run_writer())
    reader = asyncio.create_task(_subscriber_reader(relay, ws, conn))
    try:
        done, _ = await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
        if writer in done and sub.overflowed:
            relay.metrics.slow_closed.inc()
            log.warning("subscriber %s closed: too slow (%d pending)", sub.name, len(sub.queue))
            resume = sub.queue[0].alert_id - 1 if sub.queue else relay.hub.last_alert_id
            await conn.fail(
                ProtocolError(
                    ErrorCode.SLOW_CONSUMER,
                    f"more than {sub.max_pending} critical alerts pending; resume with since={resume}",
                ),
                timeout_s=relay.config.subscriber_close_timeout_s,
            )
        elif reader in done and not reader.cancelled() and (exc := reader.exception()) is not None:
            if isinstance(exc, ProtocolError):
                relay.metrics.rejected.labels(exc.code.value).inc()
                await conn.fail(exc)
    finally:
        relay.hub.detach(sub)
        relay.metrics.conflated.inc(sub.conflated_total)
        relay.metrics.subscribers.dec()
        for task in (writer, reader):
            task.cancel()
        await asyncio.gather(writer, reader, return_exceptions=True)
        if ws.client_state != WebSocketState.DISCONNECTED:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), relay.config.subscriber_close_timeout_s)


def _parse_since(text: str | None) -> int | None:
    """The ``since`` query parameter: decimal digits, an alert id in [0, 2^63)."""
    if text is None:
        return None
    digits = text.lstrip("0") or "0"
    if not (text.isascii() and text.isdigit() and len(digits) <= 19 and int(digits) < 1 << 63):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"since must be an alert id >= 0, not {text[:32]!r}"
        )
    return int(digits)


def _authenticate_subscriber(relay: Relay, ws: WebSocket, token: str | None) -> Consumer | None:
    trust = relay.config.trust
    if trust is None:
        return None
    header = ws.headers.get("authorization", "")
    if not token and header.lower().startswith("bearer "):
        token = header[7:].strip()
    return trust.consumer_for(token)


async def _subscriber_reader(relay: Relay, ws: WebSocket, conn: _Conn) -> None:
    """Answer a subscriber's clock requests; return when it goes away."""
    limit = TokenBucket(
        relay.config.subscriber_frames_per_s, relay.config.subscriber_frames_burst, time.time_ns()
    )
    while True:
        try:
            data = await _receive(ws)
        except WebSocketDisconnect:
            return
        received_ns = time.time_ns()
        if data is None:
            return
        # the limit is in bytes: a text frame's UTF-8 can be up to 4 times its length in characters
        size = len(data) if isinstance(data, bytes) else len(data.encode())
        if size > MAX_SUBSCRIBER_FRAME_BYTES:
            raise ProtocolError(
                ErrorCode.FRAME_TOO_LARGE,
                f"subscriber frames are limited to {MAX_SUBSCRIBER_FRAME_BYTES} bytes",
            )
        if not limit.take(received_ns):
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"more than {relay.config.subscriber_frames_per_s:.0f} frames/s",
            )
        msg = decode_subscriber_message(data)
        await conn.send(
            TimeReply(id=msg.id, t1_ns=msg.t1_ns, t2_ns=received_ns, t3_ns=time.time_ns())
        )


__all__ = ["RelayConfig", "Relay", "create_app"]
