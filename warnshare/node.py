"""A national node: plays its nation's share of a scenario and publishes tracks to the relay.

``NodePublisher`` owns the link: hello, answering the relay's clock requests, batches of reports
with contiguous sequence numbers, acks, reconnection with backoff and re-sending whatever was not
acknowledged. ``play_scenario`` turns the simulator's national tracks into reports at the pace
of simulated time (``speed`` times faster) and applies the scenario's faults for this nation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import ssl
import sys
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import websockets
from pydantic import ValidationError
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from warnshare.auth import NodeKey, batch_message, hello_message
from warnshare.envdefaults import env_float, env_str
from warnshare.plausibility import report_problem
from warnshare.protocol import (
    INGEST_PATH,
    MAX_REPORTS_PER_BATCH,
    NATIONS,
    PROTOCOL_VERSION,
    Ack,
    Auth,
    DataMode,
    ErrorCode,
    ErrorMessage,
    FlightPhase,
    GroundEstimate,
    Hello,
    Nation,
    ProtocolError,
    ReportBatch,
    SignedBatch,
    TimeReply,
    TimeRequest,
    TrackReport,
    Welcome,
    covariance_to_upper,
    decode_relay_to_node,
    encode,
)

log = logging.getLogger("warnshare.node")

#: Errors after which reconnecting cannot help: the node is misconfigured.
FATAL_CODES = frozenset(
    {
        ErrorCode.AUTH_FAILED,
        ErrorCode.NATION_MISMATCH,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.SCHEMA_INVALID,
    }
)


class NodeRejected(Exception):
    """The relay refused this node for a reason that reconnecting does not fix."""


def ingest_url(relay: str) -> str:
    """ws://host:port (any path) -> ws://host:port/v1/ingest."""
    base = relay.rstrip("/")
    return base if base.endswith(INGEST_PATH) else base + INGEST_PATH


def nodes_url(ingest: str) -> str:
    """ws(s)://host:port/v1/ingest -> http(s)://host:port/v1/nodes."""
    scheme, rest = ingest.split("://", 1)
    base = rest[: -len(INGEST_PATH)] if rest.endswith(INGEST_PATH) else rest.rstrip("/")
    return f"{'https' if scheme == 'wss' else 'http'}://{base}/v1/nodes"


@dataclass
class NodeClock:
    """The node's wall clock: the host clock plus a deliberate skew (fault injection)."""

    skew_ns: int = 0

    def __call__(self) -> int:
        return time.time_ns() + self.skew_ns


@dataclass
class PublisherStats:
    batches_sent: int = 0
    reports_sent: int = 0
    reports_acked: int = 0
    reconnects: int = 0
    #: Reports renumbered to follow what the relay already held (numbering="continue").
    reports_renumbered: int = 0
    #: Reports never sent that the relay already held, so not sent (numbering="replay").
    reports_already_held: int = 0
    errors: list[str] = field(default_factory=list)


#: What a publisher does with reports it has never sent whose seq the relay already holds.
NUMBERING_MODES = ("continue", "replay")


class NodePublisher:
    """Reliable, ordered publication of reports to one relay.

    ``numbering`` says what the reports' seqs mean when the relay's ``welcome`` says it already
    holds a seq this publisher has not yet sent (a node restarted while its relay kept its
    state):

    - ``"continue"`` (the default): the reports are new data that happen to start at seq 1.
      Every report not yet sent is renumbered to follow the relay's ``last_acked_seq``, and
      ``next_seq`` goes on from there; nothing is lost. Number reports with ``next_seq``.
    - ``"replay"``: the reports are the same ones, re-played (a node's own log re-submitted
      after a restart, or a deterministic scenario replay): those the relay holds are not sent
      again.

    Either way the publisher logs it and counts it (``stats.reports_renumbered``,
    ``stats.reports_already_held``).
    """

    def __init__(
        self,
        relay_url: str,
        nation: Nation,
        node_id: str,
        *,
        clock: Callable[[], int] = time.time_ns,
        max_batch: int = MAX_REPORTS_PER_BATCH,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 5.0,
        key: NodeKey | None = None,
        ssl_context: ssl.SSLContext | None = None,
        numbering: str = "continue",
    ) -> None:
        if numbering not in NUMBERING_MODES:
            raise ValueError(
                f"numbering must be one of {', '.join(NUMBERING_MODES)}, not {numbering!r}"
            )
        if key is not None and key.nation != nation:
            raise ValueError(
                f"the key is {key.nation.value}'s, this node speaks for {nation.value}"
            )
        self.url = ingest_url(relay_url)
        self.key = key
        self.ssl_context = ssl_context
        self.numbering = numbering
        self.nation = nation
        self.node_id = node_id
        self.clock = clock
        self.max_batch = max_batch
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.outbox: deque[TrackReport] = deque()  # unacknowledged, in seq order
        self.acked_seq = 0
        self._next_seq = 1
        self._last_queued = 0  # seq of the last report submitted (0: none yet)
        self._last_sent = 0  # highest seq this publisher has put on a connection (0: none)
        self._relay_held = 0  # the highest last_acked_seq a welcome has given
        self._unsent = 0  # index into outbox of the first report not sent on this connection
        self._new = asyncio.Event()
        self._all_acked = asyncio.Event()
        self._all_acked.set()
        self.connected = asyncio.Event()
        self.paused = False  # a partition or outage: stay disconnected
        self._resume = asyncio.Event()
        self._resume.set()
        self._ws = None
        self.stats = PublisherStats()

    def next_seq(self) -> int:
        """The seq of the next report (after a renumbering: following what the relay held)."""
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def submit(self, reports: Iterable[TrackReport]) -> None:
        """Queue reports for publication, numbered on from the last one queued (from next_seq,
        or a node's own log of reports numbered before a restart: next_seq then continues after
        them).

        Raises ValueError, and queues none of them, when one could only be refused by the
        relay: a report of another nation or one no missile's tracker could make (the relay
        would close the link for good), or a seq that does not follow the one before (the relay
        would refuse it as a gap on every reconnection, and nothing after it would ever go)."""
        batch = list(reports)
        expected = self._last_queued + 1 if self._last_queued else None
        for r in batch:
            if not isinstance(r, TrackReport):
                raise TypeError(f"submit takes TrackReports, not {type(r).__name__}")
            if r.nation != self.nation:
                raise ValueError(
                    f"report seq {r.seq} is {r.nation.value}'s; this node speaks for "
                    f"{self.nation.value}"
                )
            if expected is not None and r.seq != expected:
                raise ValueError(
                    f"report seq {r.seq} does not follow seq {expected - 1}: each report must "
                    "be numbered one after the report before it"
                )
            problem = report_problem(r)
            if problem is not None:
                raise ValueError(f"report seq {r.seq}: {problem}")
            expected = r.seq + 1
        if not batch:
            return
        # (a seq at or below one already sent was refused above as not following it)
        held = batch[0].seq <= self._relay_held
        if held and self.numbering == "continue":
            raise ValueError(
                f"report seq {batch[0].seq}: the relay already holds seq 1-"
                f"{self._relay_held} of node id {self.node_id!r}, so it would drop it as a "
                "duplicate; number new reports with next_seq(), or re-play old ones with "
                "numbering='replay'"
            )
        self.outbox.extend(batch)
        self._last_queued = batch[-1].seq
        self._next_seq = max(self._next_seq, self._last_queued + 1)
        self._all_acked.clear()
        self._new.set()
        if held:  # re-played: the relay holds them, and none of them is sent
            self._count_already_held(batch[0].seq, min(batch[-1].seq, self._relay_held))
            self._on_acked(self._relay_held)

    async def wait_acked(self, timeout_s: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._all_acked.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    def pause(self) -> None:
        """Drop the link and stay away until resume() (a partition or outage)."""
        self.paused = True
        self._resume.clear()
        if self._ws is not None:
            asyncio.ensure_future(self._ws.close())

    def resume(self) -> None:
        self.paused = False
        self._resume.set()

    async def run(self) -> None:
        """Connect, publish, reconnect; returns only when cancelled, raises NodeRejected."""
        backoff = self.backoff_initial_s
        first = True
        while True:
            await self._resume.wait()
            if not first:
                self.stats.reconnects += 1
            first = False
            try:
                async with websockets.connect(
                    self.url,
                    compression=None,
                    max_size=1 << 20,
                    open_timeout=5,
                    close_timeout=2,
                    ssl=self.ssl_context if self.url.startswith("wss:") else None,
                ) as ws:
                    self._ws = ws
                    await self._session(ws)
                    backoff = self.backoff_initial_s
            except NodeRejected:
                raise
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
                log.info("%s: link down (%s); retrying in %.1f s", self.node_id, exc, backoff)
            except InvalidURI as exc:
                raise NodeRejected(f"bad relay URL {self.url!r}: {exc}") from None
            finally:
                self._ws = None
                self.connected.clear()
            await asyncio.sleep(backoff * (0.75 + 0.5 * random.random()))
            backoff = min(self.backoff_max_s, backoff * 2)

    async def _session(self, ws) -> None:
        await ws.send(encode(self._hello()))
        welcome = decode_relay_to_node(await ws.recv())
        if isinstance(welcome, ErrorMessage):
            self._handle_error(welcome)
            return
        if not isinstance(welcome, Welcome):
            raise ConnectionClosed(None, None)
        self._on_welcome(welcome.last_acked_seq)
        self._on_acked(welcome.last_acked_seq)
        self._unsent = 0
        self.connected.set()
        synced = asyncio.Event()
        sender = asyncio.create_task(self._sender(ws, synced))
        try:
            async for frame in ws:
                received = self.clock()
                msg = decode_relay_to_node(frame)
                if isinstance(msg, Ack):
                    self._on_acked(msg.acked_seq)
                elif isinstance(msg, TimeRequest):
                    await ws.send(
                        encode(
                            TimeReply(
                                id=msg.id, t1_ns=msg.t1_ns, t2_ns=received, t3_ns=self.clock()
                            )
                        )
                    )
                    synced.set()
                elif isinstance(msg, ErrorMessage):
                    self._handle_error(msg)
        finally:
            sender.cancel()
            # gather, not suppress(CancelledError): a cancellation of this task that arrives
            # here must go on propagating, not be swallowed with the sender's
            await asyncio.gather(sender, return_exceptions=True)

    async def _sender(self, ws, synced: asyncio.Event) -> None:
        # Let the relay measure this link's clock offset before the first report crosses it.
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
        # arrives as the event is set, and the sender then outlives its session forever
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await synced.wait()
        while True:
            if self._unsent >= len(self.outbox):
                self._new.clear()
                await self._new.wait()
                continue
            stop = min(len(self.outbox), self._unsent + self.max_batch)
            reports = [self.outbox[i] for i in range(self._unsent, stop)]
            self._unsent = stop
            # counted as sent before the send: a frame that may have left is never renumbered
            self._last_sent = max(self._last_sent, reports[-1].seq)
            await ws.send(self._batch_frame(ReportBatch(sent_ns=self.clock(), reports=reports)))
            self.stats.batches_sent += 1
            self.stats.reports_sent += len(reports)

    def _hello(self) -> Hello:
        sent = self.clock()
        auth = Auth()
        if self.key is not None:
            nonce = os.urandom(16)
            signature = self.key.sign(hello_message(self.nation.value, self.node_id, sent, nonce))
            auth = Auth(scheme="ed25519", key_id=self.key.key_id, nonce=nonce, signature=signature)
        return Hello(
            protocol_version=PROTOCOL_VERSION,
            nation=self.nation,
            node_id=self.node_id,
            sent_ns=sent,
            auth=auth,
        )

    def _batch_frame(self, batch: ReportBatch) -> bytes:
        payload = encode(batch)
        if self.key is None:
            return payload
        signature = self.key.sign(batch_message(self.node_id, payload))
        return encode(SignedBatch(key_id=self.key.key_id, payload=payload, signature=signature))

    def _on_welcome(self, held_seq: int) -> None:
        """The relay holds this node id's reports up to ``held_seq``: numbering that this
        publisher has not yet sent and that the relay already holds is moved past it
        ("continue") or counted as re-played ("replay")."""
        self._relay_held = max(self._relay_held, held_seq)
        unsent = [i for i, r in enumerate(self.outbox) if r.seq > self._last_sent]
        if self.numbering == "replay":
            held = [i for i in unsent if self.outbox[i].seq <= held_seq]
            if held:
                self._count_already_held(self.outbox[held[0]].seq, self.outbox[held[-1]].seq)
            return
        # the unsent reports are the outbox's tail, in seq order, numbered on to next_seq
        start = self.outbox[unsent[0]].seq if unsent else self._next_seq
        shift = held_seq + 1 - start
        if shift <= 0:
            return
        for i in unsent:
            r = self.outbox[i]
            self.outbox[i] = r.model_copy(update={"seq": r.seq + shift})
        self.stats.reports_renumbered += len(unsent)
        self._next_seq += shift
        if self._last_queued:
            self._last_queued = self._next_seq - 1
        log.warning(
            "%s: the relay already holds seq 1-%d of this node id (from before this node "
            "started); numbering goes on from seq %d (%d reports not yet sent renumbered)",
            self.node_id, held_seq, held_seq + 1, len(unsent),
        )

    def _count_already_held(self, first: int, last: int) -> None:
        self.stats.reports_already_held += last - first + 1
        log.warning(
            "%s: the relay already holds seq %d-%d, which this node had not sent: taken to be "
            "the same reports, re-played (numbering='replay'), so not sent again",
            self.node_id, first, last,
        )

    def _on_acked(self, acked_seq: int) -> None:
        while self.outbox and self.outbox[0].seq <= acked_seq:
            self.outbox.popleft()
            self._unsent = max(0, self._unsent - 1)
            self.stats.reports_acked += 1
        self.acked_seq = max(self.acked_seq, acked_seq)
        if not self.outbox:
            self._all_acked.set()

    def _handle_error(self, err: ErrorMessage) -> None:
        text = f"{err.code.value}: {err.message}"
        self.stats.errors.append(text)
        log.warning("%s: relay error %s", self.node_id, text)
        if err.code in FATAL_CODES:
            raise NodeRejected(text)


# --------------------------------------------------------------------- scenario playback


def report_from_update(
    u, seq: int, measured_ns: int, skew_ns: int, data_mode: DataMode
) -> TrackReport:
    """A wire report from one simulator track update (skew: the node clock's error)."""

    def ground(est: dict | None) -> GroundEstimate | None:
        if not est:
            return None
        return GroundEstimate(**{**est, "time_ns": int(est["time_ns"]) + skew_ns})

    return TrackReport(
        seq=seq,
        nation=Nation(u.nation),
        track_number=int(u.track_number),
        time_of_validity_ns=int(u.time_of_validity_ns) + skew_ns,
        measured_ns=measured_ns,
        position_ecef_m=[float(v) for v in u.position_ecef_m],
        velocity_ecef_mps=[float(v) for v in u.velocity_ecef_mps],
        covariance=covariance_to_upper(u.covariance),
        track_quality=int(u.track_quality),
        boosting=bool(u.boosting),
        lost=bool(u.lost),
        flight_phase=FlightPhase(u.flight_phase),
        launch_estimate=ground(u.launch_estimate),
        impact_estimate=ground(u.impact_estimate),
        data_mode=data_mode,
        releasable_to=list(NATIONS),
        sensor_ids=list(u.sensor_ids),
    )


@dataclass
class PlaybackResult:
    published: int
    dropped_in_outage: int
    acked: bool
    #: Tracker updates not sent because no missile's track could be what they said.
    unsendable: int = 0


async def play_scenario(
    publisher: NodePublisher,
    updates: list,
    *,
    scenario_start_ns: int,
    start_wall_ns: int,
    speed: float,
    faults: list = (),
    clock: NodeClock | None = None,
    data_mode: DataMode = DataMode.SIMULATED,
    ack_timeout_s: float = 30.0,
    on_progress: Callable[[int, int], None] | None = None,
) -> PlaybackResult:
    """Publish ``updates`` (sorted by available_ns) at wall instants
    ``start_wall_ns + (t - scenario_start_ns) / speed`` and wait for the last ack."""
    clock = clock or NodeClock()
    base_skew = clock.skew_ns

    def wall(sim_ns: int) -> int:
        return start_wall_ns + int((sim_ns - scenario_start_ns) / speed)

    def active(kind: str, sim_ns: int) -> list:
        t_s = (sim_ns - scenario_start_ns) / 1e9
        return [f for f in faults if f.kind == kind and f.start_s <= t_s < f.end_s]

    # The schedule is in wall-clock instants (nodes share --start-at), but it is kept on the
    # monotonic clock, read against the wall clock once: a step of the host's wall clock (an
    # NTP step back) would otherwise hold the replay for as long as the step
    wall_minus_monotonic = time.time_ns() - time.monotonic_ns()
    published = dropped = unsendable = 0
    i = 0
    n = len(updates)
    while i < n:
        due = wall(updates[i].available_ns)
        delay = (due - wall_minus_monotonic - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        # everything due by now goes out together
        now = time.monotonic_ns() + wall_minus_monotonic
        group = []
        while i < n and wall(updates[i].available_ns) <= now + 1_000_000:
            group.append(updates[i])
            i += 1
        sim_now = group[-1].available_ns
        skews = active("clock_skew", sim_now)
        clock.skew_ns = base_skew + int(sum(f.params.get("skew_s", 0.0) for f in skews) * 1e9)
        if active("node_outage", sim_now):
            dropped += len(group)
            if not publisher.paused:
                log.warning("%s: outage begins (simulated)", publisher.node_id)
                publisher.pause()
            continue
        if active("link_partition", sim_now):
            if not publisher.paused:
                log.warning("%s: link partitioned (simulated); queueing", publisher.node_id)
                publisher.pause()
        elif publisher.paused:
            log.warning("%s: link restored", publisher.node_id)
            publisher.resume()
        for f in active("link_delay", sim_now):
            await asyncio.sleep(f.params.get("delay_ms", 0.0) / 1e3)
        reports = []
        for u in group:
            r = _checked_report(u, wall(u.time_of_validity_ns) + clock.skew_ns, clock.skew_ns, data_mode)
            if r is None:
                unsendable += 1
                continue
            reports.append(r.model_copy(update={"seq": publisher.next_seq()}))
        publisher.submit(reports)
        published += len(reports)
        if on_progress:
            on_progress(i, n)
    if publisher.paused:
        publisher.resume()
    acked = await publisher.wait_acked(ack_timeout_s)
    return PlaybackResult(published, dropped, acked, unsendable)


def _checked_report(u, measured_ns: int, skew_ns: int, data_mode: DataMode) -> TrackReport | None:
    """The wire report of a tracker update, or None (logged) when the tracker got it wrong: a
    report the schema or the plausibility rules refuse (``warnshare.plausibility``). The relay
    would refuse its whole batch with SCHEMA_INVALID, after which a node cannot go on, so one
    glitch would cost the nation's feed; unsent, it costs that report. Numbered afterwards, so
    that the seqs sent have no gap."""
    try:
        r = report_from_update(u, 1, measured_ns, skew_ns, data_mode)
    except (ValidationError, ValueError) as exc:
        problem = str(exc).splitlines()[0]
    else:
        problem = report_problem(r)
        if problem is None:
            return r
    log.error("%s track %s: update not sent, the tracker's state is wrong: %s",
              getattr(u, "nation", "?"), getattr(u, "track_number", "?"), problem)
    return None


# ---------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nation",
        default=env_str("NATION", ""),
        choices=[n.value for n in NATIONS],
        help="WARNSHARE_NATION",
    )
    parser.add_argument(
        "--relay",
        default=env_str("RELAY", "ws://127.0.0.1:8000"),
        help="relay URL (WARNSHARE_RELAY)",
    )
    parser.add_argument(
        "--scenario",
        default=env_str("SCENARIO", "hwasong17-2022-11-18"),
        help="scenario name or .toml path (WARNSHARE_SCENARIO)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=env_float("SPEED", 1.0),
        help="simulated seconds per wall second (WARNSHARE_SPEED)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--node-id", default=None, help="default: <nation>-node")
    parser.add_argument(
        "--start-at",
        default=env_str("START_AT", "") or None,
        help="UNIX time (s) at which scenario t=0 plays (WARNSHARE_START_AT); default: now + 1 s. "
        "'auto': once a node of every nation is connected to the relay, 2 s after the last "
        "of them connected (each node reads the same times from the relay's /v1/nodes, so "
        "they start together). '-': once simulated and connected, print READY on stdout and "
        "read the time from stdin (to start several nodes together)",
    )
    parser.add_argument(
        "--clock-skew-s",
        type=float,
        default=env_float("CLOCK_SKEW_S", 0.0),
        help="make this node's clock wrong by this much (fault injection)",
    )
    parser.add_argument(
        "--keys-dir",
        default=env_str("KEYS_DIR", ""),
        help="sign with <dir>/<nation>.key from `warnshare keys init` (WARNSHARE_KEYS_DIR)",
    )
    parser.add_argument(
        "--key", default=env_str("KEY", ""), help="sign with this key file (WARNSHARE_KEY)"
    )
    parser.add_argument(
        "--ca",
        default=env_str("CA", ""),
        help="CA certificate (PEM) to trust for wss:// (WARNSHARE_CA)",
    )
    parser.add_argument(
        "--numbering",
        default=env_str("NUMBERING", "") or None,
        choices=NUMBERING_MODES,
        help="when the relay already holds this node id's first seqs (it kept its journal "
        "while this node restarted): 'continue' renumbers this run's reports to follow them, "
        "'replay' takes them to be this run's own reports and does not send them again "
        "(WARNSHARE_NUMBERING; default: replay when a fixed --start-at has already passed, "
        "which is a restart of a run under way, else continue)",
    )
    parser.add_argument("--data-mode", default="SIMULATED", choices=[m.value for m in DataMode])
    parser.add_argument("--loop", action="store_true", help="play the scenario again and again")
    parser.add_argument("--log-level", default=env_str("LOG_LEVEL", "info"))


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.nation:
        raise SystemExit(
            "warnshare node: --nation (or WARNSHARE_NATION) is required: USA, JPN or KOR"
        )
    if args.speed <= 0:
        raise SystemExit("warnshare node: --speed must be > 0")
    try:
        return asyncio.run(_main(args))
    except NodeRejected as exc:
        log.error("relay refused this node: %s", exc)
        return 3


def cli_numbering(args: argparse.Namespace, now_s: float | None = None) -> str:
    """--numbering, or its default: a node started with a fixed --start-at that has already
    passed is a restart of a run under way, which re-plays the very reports it sent before
    ("replay"); any other start makes new reports ("continue")."""
    if args.numbering:
        return args.numbering
    try:
        start_s = float(args.start_at)
    except (TypeError, ValueError):
        return "continue"  # now + 1 s, or '-' (a time handed over once connected)
    return "replay" if start_s <= (time.time() if now_s is None else now_s) else "continue"


def load_node_key(args: argparse.Namespace, nation: Nation) -> NodeKey | None:
    path = args.key or (
        os.path.join(args.keys_dir, f"{nation.value.lower()}.key") if args.keys_dir else ""
    )
    if not path:
        return None
    try:
        key = NodeKey.load(path)
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"warnshare node: cannot load the signing key {path}: {exc}") from None
    if key.nation != nation:
        raise SystemExit(
            f"warnshare node: {path} is {key.nation.value}'s key, not {nation.value}'s"
        )
    return key


#: ``--start-at auto``: scenario t=0 this long after the last nation's node connected.
AUTO_START_MARGIN_S = 2.0
#: ... waiting at most this long for every nation's node; then the nations present.
AUTO_START_WAIT_S = 120.0


async def auto_start_ns(
    publisher: NodePublisher,
    nations: Iterable[Nation] = NATIONS,
    margin_s: float = AUTO_START_MARGIN_S,
    wait_s: float = AUTO_START_WAIT_S,
    poll_s: float = 0.2,
) -> int:
    """Scenario t=0 for nodes started without a shared time (``--start-at auto``):
    ``margin_s`` after the latest connection among one node of each of ``nations``, as the
    relay lists them (``GET /v1/nodes``, ``connected_ns``). Every node reads the same connection
    times, so all pick the same instant, however far apart they became ready (a node connects
    once it has simulated its sensors). After ``wait_s`` without every nation: the latest of
    those present (logged)."""
    wanted = {n.value for n in nations}
    url = nodes_url(publisher.url)
    deadline = time.monotonic() + wait_s
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(publisher.connected.wait(), wait_s)

    def fetch() -> list:
        with urllib.request.urlopen(url, timeout=5, context=publisher.ssl_context) as r:
            return json.load(r)

    latest: dict[str, int] = {}
    while True:
        try:
            links = await asyncio.to_thread(fetch)
        except (OSError, ValueError) as exc:
            log.info("%s: cannot read %s yet (%s)", publisher.node_id, url, exc)
        else:
            latest = {}
            for link in links if isinstance(links, list) else ():
                if not isinstance(link, dict):
                    continue
                t = int(link.get("connected_ns") or 0)
                if link.get("connected") and t and link.get("nation") in wanted:
                    latest[link["nation"]] = max(latest.get(link["nation"], 0), t)
            if set(latest) == wanted:
                break
        if time.monotonic() >= deadline:
            log.warning("%s: only %s connected after %.0f s; starting without the others",
                        publisher.node_id, ", ".join(sorted(latest)) or "no nation", wait_s)
            break
        await asyncio.sleep(poll_s)
    return max(latest.values(), default=time.time_ns()) + int(margin_s * 1e9)


async def _start_time(start_at: str | None, publisher: NodePublisher) -> int:
    """Wall-clock ns of scenario t=0: given, now + 1 s, agreed through the relay ('auto'), or
    handed over on stdin once ready ('-')."""
    if start_at is None:
        return time.time_ns() + 1_000_000_000
    if start_at == "auto":
        t = await auto_start_ns(publisher)
        log.info("%s: every nation's node is connected; scenario t=0 plays at %.3f",
                 publisher.node_id, t / 1e9)
        return t
    if start_at != "-":
        try:
            return int(float(start_at) * 1e9)
        except ValueError:
            raise SystemExit(
                f"warnshare node: --start-at {start_at!r} is not a UNIX time"
            ) from None
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(publisher.connected.wait(), 30)
    print("READY", flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)
    try:
        return int(float(line) * 1e9)
    except ValueError:
        raise SystemExit(f"warnshare node: expected a UNIX time on stdin, got {line!r}") from None


async def _main(args: argparse.Namespace) -> int:
    from sims import load_scenario, simulate

    nation = Nation(args.nation)
    node_id = args.node_id or f"{nation.value.lower()}-node"
    try:
        scenario = load_scenario(args.scenario)
    except (KeyError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"warnshare node: {exc}") from None
    t0 = time.monotonic()
    result = simulate(scenario, seed=args.seed, nations=[nation.value])
    updates = result.national_tracks.get(nation.value, [])
    log.info(
        "%s: scenario %s simulated in %.1f s: %d track updates",
        node_id,
        scenario.name,
        time.monotonic() - t0,
        len(updates),
    )
    clock = NodeClock(int(args.clock_skew_s * 1e9))
    key = load_node_key(args, nation)
    ctx = ssl.create_default_context(cafile=args.ca) if args.ca else None
    publisher = NodePublisher(
        args.relay, nation, node_id, clock=clock, key=key, ssl_context=ctx,
        numbering=cli_numbering(args),
    )
    link = asyncio.create_task(publisher.run())
    faults = [f for f in scenario.faults if f.nation == nation.value]
    start_wall = await _start_time(args.start_at, publisher)
    try:
        while True:
            play = asyncio.create_task(
                play_scenario(
                    publisher,
                    updates,
                    scenario_start_ns=scenario.start_ns,
                    start_wall_ns=start_wall,
                    speed=args.speed,
                    faults=faults,
                    clock=clock,
                    data_mode=DataMode(args.data_mode),
                )
            )
            done, _ = await asyncio.wait({play, link}, return_when=asyncio.FIRST_COMPLETED)
            if link in done:
                play.cancel()
                link.result()  # raises NodeRejected
            res = play.result()
            log.info(
                "%s: published %d reports (%d dropped in outages, %d not sent as impossible, "
                "%d renumbered after the relay's seq, %d already held by the relay), "
                "all acked: %s",
                node_id,
                res.published,
                res.dropped_in_outage,
                res.unsendable,
                publisher.stats.reports_renumbered,
                publisher.stats.reports_already_held,
                res.acked,
            )
            if not args.loop:
                return 0 if res.acked else 1
            start_wall = time.time_ns() + 2_000_000_000
    finally:
        link.cancel()
        await asyncio.gather(link, return_exceptions=True)


__all__ = [
    "NodePublisher",
    "NodeRejected",
    "NodeClock",
    "play_scenario",
    "report_from_update",
    "ProtocolError",
]
