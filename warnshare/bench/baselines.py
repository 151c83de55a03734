"""Baselines the relay is measured against, carrying the same frame bytes with no validation.

- ``TcpForwarder``: raw asyncio TCP fan-out with 4-byte length-prefixed frames, the floor on
  this machine. Every frame a publisher sends is written, unchanged, to every subscriber;
  the frames of one read are written to each subscriber in one call.
- ``create_ws_forwarder_app``: a bare WebSocket forwarder on the relay's stack (FastAPI /
  Starlette + uvicorn websockets): one bounded writer queue and task per subscriber, one
  WebSocket message per forwarded frame, what the stack costs before any relay logic.
- ``start_nats_server``: NATS core pub/sub, when the ``nats-server`` binary is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
import subprocess

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from warnshare.bench.cpus import preexec_pin

TCP_ROLE_PUBLISHER = b"PUB"
TCP_ROLE_SUBSCRIBER = b"SUB"
#: Subject the NATS baseline publishes reports on.
NATS_SUBJECT = "warnshare.reports"
#: Per-subscriber queue of the bare WebSocket forwarder (frames); the oldest is dropped when full.
WS_FORWARDER_QUEUE = 4096

_LEN = struct.Struct(">I")


def tcp_frame(payload: bytes) -> bytes:
    """A payload with its 4-byte big-endian length prefix."""
    return _LEN.pack(len(payload)) + payload


class TcpFrameParser:
    """Splits a byte stream into length-prefixed frames."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out = []
        off, n = 0, len(buf)
        while n - off >= 4:
            (length,) = _LEN.unpack_from(buf, off)
            if n - off - 4 < length:
                break
            out.append(bytes(buf[off + 4 : off + 4 + length]))
            off += 4 + length
        if off:
            del buf[:off]
        return out


class TcpForwarder:
    """Fan-out hub: a client's first frame says its role (``PUB`` or ``SUB``)."""

    def __init__(self) -> None:
        self.subscribers: set[asyncio.Transport] = set()
        self.frames_forwarded = 0

    def protocol(self) -> asyncio.Protocol:
        return _TcpForwarderConnection(self)


class _TcpForwarderConnection(asyncio.Protocol):
    def __init__(self, hub: TcpForwarder) -> None:
        self.hub = hub
        self.role: bytes | None = None
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.hub.subscribers.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.role is None:
            if len(buf) < 4 or len(buf) < 4 + _LEN.unpack_from(buf, 0)[0]:
                return
            length = _LEN.unpack_from(buf, 0)[0]
            self.role = bytes(buf[4 : 4 + length])
            del buf[: 4 + length]
            if self.role == TCP_ROLE_SUBSCRIBER:
                assert self.transport is not None
                self.hub.subscribers.add(self.transport)
        if self.role != TCP_ROLE_PUBLISHER:
            buf.clear()
            return
        # forward every complete frame of this read, as one write per subscriber
        off, n, frames = 0, len(buf), 0
        while n - off >= 4:
            length = _LEN.unpack_from(buf, off)[0]
            if n - off - 4 < length:
                break
            off += 4 + length
            frames += 1
        if not off:
            return
        chunk = bytes(buf[:off])
        del buf[:off]
        self.hub.frames_forwarded += frames
        for t in self.hub.subscribers:
            t.write(chunk)


def create_ws_forwarder_app(queue_size: int = WS_FORWARDER_QUEUE) -> FastAPI:
    """Publishers send to /v1/ingest; every frame goes, unchanged, to every /v1/alerts client."""
    app = FastAPI(title="bare WebSocket forwarder")
    queues: set[asyncio.Queue[bytes]] = set()
    app.state.dropped = 0

    @app.websocket("/v1/ingest")
    async def ingest(ws: WebSocket) -> None:
        await ws.accept()
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                data = await ws.receive_bytes()
                for q in queues:
                    if q.full():
                        q.get_nowait()
                        app.state.dropped += 1
                    q.put_nowait(data)

    @app.websocket("/v1/alerts")
    async def alerts(ws: WebSocket) -> None:
        await ws.accept()
        q: asyncio.Queue[bytes] = asyncio.Queue(queue_size)

        async def writer() -> None:
            while True:
                await ws.send_bytes(await q.get())

        queues.add(q)
        task = asyncio.create_task(writer())
        try:
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass
        finally:
            queues.discard(q)
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    return app


def nats_server_path() -> str | None:
    return shutil.which("nats-server")


def start_nats_server(
    port: int, host: str = "127.0.0.1", cpus: tuple[int, ...] = ()
) -> subprocess.Popen[bytes]:
    """Start ``nats-server`` on host:port (default limits; no JetStream, no persistence), on
    ``cpus`` when given (see cpus.py)."""
    path = nats_server_path()
    if path is None:
        raise FileNotFoundError("nats-server is not on PATH (Debian package nats-server)")
    return subprocess.Popen(
        [path, "-a", host, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=preexec_pin(cpus),
    )
