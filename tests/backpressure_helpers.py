"""Tools for backpressure tests and the reliability bench: a TCP-level stalled subscriber and a
paced multi-missile publisher."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from tests.synth import T0_NS, ballistic_arc, national_reports
from warnshare.node import NodePublisher
from warnshare.protocol import NATIONS, Nation, TrackReport


class StalledSubscriber:
    """A subscriber that completes the WebSocket handshake, then never reads its socket (a tiny
    receive buffer, so the relay's writes back up at once) until ``drain`` is called."""

    def __init__(self, port: int, query: str = "", rcvbuf: int = 4096) -> None:
        self.proto = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/v1/alerts{query}"), max_size=None)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: sets the window
        self.sock.connect(("127.0.0.1", port))
        self.proto.send_request(self.proto.connect())
        self.sock.sendall(b"".join(self.proto.data_to_send()))
        self.frames: list[Frame] = []
        deadline = time.monotonic() + 10
        while not any(isinstance(e, Response) for e in self._pump(1)):
            assert time.monotonic() < deadline, "no handshake response"
        assert self.proto.handshake_exc is None, self.proto.handshake_exc

    def shrink_relay_send_buffer(self, server, size: int = 4096) -> None:
        """Give the relay's end of this connection a small send buffer too (an in-process relay's
        uvicorn server), so the stall reaches the relay after kilobytes, not the megabytes
        loopback autotuning would absorb."""
        port = self.sock.getsockname()[1]
        for proto in list(server.server_state.connections):
            transport = getattr(proto, "transport", None)
            if transport is not None and transport.get_extra_info("peername")[1] == port:
                transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
                return
        raise AssertionError("the relay has no connection from this subscriber")

    def _pump(self, n: int) -> list:
        data = self.sock.recv(n)
        if data:
            self.proto.receive_data(data)
        else:
            self.proto.receive_eof()
        events = self.proto.events_received()
        self.frames.extend(e for e in events if isinstance(e, Frame))
        self.sock.sendall(b"".join(self.proto.data_to_send()))  # pongs and the closing handshake
        return events if data else [*events, None]

    def drain(self, timeout_s: float = 20.0) -> int | None:
        """Read everything until the relay closes; the close code it sent (None: none arrived)."""
        self.sock.settimeout(timeout_s)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if None in self._pump(1 << 16):
                    break
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            pass
        self.sock.close()
        rcvd = self.proto.close_rcvd
        return rcvd.code if rcvd else None

    def data_frames(self) -> list[bytes]:
        return [f.data for f in self.frames if f.opcode in (Opcode.BINARY, Opcode.TEXT)]


@dataclass
class Salvo:
    """Missiles from distinct launch sites, one nation each, overlapping in time."""

    n_missiles: int
    reports_each: int
    stagger_steps: int = 2
    t0_ns: int = T0_NS
    plan: list[list[TrackReport]] = field(default_factory=list)  # per step: reports (seq unset)

    def __post_init__(self) -> None:
        tracks = []
        for m in range(self.n_missiles):
            states = ballistic_arc(36.5 + 0.45 * (m % 6), 124.5 + 0.5 * (m // 6), 60 + 7 * m, 4500 + 20 * m, 40, self.reports_each - 1)
            nation = NATIONS[m % 3]
            start = m * self.stagger_steps
            reports = national_reports(states, nation, track_number=1000 + m, seed=m, t0_ns=self.t0_ns + start * 1_000_000_000)
            tracks.append((start, reports))
        steps = max(s for s, _ in tracks) + self.reports_each
        self.plan = [[r[k - s] for s, r in tracks if 0 <= k - s < len(r)] for k in range(steps)]

    @property
    def total(self) -> int:
        return sum(len(p) for p in self.plan)


async def publish_salvo(url: str, salvo: Salvo, step_interval_s: float, node_prefix: str = "bp",
                        max_batch: int = 4) -> dict[Nation, NodePublisher]:
    """Publish ``salvo`` one step every ``step_interval_s`` (a steady rate); wait for every ack.
    Small batches keep each fan-out small, as a live node's would be."""
    pubs = {n: NodePublisher(url, n, f"{node_prefix}-{n.value.lower()}", backoff_initial_s=0.05,
                             backoff_max_s=0.5, max_batch=max_batch) for n in NATIONS}
    for pub in pubs.values():
        pub.task = asyncio.create_task(pub.run())
    start = time.monotonic()
    for k, step in enumerate(salvo.plan):
        for r in step:
            pub = pubs[r.nation]
            pub.submit([r.model_copy(update={"seq": pub.next_seq()})])
        delay = start + (k + 1) * step_interval_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    for pub in pubs.values():
        assert await pub.wait_acked(60), pub.node_id
    for pub in pubs.values():
        pub.task.cancel()
    await asyncio.gather(*(p.task for p in pubs.values()), return_exceptions=True)
    return pubs
