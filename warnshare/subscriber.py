"""`warnshare subscribe`: listen to the relay's alerts, one line each, with their latency.

``AlertSubscriber`` is the reusable client: it estimates its clock offset to the relay (so the
last hop and the end-to-end latency are right when the hosts' clocks differ), resumes with
``since=`` after a drop, and yields ``ReceivedAlert``s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import ssl
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from warnshare.envdefaults import env_str
from warnshare.latency import ClockOffsetEstimator, hop_latencies_ns
from warnshare.protocol import (
    ALERTS_PATH,
    PICTURE_KINDS,
    Alert,
    AlertBatch,
    ErrorMessage,
    TimeReply,
    TimeRequest,
    Welcome,
    decode_relay_to_subscriber,
    encode,
)

log = logging.getLogger("warnshare.subscriber")


@dataclass(frozen=True, slots=True)
class ReceivedAlert:
    alert: Alert
    relay_sent_ns: int  # relay clock
    received_ns: int  # subscriber clock, converted to the relay clock
    conflated_before: int

    def stamps(self) -> dict[str, int]:
        h = self.alert.hops
        return {
            "measured_ns": h.measured_ns,
            "node_sent_ns": h.node_sent_ns,
            "relay_received_ns": h.relay_received_ns,
            "fused_ns": h.fused_ns,
            "relay_sent_ns": self.relay_sent_ns,
            "subscriber_received_ns": self.received_ns,
        }

    def latencies_ns(self) -> dict[str, int]:
        return hop_latencies_ns(self.stamps())


def alerts_url(
    url: str, fmt: str | None = None, since: int | None = None, epoch: str | None = None
) -> str:
    """ws://host:port[/v1/alerts][?...] with the format, since and epoch parameters set."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if not path.endswith(ALERTS_PATH):
        path = path + ALERTS_PATH
    query = dict(parse_qsl(parts.query))
    if fmt:
        query["format"] = fmt
    if since is not None:
        query["since"] = str(since)
        if epoch:
            query["epoch"] = epoch
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query), ""))


class SubscriptionError(Exception):
    """The relay refused the subscription (bad request, unknown since, ...)."""


class AlertSubscriber:
    def __init__(
        self,
        url: str,
        *,
        fmt: str = "msgpack",
        since: int | None = None,
        reconnect: bool = True,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.ssl_context = ssl_context
        self.fmt = fmt
        self.last_alert_id = since
        self.reconnect = reconnect
        self.clock = ClockOffsetEstimator()
        self.conflated = 0
        self.welcome: Welcome | None = None
        #: The relay epoch of the alerts received (their ids are that numbering's).
        self.epoch: str | None = None

    async def alerts(self) -> AsyncIterator[ReceivedAlert]:
        backoff = 0.2
        while True:
            try:
                url = alerts_url(self.url, self.fmt, self.last_alert_id, self.epoch)
                async with websockets.connect(
                    url,
                    compression=None,
                    max_size=64 << 20,
                    open_timeout=5,
                    additional_headers={"Authorization": f"Bearer {self.token}"}
                    if self.token
                    else None,
                    ssl=self.ssl_context if url.startswith("wss:") else None,
                ) as ws:
                    async for item in self._session(ws):
                        backoff = 0.2
                        yield item
                    return
            except SubscriptionError:
                raise
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
                if not self.reconnect:
                    raise
                log.warning("cannot reach %s (%s); retrying", self.url, exc)
            await asyncio.sleep(backoff)
            backoff = min(5.0, backoff * 2)

    async def _session(self, ws) -> AsyncIterator[ReceivedAlert]:
        pending: dict[int, int] = {}

        async def clock_requests() -> None:
            for i in range(1, 1 << 62):
                t1 = time.time_ns()
                pending[i] = t1
                await ws.send(encode(TimeRequest(id=i, t1_ns=t1)))
                await asyncio.sleep(0.05 if i < 4 else 5.0)

        task = asyncio.create_task(clock_requests())
        try:
            async for frame in ws:
                t4 = time.time_ns()
                msg = decode_relay_to_subscriber(frame)
                if isinstance(msg, AlertBatch):
                    self.conflated += msg.conflated
                    # the estimator's offset is relay clock minus ours
                    received = t4 + self.clock.offset_ns
                    for i, alert in enumerate(msg.alerts):
                        # an alert id means something only with its relay's epoch: the two
                        # change together
                        self.last_alert_id = alert.alert_id
                        self.epoch = (self.welcome.relay_epoch if self.welcome else "") or None
                        yield ReceivedAlert(
                            alert, msg.relay_sent_ns, received, msg.conflated if i == 0 else 0
                        )
                elif isinstance(msg, TimeReply):
                    t1 = pending.pop(msg.id, None)
                    if t1 == msg.t1_ns:
                        self.clock.add_exchange(t1, msg.t2_ns, msg.t3_ns, t4)
                elif isinstance(msg, Welcome):
                    self.welcome = msg
                elif isinstance(msg, ErrorMessage):
                    raise SubscriptionError(f"{msg.code.value}: {msg.message}")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


# --------------------------------------------------------------------------- printing


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%H:%M:%S.%f")[:-3]


def format_alert(item: ReceivedAlert) -> str:
    """One line for people: time, ids, kind, nations, summary, end-to-end latency."""
    a = item.alert
    lat = item.latencies_ns().get("end_to_end")
    lat_text = f"{lat / 1e6:8.1f} ms" if lat is not None else "       ?"
    nations = ",".join(n.value for n in a.nations)
    return f"{_utc(item.received_ns)} #{a.alert_id:<6d} E{a.event_id:<3d} {a.kind.value:<17s} [{nations:<11s}] e2e {lat_text}  {a.text}"


def alert_json(item: ReceivedAlert) -> str:
    """One JSON object a line for machines: the alert plus the receive stamp and latencies."""
    doc = item.alert.model_dump(mode="json")
    doc["relay_sent_ns"] = item.relay_sent_ns
    doc["subscriber_received_ns"] = item.received_ns
    doc["latency_ms"] = {k: v / 1e6 for k, v in item.latencies_ns().items()}
    return json.dumps(doc, separators=(",", ":"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url",
        nargs="?",
        default=env_str("RELAY", "ws://127.0.0.1:8000"),
        help="relay URL, e.g. ws://127.0.0.1:8000 (WARNSHARE_RELAY)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object a line")
    parser.add_argument(
        "--since", type=int, default=None, help="replay every alert after this alert id first"
    )
    parser.add_argument("--count", type=int, default=None, help="exit after this many alerts")
    parser.add_argument(
        "--no-updates", action="store_true", help="hide TRACK_UPDATE and TRACK_COAST alerts"
    )
    parser.add_argument("--timeout", type=float, default=None, help="exit after this many seconds")
    parser.add_argument(
        "--token", default=env_str("TOKEN", ""), help="subscriber token (WARNSHARE_TOKEN)"
    )
    parser.add_argument(
        "--token-file",
        default=env_str("TOKEN_FILE", ""),
        help="read the token from this file (WARNSHARE_TOKEN_FILE)",
    )
    parser.add_argument(
        "--ca",
        default=env_str("CA", ""),
        help="CA certificate (PEM) to trust for wss:// (WARNSHARE_CA)",
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_main(args))
    except SubscriptionError as exc:
        print(f"warnshare subscribe: relay refused: {exc}", file=sys.stderr)
        return 2
    except (OSError, InvalidHandshake) as exc:
        print(f"warnshare subscribe: cannot connect to {args.url}: {exc}", file=sys.stderr)
        return 2


async def _main(args: argparse.Namespace) -> int:
    token = args.token
    if args.token_file:
        try:
            token = open(args.token_file).read().strip()
        except OSError as exc:
            raise SystemExit(f"warnshare subscribe: cannot read the token file: {exc}") from None
    ctx = ssl.create_default_context(cafile=args.ca) if args.ca else None
    sub = AlertSubscriber(args.url, since=args.since, token=token or None, ssl_context=ctx)
    n = 0

    async def consume() -> None:
        nonlocal n
        async for item in sub.alerts():
            if args.no_updates and item.alert.kind in PICTURE_KINDS:
                continue
            print(alert_json(item) if args.json else format_alert(item), flush=True)
            n += 1
            if args.count is not None and n >= args.count:
                return

    try:
        await asyncio.wait_for(consume(), args.timeout)
    except TimeoutError:
        pass
    return 0
