"""Direct WebSocket frame writes: a data frame's bytes built once, written straight to a transport.

The relay sends the same alert frame to many subscribers. Going through ASGI costs, per
subscriber and frame, a message dict, an ``await``, the sans-I/O protocol's frame serialisation
and a ``b"".join``; the bytes it produces are the same every time (server frames are not masked
and the relay runs without permessage-deflate). So the hub builds the frame once and writes it to
each subscriber's asyncio transport, as the raw-TCP fan-out does.

This reaches into uvicorn's websockets sans-I/O implementation (the ASGI ``send`` callable is a
bound method of the connection's protocol object). ``DirectWriter.of`` returns None, and the
relay keeps to plain ASGI sends, whenever the connection is not exactly that: another server,
another WebSocket implementation, a compression extension, an unexpected shape of the object.
"""

from __future__ import annotations

import struct
from typing import Any

_OPEN = 1  # websockets.protocol.State.OPEN
SCOPE_KEY = "warnshare.server_send"
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


def frame_bytes(payload: bytes | str) -> bytes:
    """One unmasked, unfragmented server-to-client WebSocket frame (RFC 6455 §5.2): binary for
    bytes, text (UTF-8) for str."""
    if isinstance(payload, str):
        payload = payload.encode()
        first = 0x81
    else:
        first = 0x82
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 1 << 16:
        return _HEADER_16.pack(first, 126, n) + payload
    return _HEADER_64.pack(first, 127, n) + payload


class DirectWriter:
    """Writes whole frames to one uvicorn WebSocket connection's transport, honestly: only while
    the connection is open (handshake done, no close frame sent or received, transport not
    closing), and ``ready`` only while the transport has not asked its protocol to pause writing
    (its buffer is below the high-water mark), so a slow reader is left to the queued path."""

    __slots__ = ("proto", "transport", "writable")

    def __init__(self, proto: Any) -> None:
        self.proto = proto
        self.transport = proto.transport
        self.writable = proto.writable

    @classmethod
    def of(cls, ws: Any) -> DirectWriter | None:
        """The writer for a Starlette WebSocket served by uvicorn's websockets-sansio, else None.

        Starlette wraps the server's ``send`` in closures of its own; ``ServerSend`` (an ASGI
        middleware around the app) keeps the server's callable in the scope."""
        proto = getattr(ws.scope.get(SCOPE_KEY), "__self__", None)
        if proto is None or type(proto).__module__ != (
            "uvicorn.protocols.websockets.websockets_sansio_impl"
        ):
            return None
        try:
            conn = proto.conn
            if getattr(conn, "extensions", None) or conn.state != _OPEN:
                return None  # compression would change the frame bytes; not open: nothing to do
            if not proto.handshake_complete or proto.initial_response is not None:
                return None
            writer = cls(proto)
            writer.usable()  # every attribute it reads exists
        except AttributeError:
            return None
        if writer.transport is None or not hasattr(writer.transport, "write"):
            return None
        return writer

    def usable(self) -> bool:
        """Open for data frames: no close frame sent, none received, the peer still there.

        (The handshake was complete when the writer was made; a close frame received or a
        protocol error makes uvicorn close the transport, which ``is_closing`` sees.)"""
        p = self.proto
        return not (p.close_sent or p.disconnected or self.transport.is_closing())

    def ready(self) -> bool:
        """Usable, and the transport is not over its high-water mark (writing would not pile up)."""
        return self.writable.is_set() and self.usable()

    def write(self, frame: bytes) -> None:
        """Write one frame made by ``frame_bytes``; the caller checked ``ready`` or ``usable``."""
        self.transport.write(frame)

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size()

    def received_waiting(self) -> int:
        """Events the server has received from the peer that the app has not read yet (0 when
        the server does not keep them in a ``queue``: the relay then acks every frame)."""
        queue = getattr(self.proto, "queue", None)
        return queue.qsize() if queue is not None else 0


class ServerSend:
    """ASGI middleware: puts the server's own ``send`` callable into a WebSocket scope (under
    ``SCOPE_KEY``) before any framework wraps it, for ``DirectWriter.of``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope[SCOPE_KEY] = send
        await self.app(scope, receive, send)
