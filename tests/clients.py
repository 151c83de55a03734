"""A test subscriber: a raw WebSocket client that records every alert the relay sends it."""

from __future__ import annotations

import asyncio
import time

import websockets

from warnshare.protocol import AlertBatch, Welcome, decode_relay_to_subscriber


class Recorder:
    """Subscribes to ``/v1/alerts`` (msgpack or JSON, from ``since`` if given) and keeps every
    alert, checking that each frame comes in the format asked for."""

    def __init__(self, url: str, fmt: str = "msgpack", since: int | None = None) -> None:
        query = f"?format={fmt}" + (f"&since={since}" if since is not None else "")
        self.url = f"{url}/v1/alerts{query}"
        self.fmt = fmt
        self.alerts: list = []
        self.welcome: Welcome | None = None
        self.task: asyncio.Task | None = None
        self.ws = None

    async def start(self) -> Recorder:
        self.ws = await websockets.connect(self.url, max_size=None, compression=None)
        self.welcome = decode_relay_to_subscriber(await self.ws.recv())
        assert isinstance(self.welcome, Welcome), self.welcome
        self.task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for frame in self.ws:
            assert isinstance(frame, str) == (self.fmt == "json")
            msg = decode_relay_to_subscriber(frame)
            if isinstance(msg, AlertBatch):
                self.alerts.extend(msg.alerts)

    async def wait_for(self, predicate, timeout_s: float = 15.0) -> None:
        """Until ``predicate(alerts)`` holds; fails the test after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self.alerts):
            assert time.monotonic() < deadline, f"timed out; got {len(self.alerts)} alerts"
            await asyncio.sleep(0.05)

    async def until(self, last_id: int, timeout_s: float = 20.0) -> None:
        """Until alert ``last_id`` is in, or ``timeout_s`` (the caller checks what came)."""
        deadline = time.monotonic() + timeout_s
        while (not self.alerts or self.alerts[-1].alert_id < last_id) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await self.ws.close()
        await asyncio.gather(self.task, return_exceptions=True)


async def all_alerts(url: str) -> list:
    """Every alert the relay holds (``since=0``), up to its welcome's last alert id."""
    rec = await Recorder(url, since=0).start()
    try:
        await rec.wait_for(lambda alerts: len(alerts) >= rec.welcome.last_alert_id, 10.0)
    finally:
        await rec.stop()
    return rec.alerts
