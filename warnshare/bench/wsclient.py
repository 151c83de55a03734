"""A minimal asyncio WebSocket client (RFC 6455) for the load generator, cheap per frame.

The load side of a benchmark runs 100+ subscribers in one process on one core; a general
client library's per-frame cost would make the *client* the bottleneck and the measurement
a measurement of itself. This protocol parses frames straight out of ``data_received``,
stamps every frame of a read with the time of that read, answers pings, and offers no
extensions (so permessage-deflate is never negotiated).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time
from collections.abc import Callable

from websockets.speedups import apply_mask

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

#: on_message(payload, is_text, recv_ns)
MessageHandler = Callable[[bytes, bool, int], None]


class HandshakeError(ConnectionError):
    pass


class WsClientProtocol(asyncio.Protocol):
    """One WebSocket connection; ``on_message`` is called for each complete data message."""

    def __init__(self, host: str, port: int, path: str, on_message: MessageHandler) -> None:
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self.close_reason = ""
        self.bytes_received = 0
        self.frames_received = 0
        self._buf = bytearray()
        self._handshaken = False
        self._fragments: list[bytes] = []
        self._fragment_text = False

    # ------------------------------------------------------------ asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or HandshakeError("connection closed during handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        recv_ns = time.time_ns()
        self.bytes_received += len(data)
        buf = self._buf
        buf += data
        if not self._handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            if b" 101 " not in status + b" ":
                self.opened.set_exception(HandshakeError(status.decode("latin-1")))
                assert self.transport is not None
                self.transport.close()
                return
            del buf[: end + 4]
            self._handshaken = True
            self.opened.set_result(None)
        self._parse(recv_ns)

    # ------------------------------------------------------------ frames

    def _parse(self, recv_ns: int) -> None:
        buf = self._buf
        n = len(buf)
        off = 0
        while n - off >= 2:
            b0, b1 = buf[off], buf[off + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if n - off < 4:
                    break
                length = (buf[off + 2] << 8) | buf[off + 3]
                head = 4
            elif length == 127:
                if n - off < 10:
                    break
                (length,) = struct.unpack_from(">Q", buf, off + 2)
                head = 10
            if b1 & 0x80:  # servers must not mask; tolerate it anyway
                head += 4
            if n - off < head + length:
                break
            payload = bytes(buf[off + head : off + head + length])
            if b1 & 0x80:
                payload = apply_mask(payload, bytes(buf[off + head - 4 : off + head]))
            off += head + length
            self._frame(b0 & 0x80, b0 & 0x0F, payload, recv_ns)
        if off:
            del buf[:off]

    def _frame(self, fin: int, opcode: int, payload: bytes, recv_ns: int) -> None:
        if opcode in (OP_TEXT, OP_BINARY, OP_CONT):
            if opcode != OP_CONT:
                self._fragment_text = opcode == OP_TEXT
            if not fin:
                self._fragments.append(payload)
                return
            if self._fragments:
                payload = b"".join((*self._fragments, payload))
                self._fragments.clear()
            self.frames_received += 1
            self.on_message(payload, self._fragment_text, recv_ns)
        elif opcode == OP_PING:
            self._send(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            if len(payload) >= 2:
                self.close_code = struct.unpack(">H", payload[:2])[0]
                self.close_reason = payload[2:].decode("utf-8", "replace")
            else:
                self.close_code = 1005
            self._send(OP_CLOSE, payload[:2])
            assert self.transport is not None
            self.transport.close()

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        n = len(payload)
        if n < 126:
            head = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = os.urandom(4)
        self.transport.write(b"".join((head, mask, apply_mask(payload, mask))))

    # ------------------------------------------------------------ public

    def send_binary(self, payload: bytes) -> None:
        self._send(OP_BINARY, payload)

    def close(self, code: int = 1000) -> None:
        self._send(OP_CLOSE, struct.pack(">H", code))
        if self.transport is not None:
            self.transport.close()


async def connect(
    host: str,
    port: int,
    path: str,
    on_message: MessageHandler,
    rcvbuf: int | None = None,
    timeout_s: float = 10.0,
) -> WsClientProtocol:
    """Open a WebSocket; ``rcvbuf`` shrinks the socket's receive buffer (for a stalled reader)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if rcvbuf is not None:
        # before connect, so the advertised window scale matches the small buffer
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout_s)
        _, proto = await loop.create_connection(
            lambda: WsClientProtocol(host, port, path, on_message), sock=sock
        )
    except BaseException:
        sock.close()
        raise
    await asyncio.wait_for(proto.opened, timeout_s)
    return proto
