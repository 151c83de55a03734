"""Shared fixtures: a real uvicorn relay on an ephemeral 127.0.0.1 port, in a thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn


@dataclass
class RunningRelay:
    app: object
    server: uvicorn.Server
    thread: threading.Thread
    port: int

    tls: bool = False

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def relay(self):
        return self.app.state.relay

    async def settled_alert_id(self, quiet_s: float = 0.15, timeout_s: float = 10.0) -> int:
        return await settled_alert_id(self.relay, quiet_s, timeout_s)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


async def settled_alert_id(relay, quiet_s: float = 0.15, timeout_s: float = 10.0) -> int:
    """The relay's last alert id once it has nothing more to say about the reports it
    acknowledged (the impact predictions they made due run after their acks) and no alert has
    come for ``quiet_s`` (ticks may still close events)."""
    import asyncio

    last, quiet_since = -1, time.monotonic()
    deadline = quiet_since + timeout_s
    while time.monotonic() < deadline:
        busy = relay.engine.predictions_due or relay._after_handle is not None
        if busy or relay.hub.last_alert_id != last:
            last, quiet_since = relay.hub.last_alert_id, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            break
        await asyncio.sleep(0.02)
    return last


def start_relay(config=None, **uvicorn_overrides) -> RunningRelay:
    from warnshare.relay.app import RelayConfig, create_app
    from warnshare.relay.server import uvicorn_options

    app = create_app(config or RelayConfig())
    options = {**uvicorn_options("127.0.0.1", 0, "warning"), **uvicorn_overrides}
    server = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(target=server.run, name="relay", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("relay did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return RunningRelay(app, server, thread, port, tls="ssl_certfile" in uvicorn_overrides)


@pytest.fixture
def relay_server() -> Iterator[RunningRelay]:
    running = start_relay()
    try:
        yield running
    finally:
        running.stop()


async def raw_node(url: str, nation, node_id: str):
    """A node spoken by hand on /v1/ingest: the connection and the relay's answer to its hello."""
    import websockets

    from warnshare.protocol import Hello, decode_relay_to_node, encode

    ws = await websockets.connect(f"{url}/v1/ingest")
    await ws.send(encode(Hello(protocol_version=1, nation=nation, node_id=node_id, sent_ns=time.time_ns())))
    return ws, decode_relay_to_node(await asyncio.wait_for(ws.recv(), 5))


async def send_report(ws, report):
    """Send one report in a batch of its own; the relay's answer to it (its clock requests
    passed over)."""
    from warnshare.protocol import ReportBatch, decode_relay_to_node, encode

    await ws.send(encode(ReportBatch(sent_ns=time.time_ns(), reports=[report])))
    while (msg := decode_relay_to_node(await asyncio.wait_for(ws.recv(), 5))).type == "time_request":
        pass
    return msg
