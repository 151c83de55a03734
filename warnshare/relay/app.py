"""The relay's FastAPI app: node ingest and alert WebSockets, events, health and metrics.

A thin shell: it decodes and checks frames (ingest.py), feeds the fusion engine, stamps the
wall-clock hops and hands alerts to the hub (hub.py) for fan-out. Decisions live in the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Query, WebSocket
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest
from starlette.websockets import WebSocketDisconnect, WebSocketState

from warnshare.fusion import FusionConfig, FusionEngine
from warnshare.protocol import (
    MAX_SUBSCRIBER_FRAME_BYTES,
    PROTOCOL_VERSION,
    Ack,
    ErrorCode,
    ErrorMessage,
    EventSummary,
    Hello,
    ProtocolError,
    ReportBatch,
    TimeReply,
    TimeRequest,
    Welcome,
    decode_node_message,
    decode_subscriber_message,
    encode,
    encode_json,
)
from warnshare.relay.hub import Hub, Subscriber
from warnshare.relay.ingest import NodeLink, NodeRegistry, accept_batch

log = logging.getLogger("warnshare.relay")


@dataclass
class RelayConfig:
    fusion: FusionConfig = field(default_factory=FusionConfig)
    tick_interval_s: float = 0.25
    #: Clock exchange with each node: a burst at connect, then one every period.
    clock_burst: int = 3
    clock_period_s: float = 2.0
    subscriber_max_pending: int = 10_000
    subscriber_max_frame_alerts: int = 500
    subscriber_close_timeout_s: float = 2.0
    ring_size: int = 200_000


class RelayMetrics:
    """Prometheus metrics in a registry of the app's own (several apps can share a process)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.reports = Counter("warnshare_reports_accepted", "Reports accepted", ["nation"], registry=r)
        self.duplicates = Counter("warnshare_reports_duplicate", "Re-sent reports dropped as duplicates", registry=r)
        self.rejected = Counter("warnshare_frames_rejected", "Frames refused, by error code", ["code"], registry=r)
        self.alerts = Counter("warnshare_alerts", "Alerts issued", ["kind"], registry=r)
        self.engine_errors = Counter("warnshare_engine_errors", "Reports the fusion engine failed on", registry=r)
        self.conflated = Counter("warnshare_alerts_conflated", "TRACK_UPDATEs conflated for slow subscribers", registry=r)
        self.slow_closed = Counter("warnshare_subscribers_closed_slow", "Subscribers closed as too slow", registry=r)
        self.nodes = Gauge("warnshare_nodes_connected", "Node connections open", registry=r)
        self.subscribers = Gauge("warnshare_subscribers_connected", "Subscriber connections open", registry=r)
        self.clock_offset = Gauge("warnshare_node_clock_offset_seconds", "Node clock minus relay clock", ["node_id"], registry=r)
        self.clock_rtt = Gauge("warnshare_node_clock_rtt_seconds", "Round trip of the best clock sample", ["node_id"], registry=r)
        self.ingest_seconds = Histogram(
            "warnshare_batch_processing_seconds",
            "Receipt of a report batch to its alerts handed to the hub",
            buckets=(1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1),
            registry=r,
        )


class Relay:
    """The relay's state: one engine, one hub, the node links, metrics."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.engine = FusionEngine(config.fusion)
        self.hub = Hub(ring_size=config.ring_size)
        self.nodes = NodeRegistry()
        self.metrics = RelayMetrics()
        self.started_ns = time.time_ns()

    def publish(self, alerts: list) -> None:
        if not alerts:
            return
        fused_ns = time.time_ns()
        for a in alerts:
            a.hops.fused_ns = fused_ns
            self.metrics.alerts.labels(a.kind.value).inc()
        self.hub.publish(alerts)

    def ingest_batch(self, link: NodeLink, batch: ReportBatch, received_ns: int) -> Ack:
        accepted = accept_batch(link, batch)
        offset, rtt = link.clock.offset_ns, link.clock.rtt_ns
        alerts: list = []
        for report in accepted.reports:
            try:
                alerts.extend(
                    self.engine.ingest(
                        report,
                        node_sent_ns=accepted.node_sent_ns,
                        received_ns=received_ns,
                        clock_offset_ns=offset,
                        clock_rtt_ns=rtt,
                    )
                )
            except Exception:  # the engine must never take the relay down
                self.metrics.engine_errors.inc()
                log.exception("fusion engine failed on %s seq %d", link.node_id, report.seq)
        self.publish(alerts)
        if accepted.reports:
            self.metrics.reports.labels(link.nation.value).inc(len(accepted.reports))
        if accepted.duplicates:
            self.metrics.duplicates.inc(accepted.duplicates)
        self.metrics.ingest_seconds.observe((time.time_ns() - received_ns) / 1e9)
        return Ack(acked_seq=accepted.acked_seq, relay_received_ns=received_ns)

    def tick(self) -> None:
        try:
            self.publish(self.engine.tick(time.time_ns()))
        except Exception:
            self.metrics.engine_errors.inc()
            log.exception("fusion engine tick failed")


class _Conn:
    """Serialises sends on one WebSocket (the reader and a background task both send)."""

    def __init__(self, ws: WebSocket, fmt: str = "msgpack") -> None:
        self.ws = ws
        self.fmt = fmt
        self.lock = asyncio.Lock()

    async def send_raw(self, frame: bytes | str) -> None:
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
                self.send(ErrorMessage(code=error.code, message=error.message, seq=error.seq)), timeout_s
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

        task = asyncio.create_task(ticker())
        try:
            yield
        finally:
            task.cancel()

    app = FastAPI(
        title="warnshare relay",
        version=str(PROTOCOL_VERSION),
        description=(
            "Fuses national missile-warning tracks (USA, JPN, KOR) into one event per missile "
            "and pushes alerts. WebSockets (not in this schema, see docs/PROTOCOL.md): "
            "`/v1/ingest` for nodes, `/v1/alerts?format=json|msgpack&since=ID` for subscribers."
        ),
        lifespan=lifespan,
    )
    app.state.relay = relay

    @app.get("/healthz", summary="Liveness and a few counters")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "protocol_version": PROTOCOL_VERSION,
            "uptime_s": round((time.time_ns() - relay.started_ns) / 1e9, 3),
            "nodes_connected": sum(1 for n in relay.nodes.links.values() if n.connection),
            "subscribers": len(relay.hub.subscribers),
            "last_alert_id": relay.hub.last_alert_id,
        }

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

    @app.websocket("/v1/ingest")
    async def ingest(ws: WebSocket) -> None:
        await ws.accept()
        conn = _Conn(ws)
        link: NodeLink | None = None
        clock_task: asyncio.Task | None = None
        pending: dict[int, int] = {}  # time request id -> t1
        relay.metrics.nodes.inc()
        try:
            data = await _receive(ws)
            if data is None:
                return
            hello = _decode_node(data)
            if not isinstance(hello, Hello):
                raise ProtocolError(ErrorCode.HELLO_REQUIRED, "the first frame must be a hello")
            link = relay.nodes.hello(hello)
            old = link.connection
            link.connection = conn
            if isinstance(old, _Conn):
                asyncio.create_task(
                    old.fail(ProtocolError(ErrorCode.SUPERSEDED, "a newer connection took over"))
                )
            await conn.send(Welcome(relay_time_ns=time.time_ns(), last_acked_seq=link.last_seq))
            log.info("node %s (%s) connected, resuming after seq %d", link.node_id, link.nation.value, link.last_seq)

            async def clock_exchange() -> None:
                n = 0
                while True:
                    n += 1
                    t1 = time.time_ns()
                    pending[n] = t1
                    await conn.send(TimeRequest(id=n, t1_ns=t1))
                    await asyncio.sleep(0.05 if n < relay.config.clock_burst else relay.config.clock_period_s)

            clock_task = asyncio.create_task(clock_exchange())
            while True:
                data = await _receive(ws)
                received_ns = time.time_ns()
                if data is None:
                    return
                msg = _decode_node(data)
                if isinstance(msg, ReportBatch):
                    try:
                        ack = relay.ingest_batch(link, msg, received_ns)
                    except ProtocolError as exc:
                        exc.seq = msg.reports[0].seq
                        raise
                    await conn.send(ack)
                elif isinstance(msg, TimeReply):
                    t1 = pending.pop(msg.id, None)
                    if t1 is not None and t1 == msg.t1_ns:
                        link.clock.add_exchange(t1, msg.t2_ns, msg.t3_ns, received_ns)
                        relay.metrics.clock_offset.labels(link.node_id).set(link.clock.offset_ns / 1e9)
                        relay.metrics.clock_rtt.labels(link.node_id).set(link.clock.rtt_ns / 1e9)
                elif isinstance(msg, TimeRequest):
                    await conn.send(
                        TimeReply(id=msg.id, t1_ns=msg.t1_ns, t2_ns=received_ns, t3_ns=time.time_ns())
                    )
                else:
                    raise ProtocolError(ErrorCode.BAD_REQUEST, "hello may be sent only once")
        except ProtocolError as exc:
            relay.metrics.rejected.labels(exc.code.value).inc()
            log.warning("node %s: %s", link.node_id if link else "?", exc)
            await conn.fail(exc)
        except WebSocketDisconnect:
            pass
        finally:
            if clock_task:
                clock_task.cancel()
            if link is not None and link.connection is conn:
                link.connection = None
            relay.metrics.nodes.dec()

    @app.websocket("/v1/alerts")
    async def alerts(
        ws: WebSocket,
        format: str = Query("msgpack"),  # noqa: A002 - the documented query parameter name
        since: int | None = Query(None),
    ) -> None:
        await ws.accept()
        fmt = format if format in ("msgpack", "json") else "json"
        conn = _Conn(ws, fmt)
        if format not in ("msgpack", "json"):
            await conn.fail(ProtocolError(ErrorCode.BAD_REQUEST, f"format must be msgpack or json, not {format!r}"))
            return
        if since is not None and since < 0:
            await conn.fail(ProtocolError(ErrorCode.BAD_REQUEST, "since must be >= 0"))
            return
        await conn.send(Welcome(relay_time_ns=time.time_ns(), last_alert_id=relay.hub.last_alert_id))
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
            name=f"{ws.client.host}:{ws.client.port}" if ws.client else "?",
            fmt=fmt,
            send=conn.send_raw,
            max_pending=relay.config.subscriber_max_pending,
            max_frame_alerts=relay.config.subscriber_max_frame_alerts,
            clock=time.time_ns,
        )
        relay.hub.attach(sub, backlog)
        relay.metrics.subscribers.inc()
        writer = asyncio.create_task(sub.run_writer())
        reader = asyncio.create_task(_subscriber_reader(ws, conn))
        try:
            done, _ = await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
            if writer in done and sub.overflowed:
                relay.metrics.slow_closed.inc()
                log.warning("subscriber %s closed: too slow (%d pending)", sub.name, len(sub.queue))
                await conn.fail(
                    ProtocolError(
                        ErrorCode.SLOW_CONSUMER,
                        f"more than {sub.max_pending} critical alerts pending; resume with "
                        f"since={sub.queue[0].alert_id - 1 if sub.queue else relay.hub.last_alert_id}",
                    ),
                    timeout_s=relay.config.subscriber_close_timeout_s,
                )
            elif reader in done and (exc := reader.exception()) is not None:
                if isinstance(exc, ProtocolError):
                    relay.metrics.rejected.labels(exc.code.value).inc()
                    await conn.fail(exc)
        finally:
            relay.hub.detach(sub)
            relay.metrics.conflated.inc(sub.conflated_total)
            relay.metrics.subscribers.dec()
            for task in (writer, reader):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(writer, reader, return_exceptions=True)
            if ws.client_state != WebSocketState.DISCONNECTED:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), relay.config.subscriber_close_timeout_s)

    return app


async def _subscriber_reader(ws: WebSocket, conn: _Conn) -> None:
    """Answer a subscriber's clock requests; return when it goes away."""
    while True:
        try:
            data = await _receive(ws)
        except WebSocketDisconnect:
            return
        received_ns = time.time_ns()
        if data is None:
            return
        if len(data) > MAX_SUBSCRIBER_FRAME_BYTES:
            raise ProtocolError(ErrorCode.FRAME_TOO_LARGE, f"subscriber frames are limited to {MAX_SUBSCRIBER_FRAME_BYTES} bytes")
        msg = decode_subscriber_message(data)
        await conn.send(TimeReply(id=msg.id, t1_ns=msg.t1_ns, t2_ns=received_ns, t3_ns=time.time_ns()))


def _decode_node(data: bytes | str) -> Any:
    if isinstance(data, str):
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, "node frames must be binary msgpack, not text")
    return decode_node_message(data)
