"""Open-loop load generator and receivers for one benchmark run against one system.

Publishers send on a fixed schedule of intended times, whatever the system does: reports that
are due together (because the timer woke late, or the rate is high) go out in one frame. A
report's latency at a subscriber is ``receive time - intended send time`` on the same host
clock, so a stall anywhere, in the generator included, is counted against every report it
delayed rather than hidden (no coordinated omission). Subscribers of every system count
what they get per report, so loss and duplicates are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import socket
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from warnshare.bench import wsclient
from warnshare.bench.baselines import (
    NATS_SUBJECT,
    TCP_ROLE_PUBLISHER,
    TCP_ROLE_SUBSCRIBER,
    TcpFrameParser,
    tcp_frame,
)
from warnshare.bench.traffic import Traffic, report_batch_frame
from warnshare.protocol import (
    ALERTS_PATH,
    INGEST_PATH,
    MAX_REPORTS_PER_BATCH,
    NATIONS,
    PROTOCOL_VERSION,
    Hello,
    TimeReply,
    encode,
)

#: Receive buffer of a stalled subscriber's socket: small, so its TCP window fills quickly.
STALLED_RCVBUF = 4096
#: A decode cache is cleared when it grows past this many entries.
_CACHE_LIMIT = 200_000
_UPDATE = "TRACK_UPDATE"
#: The hops read off each alert (see ``Decoder.hops``).
HOP_NAMES = ("node", "uplink", "relay")


# ---------------------------------------------------------------------- decoding


class Decoder:
    """Maps received frames to report indices, caching by bytes: every subscriber gets the
    same frames (baselines) or the same encoded alerts (relay), so each is decoded once."""

    def __init__(self, traffic: Traffic) -> None:
        self.index = traffic.index_map()
        self.intended = traffic.intended_by_index().tolist()
        self._by_nation = {}
        self._skew: dict[int, int] = {}
        base = 0
        for node in traffic.nodes:
            self._by_nation[NATIONS.index(node.nation)] = (base, node.intended_ns)
            self._skew[NATIONS.index(node.nation)] = node.skew_ns
            base += len(node)
        self._cache: dict[bytes, Any] = {}
        #: Alerts for reports intended at or after this are sampled into ``hops``.
        self.hops_from_ns = 0
        #: Per source nation, the hops of each distinct TRACK_UPDATE, as read off the alert:
        #: (node sent - measured, relay received - node sent, fused - relay received, the relay's
        #: clock-offset estimate minus the node's true skew), ns.
        self.hops: dict[str, list[tuple[int, int, int, int]]] = {}
        self.fuzzy_matches = 0
        self.unmatched = 0
        self.other_messages: dict[str, int] = {}

    def _lookup(self, nation: str, measured_ns: int) -> int:
        """The report a node-clock ``measured_ns`` of ``nation`` is (its skew taken off)."""
        n_idx = NATIONS.index(nation)
        measured_ns -= self._skew.get(n_idx, 0)
        idx = self.index.get(measured_ns * 4 + n_idx)
        if idx is not None:
            return idx
        # the relay may have shifted the time by a clock-offset estimate: take the nearest
        base, times = self._by_nation.get(n_idx, (0, None))
        if times is None or len(times) == 0:
            self.unmatched += 1
            return -1
        j = int(np.searchsorted(times, measured_ns))
        cands = [k for k in (j - 1, j) if 0 <= k < len(times)]
        k = min(cands, key=lambda c: abs(int(times[c]) - measured_ns))
        self.fuzzy_matches += 1
        return base + k

    def forwarded(self, frame: bytes) -> tuple[int, ...]:
        """Report indices in a forwarded ReportBatch frame (baselines)."""
        hit = self._cache.get(frame)
        if hit is None:
            obj = msgpack.unpackb(frame, raw=False)
            hit = tuple(self._lookup(r["nation"], r["measured_ns"]) for r in obj["reports"])
            self._remember(frame, hit)
        return hit

    def alert_batch(self, frame: bytes) -> tuple[tuple[tuple[int, bool, int], ...], int, int]:
        """(((report index, is TRACK_UPDATE, fused_ns), ...), conflated, relay_sent_ns) of a
        relay AlertBatch frame.

        Subscribers' frames differ only in ``relay_sent_ns`` when the relay batches alike,
        so the rest of the frame is looked up whole first; failing that, alerts are sliced
        out undecoded (``Unpacker.skip``) and looked up by their bytes, since the relay
        encodes each alert once for all subscribers.
        """
        up = msgpack.Unpacker(raw=False)
        up.feed(frame)
        fields = up.read_map_header()
        if up.unpack() != "type":
            return (), 0
        kind = up.unpack()
        if kind != "alert_batch":
            self.other_messages[kind] = self.other_messages.get(kind, 0) + 1
            return (), 0, 0
        fields -= 1
        cache = self._cache
        sent_ns = 0
        if up.unpack() == "relay_sent_ns":
            sent_ns = int(up.unpack())
            fields -= 1
            tail = frame[up.tell() :]
            hit = cache.get(tail)
            if hit is not None:
                return hit[0], hit[1], sent_ns
        else:
            up = msgpack.Unpacker(raw=False)
            up.feed(frame)
            fields = up.read_map_header()
            tail = None
        out: list[tuple[int, bool, int]] = []
        conflated = 0
        for _ in range(fields):
            key = up.unpack()
            if key == "alerts":
                for _ in range(up.read_array_header()):
                    p0 = up.tell()
                    up.skip()
                    ab = frame[p0 : up.tell()]
                    one = cache.get(ab)
                    if one is None:
                        one = self._alert(msgpack.unpackb(ab, raw=False))
                        self._remember(ab, one)
                    if one[0] >= 0:
                        out.append(one)
            elif key == "conflated":
                conflated = int(up.unpack())
            elif key == "relay_sent_ns":
                sent_ns = int(up.unpack())
            else:
                up.skip()
        hits = tuple(out)
        if tail is not None:
            self._remember(tail, (hits, conflated))  # relay_sent_ns is not part of the tail
        return hits, conflated, sent_ns

    def _remember(self, key: bytes, value: Any) -> None:
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = value

    def _alert(self, alert: dict[str, Any]) -> tuple[int, bool, int]:
        hops = alert.get("hops") or {}
        if "measured_ns" not in hops or "source_nation" not in hops:
            return (-1, False, 0)
        # hops carry the relay's clock; the node's own time is that plus the link's offset
        offset = int(hops.get("clock_offset_ns", 0))
        nation = hops["source_nation"]
        idx = self._lookup(nation, int(hops["measured_ns"]) + offset)
        update = alert.get("kind") == _UPDATE
        if update and idx >= 0 and self.intended[idx] >= self.hops_from_ns:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self.hops.setdefault(nation, []).append((
                    int(hops["node_sent_ns"]) - int(hops["measured_ns"]),
                    int(hops["relay_received_ns"]) - int(hops["node_sent_ns"]),
                    int(hops["fused_ns"]) - int(hops["relay_received_ns"]),
                    offset - self._skew.get(NATIONS.index(nation), 0),
                ))
        return (idx, update, int(hops.get("fused_ns", 0)))

    def hop_summary(self) -> dict[str, dict[str, float]]:
        """Per source nation: median and p99 (ms) of each hop, and the clock-offset error (µs)."""
        out = {}
        for nation, rows in sorted(self.hops.items()):
            a = np.array(rows, dtype=np.float64)
            entry: dict[str, float] = {"samples": float(len(rows))}
            for k, name in enumerate(HOP_NAMES):
                entry[f"{name}_p50_ms"] = float(np.percentile(a[:, k], 50)) / 1e6
                entry[f"{name}_p99_ms"] = float(np.percentile(a[:, k], 99)) / 1e6
            entry["offset_error_p50_us"] = float(np.percentile(a[:, 3], 50)) / 1e3
            entry["offset_error_max_abs_us"] = float(np.abs(a[:, 3]).max()) / 1e3
            out[nation] = entry
        return out

    def json_alert_batch(self, text: str) -> tuple[tuple[tuple[int, bool, int], ...], int, int]:
        obj = json.loads(text)
        if obj.get("type") != "alert_batch":
            return (), 0, 0
        hits = (self._alert(a) for a in obj["alerts"])
        return (tuple(h for h in hits if h[0] >= 0), int(obj.get("conflated", 0)),
                int(obj.get("relay_sent_ns", 0)))


# ---------------------------------------------------------------------- receivers


class Receiver:
    """One subscriber's tally: per-report delivery counts and latency samples (arrival order)."""

    def __init__(self, stalled: bool = False) -> None:
        self.stalled = stalled
        self.decoder: Decoder | None = None  # frames before the schedule exists are ignored
        self.intended: list[int] = []
        self.warm_cut_ns = 0
        self.seen = bytearray()  # any message for the report (latency on the first)
        self.updates = bytearray()  # TRACK_UPDATE count (relay) or copies (baselines)
        self.samples = array("q")
        self.warmup_samples = array("q")  # latencies of the reports sent during the warm-up
        self.delivered = 0
        self.frames = 0
        self.bytes = 0
        self.conflated = 0
        self.last_recv_ns = 0
        self.closed_code: int | None = None
        #: Relay alerts only, per report's first TRACK_UPDATE after the warm-up: fused -> the
        #: frame's relay_sent_ns (the relay's fan-out) and relay sent -> this receive (ns).
        self.fanout = array("q")
        self.downlink = array("q")

    def bind(self, decoder: Decoder, total: int, warm_cut_ns: int) -> None:
        """Start counting against a schedule of ``total`` reports."""
        self.intended = decoder.intended
        self.warm_cut_ns = warm_cut_ns
        self.seen = bytearray(total)
        self.updates = bytearray(total)
        self.decoder = decoder

    def _count(self, idx: int, update: bool, recv_ns: int) -> None:
        if update and self.updates[idx] < 255:
            self.updates[idx] += 1
        if not self.seen[idx]:
            self.seen[idx] = 1
            self.delivered += 1
            t = self.intended[idx]
            if t >= self.warm_cut_ns:
                self.samples.append(recv_ns - t)
            else:
                self.warmup_samples.append(recv_ns - t)

    def on_forwarded(self, frame: bytes, recv_ns: int) -> None:
        if self.decoder is None:
            return
        self.frames += 1
        self.bytes += len(frame)
        self.last_recv_ns = recv_ns
        for idx in self.decoder.forwarded(frame):
            if idx >= 0:
                self._count(idx, True, recv_ns)

    def on_relay(self, payload: bytes, is_text: bool, recv_ns: int) -> None:
        if self.decoder is None:
            return
        self.frames += 1
        self.bytes += len(payload)
        self.last_recv_ns = recv_ns
        if is_text:
            hits, conflated, sent_ns = self.decoder.json_alert_batch(payload.decode())
        else:
            hits, conflated, sent_ns = self.decoder.alert_batch(payload)
        self.conflated += conflated
        for idx, update, fused_ns in hits:
            if update and sent_ns and not self.seen[idx] and self.intended[idx] >= self.warm_cut_ns:
                self.fanout.append(sent_ns - fused_ns)
                self.downlink.append(recv_ns - sent_ns)
            self._count(idx, update, recv_ns)

    @property
    def duplicates(self) -> int:
        return sum(1 for c in self.updates if c > 1) if self.updates else 0


def downlink_hops(receivers: Sequence[Receiver]) -> dict[str, float]:
    """p50 and p99 (ms) of the relay's fan-out and of the downlink over ``receivers``."""
    out: dict[str, float] = {}
    for name in ("fanout", "downlink"):
        a = np.concatenate([np.frombuffer(getattr(r, name), dtype=np.int64) for r in receivers] or [np.zeros(0)])
        if a.size:
            out[f"{name}_p50_ms"] = float(np.percentile(a, 50)) / 1e6
            out[f"{name}_p99_ms"] = float(np.percentile(a, 99)) / 1e6
    return out


class _TcpSubscriber(asyncio.Protocol):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.parser = TcpFrameParser()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(tcp_frame(TCP_ROLE_SUBSCRIBER))

    def data_received(self, data: bytes) -> None:
        recv_ns = time.time_ns()
        on = self.receiver.on_forwarded
        for frame in self.parser.feed(data):
            on(frame, recv_ns)


class _NatsSubscriber(asyncio.Protocol):
    """NATS core subscriber speaking the text protocol directly (INFO/CONNECT/SUB/MSG/PING)."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        opts = {"verbose": False, "pedantic": False, "protocol": 1, "echo": False, "name": "bench"}
        transport.write(
            f"CONNECT {json.dumps(opts)}\r\nSUB {NATS_SUBJECT} 1\r\nPING\r\n".encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("NATS connection closed"))

    def data_received(self, data: bytes) -> None:
        recv_ns = time.time_ns()
        buf = self.buf
        buf += data
        off, n = 0, len(buf)
        while off < n:
            eol = buf.find(b"\r\n", off)
            if eol < 0:
                break
            if buf.startswith(b"MSG ", off):
                parts = bytes(buf[off:eol]).split()
                size = int(parts[-1])
                if n - (eol + 2) < size + 2:
                    break
                self.receiver.on_forwarded(bytes(buf[eol + 2 : eol + 2 + size]), recv_ns)
                off = eol + 2 + size + 2
                continue
            line = bytes(buf[off:eol])
            off = eol + 2
            if line == b"PING":
                assert self.transport is not None
                self.transport.write(b"PONG\r\n")
            elif line == b"PONG" and not self.ready.done():
                self.ready.set_result(None)
            elif line.startswith(b"-ERR") and not self.ready.done():
                self.ready.set_exception(ConnectionError(line.decode()))
        if off:
            del buf[:off]


# ---------------------------------------------------------------------- publishers


class Publisher:
    """One node's connection; ``send(frame)`` never waits for the system under test."""

    def __init__(self, system: str, nation_index: int, skew_ns: int = 0) -> None:
        self.system = system
        self.nation = NATIONS[nation_index]
        #: This node's clock minus the true one: it stamps hellos, batches and clock replies
        #: with its own clock, as a node whose host clock is off would.
        self.skew_ns = skew_ns
        self.node_id = f"bench-{self.nation.value.lower()}"
        self.acked_seq = 0
        self.welcome_seq: int | None = None
        self.time_requests = 0
        self.errors: list[str] = []
        self._ws: wsclient.WsClientProtocol | None = None
        self._tcp: asyncio.Transport | None = None
        self._nats: Any = None
        self._welcomed: asyncio.Future[None] | None = None

    async def connect(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        if self.system in ("relay", "ws"):
            self._welcomed = loop.create_future()
            self._ws = await wsclient.connect(host, port, INGEST_PATH, self._on_ws)
            if self.system == "relay":
                hello = Hello(
                    protocol_version=PROTOCOL_VERSION,
                    nation=self.nation,
                    node_id=self.node_id,
                    sent_ns=time.time_ns() + self.skew_ns,
                )
                self._ws.send_binary(encode(hello))
                await asyncio.wait_for(self._welcomed, 10.0)
        elif self.system == "tcp":
            sock = socket.create_connection((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            self._tcp, _ = await loop.create_connection(asyncio.Protocol, sock=sock)
            self._tcp.write(tcp_frame(TCP_ROLE_PUBLISHER))
        elif self.system == "nats":
            import nats

            self._nats = await nats.connect(
                f"nats://{host}:{port}", name=self.node_id, allow_reconnect=False,
                flusher_queue_size=65536, pending_size=64 << 20,
            )
        else:
            raise ValueError(f"unknown system {self.system!r}")

    def _on_ws(self, payload: bytes, is_text: bool, recv_ns: int) -> None:
        if self.system != "relay":
            return
        try:
            obj = msgpack.unpackb(payload, raw=False)
        except ValueError:
            self.errors.append("undecodable frame from relay")
            return
        kind = obj.get("type")
        if kind == "ack":
            self.acked_seq = max(self.acked_seq, int(obj["acked_seq"]))
        elif kind == "time_request":
            self.time_requests += 1
            skew = self.skew_ns
            reply = TimeReply(id=obj["id"], t1_ns=obj["t1_ns"], t2_ns=recv_ns + skew, t3_ns=time.time_ns() + skew)
            assert self._ws is not None
            self._ws.send_binary(encode(reply))
        elif kind == "welcome":
            self.welcome_seq = int(obj.get("last_acked_seq", 0))
            if self._welcomed is not None and not self._welcomed.done():
                self._welcomed.set_result(None)
        elif kind == "error":
            self.errors.append(f"{obj.get('code')}: {obj.get('message')}")

    async def send(self, frame: bytes) -> None:
        if self._ws is not None:
            self._ws.send_binary(frame)
        elif self._tcp is not None:
            self._tcp.write(tcp_frame(frame))
        elif self._nats is not None:
            await self._nats.publish(NATS_SUBJECT, frame)

    async def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
        if self._tcp is not None:
            self._tcp.close()
        if self._nats is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nats.close(), 5.0)

    async def flush(self) -> None:
        if self._nats is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nats.flush(), 5.0)


# ---------------------------------------------------------------------- one run


@dataclass
class LoadResult:
    """Raw outcome of one run, before reduction to histograms."""

    total_reports: int
    healthy: list[Receiver]
    stalled: list[Receiver]
    send_lag_ns: array
    sends: int
    frames_sent: int
    first_send_ns: int
    last_send_ns: int
    start_ns: int
    end_ns: int
    drained: bool
    drain_s: float
    acked: int
    publisher_errors: list[str] = field(default_factory=list)
    time_requests: int = 0
    fuzzy_matches: int = 0
    unmatched: int = 0
    hops: dict[str, dict[str, float]] = field(default_factory=dict)
    #: The relay's fan-out (fused -> relay sent) and downlink (relay sent -> subscriber
    #: receive), p50 and p99 (ms) over the healthy subscribers (``downlink_hops``).
    downlink: dict[str, float] = field(default_factory=dict)


async def _open_subscriber(
    system: str, host: str, port: int, receiver: Receiver, stalled: bool
) -> Callable[[], None]:
    """Connect one subscriber; returns its closer. A stalled one stops reading once open."""
    loop = asyncio.get_running_loop()
    rcvbuf = STALLED_RCVBUF if stalled else None
    if system in ("relay", "ws"):
        on = receiver.on_relay if system == "relay" else (lambda p, t, r: receiver.on_forwarded(p, r))
        proto = await wsclient.connect(host, port, ALERTS_PATH, on, rcvbuf=rcvbuf)

        def close_ws() -> None:
            receiver.closed_code = proto.close_code
            proto.close()

        if stalled:
            assert proto.transport is not None
            proto.transport.pause_reading()
        return close_ws
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await loop.sock_connect(sock, (host, port))
    if system == "tcp":
        transport, _ = await loop.create_connection(lambda: _TcpSubscriber(receiver), sock=sock)
    elif system == "nats":
        transport, nproto = await loop.create_connection(lambda: _NatsSubscriber(receiver), sock=sock)
        await asyncio.wait_for(nproto.ready, 10.0)
    else:
        raise ValueError(f"unknown system {system!r}")
    if stalled:
        transport.pause_reading()
    return transport.close


async def run_load(
    system: str,
    host: str,
    port: int,
    make_traffic: Callable[[int], Traffic],
    subscribers: int,
    stalled: int = 0,
    warmup_s: float = 1.0,
    drain_timeout_s: float = 10.0,
    progress: Callable[[float], None] | None = None,
    on_started: Callable[[], None] | None = None,
    lead_s: float = 0.3,
    nodes: int = 3,
    skew_ns: Sequence[int] = (),
) -> LoadResult:
    """Connect, build the schedule, play it open loop, wait for delivery, disconnect.

    ``make_traffic(start_ns)`` builds the schedule once every connection is open; ``start_ns``
    is ``lead_s`` ahead, which must cover building it. The first ``warmup_s`` of the schedule
    are delivered and counted but left out of the latency histograms.
    """
    receivers = [Receiver(stalled=i < stalled) for i in range(subscribers)]
    closers = []
    for r in receivers:
        closers.append(await _open_subscriber(system, host, port, r, r.stalled))
    publishers = [Publisher(system, n, int(skew_ns[n]) if n < len(skew_ns) else 0) for n in range(nodes)]
    for p in publishers:
        await p.connect(host, port)
    if system == "nats":
        for p in publishers:
            await p.flush()
    # building the schedule competes for the CPU with whatever else runs: when it ends too
    # close to its own start, build it again further ahead
    for attempt in range(4):
        traffic = make_traffic(time.time_ns() + int(lead_s * 1e9) * 3**attempt)
        if traffic.start_ns - time.time_ns() > 50_000_000:
            break
    if len(traffic.nodes) != nodes:
        raise ValueError(f"the schedule has {len(traffic.nodes)} nodes, not {nodes}")
    decoder = Decoder(traffic)
    total = traffic.total
    warm_cut = traffic.start_ns + int(warmup_s * 1e9)
    decoder.hops_from_ns = warm_cut
    for r in receivers:
        r.bind(decoder, total, warm_cut)

    lag = array("q")
    intended = [n.intended_ns.tolist() for n in traffic.nodes]
    packed = [n.packed for n in traffic.nodes]
    ptr = [0] * len(publishers)
    frames_sent = sends = 0
    first_send = last_send = 0
    end_of_schedule = max((t[-1] for t in intended if t), default=traffic.start_ns)
    span = max(1, end_of_schedule - traffic.start_ns)
    if time.time_ns() > traffic.start_ns:
        raise RuntimeError("building the schedule took longer than the lead time before it")
    if on_started is not None:
        on_started()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection pause in the receiver would be charged to the system under test
    next_progress = 0
    try:
        while True:
            now = time.time_ns()
            next_due = None
            for n, pub in enumerate(publishers):
                times = intended[n]
                j = ptr[n]
                k = j
                limit = min(len(times), j + MAX_REPORTS_PER_BATCH)
                while k < limit and times[k] <= now:
                    k += 1
                if k > j:
                    await pub.send(report_batch_frame(now + pub.skew_ns, packed[n][j:k]))
                    if not first_send:
                        first_send = now
                    last_send = now
                    frames_sent += 1
                    sends += k - j
                    lag.extend(now - t for t in times[j:k])
                    ptr[n] = k
                if k < len(times):
                    due = times[k]
                    next_due = due if next_due is None or due < next_due else next_due
            if next_due is None:
                break
            if progress is not None and now >= next_progress:
                progress(min(1.0, (now - traffic.start_ns) / span))
                next_progress = now + 100_000_000
            delay = (next_due - time.time_ns()) / 1e9
            await asyncio.sleep(delay if delay > 0 else 0)

        # drain: wait until every healthy subscriber has everything, or progress stops
        for p in publishers:
            await p.flush()
        healthy = [r for r in receivers if not r.stalled]
        t_end = time.monotonic()
        deadline = t_end + drain_timeout_s
        drained = False
        last_total, last_change = -1, t_end
        while time.monotonic() < deadline:
            got = sum(r.delivered for r in healthy)
            acked_ok = system != "relay" or all(
                p.acked_seq >= len(t) for p, t in zip(publishers, intended, strict=True)
            )
            if got == total * len(healthy) and acked_ok:
                drained = True
                break
            if got != last_total:
                last_total, last_change = got, time.monotonic()
            elif time.monotonic() - last_change > min(2.0, drain_timeout_s):
                break
            await asyncio.sleep(0.02)
        drain_s = time.monotonic() - t_end
    finally:
        if gc_was_enabled:
            gc.enable()
    end_ns = time.time_ns()
    for p in publishers:
        await p.close()
    for close in closers:
        close()
    await asyncio.sleep(0.05)
    return LoadResult(
        total_reports=total,
        healthy=[r for r in receivers if not r.stalled],
        stalled=[r for r in receivers if r.stalled],
        send_lag_ns=lag,
        sends=sends,
        frames_sent=frames_sent,
        first_send_ns=first_send,
        last_send_ns=last_send,
        start_ns=traffic.start_ns,
        end_ns=end_ns,
        drained=drained,
        drain_s=drain_s,
        acked=sum(p.acked_seq for p in publishers),
        publisher_errors=[e for p in publishers for e in p.errors],
        time_requests=sum(p.time_requests for p in publishers),
        fuzzy_matches=decoder.fuzzy_matches,
        unmatched=decoder.unmatched,
        hops=decoder.hop_summary(),
        downlink=downlink_hops([r for r in receivers if not r.stalled]),
    )
