"""Property-based fuzzing of the decoder and of every relay endpoint, on a real relay.

Each input gets the answer docs/PROTOCOL.md promises for it, computed by an oracle from the
sans-I/O rules (the codec and ``accept_batch``): the same error code in an ``error`` frame and
the close code that goes with it, or the normal answer (welcome, ack, time_reply). The relay
runs in a thread with low limits (connections, frame rates) so floods reach them; after the
onslaught it must still serve /healthz, fuse a clean missile from three nodes completely, and
its counters must agree with what the clients saw. Inputs tried per endpoint are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import threading
import time
from collections import Counter
from urllib.parse import urlencode

import httpx
import msgpack
import pytest
import websockets
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from tests.conftest import RunningRelay, start_relay
from tests.synth import T0_NS, ballistic_arc, national_reports
from warnshare.node import NodePublisher
from warnshare.protocol import (
    CLOSE_CODES,
    MAX_NODE_FRAME_BYTES,
    MAX_SUBSCRIBER_FRAME_BYTES,
    NATIONS,
    AlertBatch,
    AlertKind,
    CloseCode,
    ErrorCode,
    Hello,
    Nation,
    ProtocolError,
    ReportBatch,
    SignedBatch,
    TimeReply,
    TimeRequest,
    decode_node_message,
    decode_relay_to_subscriber,
    decode_subscriber_message,
)
from warnshare.relay.app import RelayConfig
from warnshare.relay.ingest import NodeLink, accept_batch

#: Low limits so that floods reach them quickly.
MAX_CONNECTIONS = 40
NODE_FRAMES_PER_S = 50.0
SUB_FRAMES_PER_S = 20.0

#: Inputs tried per endpoint in this run (printed at the end; RELIABILITY.md quotes a run).
TRIED: Counter[str] = Counter()
#: Error codes the clients received in error frames: the relay's counters must agree.
REFUSED: Counter[str] = Counter()
#: Reports the oracle says the relay accepted, per nation.
ACCEPTED: Counter[str] = Counter()

FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

REPORT = national_reports(ballistic_arc(39.0, 125.6, 95, 5000, 40, 3), Nation.JPN, track_number=5)[0]
REPORT_DICT = REPORT.model_dump(mode="python")
_node_ids = iter(range(1, 1 << 30))
_lock = threading.Lock()


def fresh_node_id() -> str:
    with _lock:
        return f"fz-{next(_node_ids)}"


@pytest.fixture(scope="module")
def relay() -> RunningRelay:
    running = start_relay(
        RelayConfig(
            max_connections=MAX_CONNECTIONS,
            node_frames_per_s=NODE_FRAMES_PER_S,
            node_frames_burst=NODE_FRAMES_PER_S,
            subscriber_frames_per_s=SUB_FRAMES_PER_S,
            subscriber_frames_burst=SUB_FRAMES_PER_S,
        )
    )
    yield running
    running.stop()
    print("\nfuzz inputs tried per endpoint:", dict(sorted(TRIED.items())), "total", sum(TRIED.values()))


# ------------------------------------------------------------------------- client plumbing


def _decode_raw(raw: bytes | str) -> dict:
    return json.loads(raw) if isinstance(raw, str) else msgpack.unpackb(raw, raw=False)


def talk(url: str, frames: list[bytes | str], until=None) -> tuple[list[dict], int | None]:
    """Send ``frames``, then read until the relay closes (its close code) or a message for which
    ``until(message)`` is true arrives (close code None). The relay's time requests are skipped."""
    got: list[dict] = []
    with connect(url, max_size=None, compression=None, open_timeout=10, close_timeout=2) as ws:
        for f in frames:
            try:
                ws.send(f)
            except websockets.ConnectionClosed:
                break
        for _ in range(1000):
            try:
                raw = ws.recv(timeout=10)
            except websockets.ConnectionClosed as exc:
                if any(m.get("type") == "error" for m in got):
                    REFUSED[next(m["code"] for m in got if m.get("type") == "error")] += 1
                return got, exc.rcvd.code if exc.rcvd else None
            msg = _decode_raw(raw)
            if msg.get("type") == "time_request":
                continue
            got.append(msg)
            if until is not None and until(msg):
                return got, None
    raise AssertionError(f"no end to the conversation: {got[-3:]}")


def assert_refused(got: list[dict], close: int | None, code: ErrorCode) -> None:
    errors = [m for m in got if m.get("type") == "error"]
    assert errors and errors[-1]["code"] == code.value, (code, got[-3:], close)
    assert close == int(CLOSE_CODES[code]), (code, close)


def hello_frame(node_id: str, nation: Nation = Nation.JPN, **changes) -> bytes:
    doc = {"type": "hello", "protocol_version": 1, "nation": nation.value, "node_id": node_id,
           "sent_ns": time.time_ns(), "auth": {"scheme": "none"}, **changes}
    return msgpack.packb(doc, use_bin_type=True)


def sentinel_hello() -> bytes:
    """A second hello: refused with BAD_REQUEST, which proves the frames before it were fine."""
    return hello_frame("sentinel")


def sentinel_time_request() -> bytes:
    return msgpack.packb({"type": "time_request", "id": 424242, "t1_ns": 1})


def healthy(relay: RunningRelay) -> None:
    assert relay.thread.is_alive()
    assert httpx.get(f"{relay.http_url}/healthz", timeout=10).json()["status"] == "ok"


# ----------------------------------------------------------------------------- strategies

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]),
    st.text(max_size=12),
    st.binary(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
types = st.sampled_from(["hello", "report_batch", "signed_batch", "time_request", "time_reply",
                         "welcome", "ack", "alert_batch", "error", "", "HELLO"])


def deep_msgpack(depth: int, inner: bytes = b"\x01") -> bytes:
    return b"\x91" * depth + inner


@st.composite
def mutated(draw, base: dict) -> dict:
    """``base`` with a field replaced by anything, removed, or an unknown field added."""
    doc = dict(base)
    key = draw(st.sampled_from(sorted(doc)))
    action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "huge"]))
    if action == "replace":
        doc[key] = draw(values)
    elif action == "delete":
        del doc[key]
    elif action == "add":
        doc[draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in base))] = draw(values)
    else:  # a huge array where a small one (or a scalar) belongs
        doc[key] = [1.5] * draw(st.sampled_from([4, 22, 1001, 50_000]))
    return doc


@st.composite
def node_frames_before_hello(draw) -> bytes | str:
    kind = draw(st.sampled_from(["bytes", "text", "values", "typed", "hello", "version", "deep", "array"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "text":
        return draw(st.text(max_size=100))
    if kind == "values":
        return msgpack.packb(draw(values), use_bin_type=True)
    if kind == "typed":
        doc = draw(st.dictionaries(st.text(max_size=8), values, max_size=5))
        doc["type"] = draw(types)
        return msgpack.packb(doc, use_bin_type=True)
    if kind == "hello":
        base = msgpack.unpackb(hello_frame(fresh_node_id(), draw(st.sampled_from(NATIONS))))
        return msgpack.packb(draw(mutated(base)), use_bin_type=True)
    if kind == "version":
        version = draw(st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1) | st.sampled_from([0, 2, 1.0, "1", True, None]))
        return hello_frame(fresh_node_id(), protocol_version=version)
    if kind == "deep":
        return deep_msgpack(draw(st.integers(min_value=1, max_value=200_000)))
    # an array header promising far more than the frame holds
    return b"\xdd" + draw(st.integers(min_value=0, max_value=(1 << 32) - 1)).to_bytes(4, "big") + draw(st.binary(max_size=20))


@st.composite
def node_frames_after_hello(draw) -> bytes:
    """Mostly near-valid report batches (one thing wrong), and other node messages."""
    kind = draw(st.sampled_from(["batch", "batch", "batch", "batch", "report", "nation", "gap", "order",
                                 "many", "signed", "time", "values", "deep"]))
    reports = [dict(REPORT_DICT, seq=i + 1) for i in range(draw(st.integers(1, 4)))]
    batch = {"type": "report_batch", "sent_ns": time.time_ns(), "reports": reports}
    if kind == "batch":
        batch = draw(mutated(batch))
    elif kind == "report":
        i = draw(st.integers(0, len(reports) - 1))
        reports[i] = draw(mutated(reports[i]))
    elif kind == "nation":
        reports[-1] = dict(reports[-1], nation=draw(st.sampled_from(["USA", "KOR", "XXX"])))
    elif kind == "gap":
        for r in reports:
            r["seq"] += draw(st.integers(1, 1 << 40))
    elif kind == "order":
        reports.reverse()
        assume(len(reports) > 1)
    elif kind == "many":
        n = draw(st.sampled_from([999, 1000, 1001, 3000]))
        batch["reports"] = [dict(REPORT_DICT, seq=i + 1) for i in range(n)]
    elif kind == "signed":  # this relay has no trust store
        batch = {"type": "signed_batch", "key_id": "k", "payload": msgpack.packb(batch), "signature": b"s" * 64}
    elif kind == "time":
        batch = draw(mutated({"type": draw(st.sampled_from(["time_request", "time_reply"])),
                              "id": 1, "t1_ns": 1, "t2_ns": 2, "t3_ns": 3}))
    elif kind == "values":
        return msgpack.packb(draw(values), use_bin_type=True)
    else:
        return b"\x81\xa4type" + deep_msgpack(draw(st.integers(1, 100_000)))
    return msgpack.packb(batch, use_bin_type=True)


# --------------------------------------------------------------------------------- oracles


def node_oracle(frame: bytes | str, *, after_hello: Nation | None, relay: RunningRelay):
    """What the relay must answer: ('error', code) or ('ok', expected message type, payload)."""
    if len(frame) > MAX_NODE_FRAME_BYTES:
        return ("too big",)
    if isinstance(frame, str):
        return ("error", ErrorCode.MALFORMED_FRAME)
    try:
        msg = decode_node_message(frame)
    except ProtocolError as exc:
        return ("error", exc.code)
    if after_hello is None:
        if not isinstance(msg, Hello):
            return ("error", ErrorCode.HELLO_REQUIRED)
        link = relay.relay.nodes.links.get(msg.node_id)
        if link is not None and link.nation != msg.nation:
            return ("error", ErrorCode.NATION_MISMATCH)
        return ("ok", "welcome", msg)
    if isinstance(msg, Hello):
        return ("error", ErrorCode.BAD_REQUEST)
    if isinstance(msg, SignedBatch):
        return ("error", ErrorCode.BAD_REQUEST)
    if isinstance(msg, TimeRequest):
        return ("ok", "time_reply", msg)
    if isinstance(msg, TimeReply):
        return ("ok", None, msg)
    assert isinstance(msg, ReportBatch)
    try:
        accepted = accept_batch(NodeLink("oracle", after_hello), msg, 0)
    except ProtocolError as exc:
        return ("error", exc.code)
    return ("ok", "ack", accepted)


# ------------------------------------------------------------------------ the decoder, pure


@settings(FUZZ, max_examples=400)
@given(frame=node_frames_before_hello() | node_frames_after_hello())
def test_decoder_raises_only_protocol_errors(frame) -> None:
    TRIED["decoder (node frames)"] += 1
    if isinstance(frame, str):
        frame = frame.encode()
    try:
        decode_node_message(frame)
    except ProtocolError as exc:
        assert exc.code in CLOSE_CODES


@settings(FUZZ, max_examples=300)
@given(text=st.one_of(
    st.text(max_size=200),
    st.integers(1, 30_000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 10_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.sampled_from(['{"type":"time_request","id":1,"t1_ns":NaN}', '{"type":"time_request","id":1,"t1_ns":Infinity}',
                     '{"type":"time_request","id":1e400,"t1_ns":1}', "[]", "null", '"x"']),
    st.builds(json.dumps, st.dictionaries(st.text(max_size=8), st.integers() | st.floats() | st.text(max_size=5), max_size=4)),
))
def test_subscriber_decoder_raises_only_protocol_errors(text: str) -> None:
    TRIED["decoder (subscriber frames)"] += 1
    try:
        decode_subscriber_message(text)
    except ProtocolError as exc:
        assert exc.code in (ErrorCode.MALFORMED_FRAME, ErrorCode.SCHEMA_INVALID)


def test_deeply_nested_json_is_malformed_not_a_crash() -> None:
    for n in (2_000, 30_000):
        with pytest.raises(ProtocolError) as info:
            decode_subscriber_message("[" * n + "]" * n)
        assert info.value.code == ErrorCode.MALFORMED_FRAME


# ----------------------------------------------------------------------- /v1/ingest, live


def check_node_exchange(relay: RunningRelay, frames: list[bytes | str], expected, nation: Nation | None) -> None:
    url = f"{relay.ws_url}/v1/ingest"
    if expected[0] == "too big":
        got, close = talk(url, frames)
        # 1009, or no close frame at all: the relay closes while the client is still sending the
        # oversized frame, and the reset of a socket closed with unread data can overtake the
        # close frame (documented in PROTOCOL.md). Never an error frame, never another code.
        assert close in (CloseCode.TOO_BIG, None) and "error" not in [m["type"] for m in got], (close, got)
        return
    if expected[0] == "error":
        got, close = talk(url, frames)
        assert_refused(got, close, expected[1])
        return
    got, close = talk(url, [*frames, sentinel_hello()])
    kinds = [m["type"] for m in got]
    assert close == CloseCode.BAD_REQUEST and got[-1]["code"] == "BAD_REQUEST", got[-3:]
    if expected[1] == "ack":
        acks = [m for m in got if m["type"] == "ack"]
        assert acks and acks[-1]["acked_seq"] == expected[2].acked_seq, got
        ACCEPTED[nation.value] += len(expected[2].reports)
    elif expected[1] is not None:
        assert expected[1] in kinds, (expected, kinds)
    assert "error" not in kinds[:-1], got


@settings(FUZZ, max_examples=250)
@given(frame=node_frames_before_hello())
def test_ingest_first_frame_gets_its_documented_answer(relay, frame) -> None:
    TRIED["/v1/ingest before hello"] += 1
    expected = node_oracle(frame, after_hello=None, relay=relay)
    check_node_exchange(relay, [frame], expected, None)


@settings(FUZZ, max_examples=250)
@given(frame=node_frames_after_hello(), nation=st.sampled_from(NATIONS))
def test_ingest_frame_after_hello_gets_its_documented_answer(relay, frame, nation) -> None:
    TRIED["/v1/ingest after hello"] += 1
    expected = node_oracle(frame, after_hello=nation, relay=relay)
    check_node_exchange(relay, [hello_frame(fresh_node_id(), nation), frame], expected, nation)


def test_oversized_node_frames_close_with_1009(relay) -> None:
    big = b"\x00" * (MAX_NODE_FRAME_BYTES + 1)
    for frames in ([big], [hello_frame(fresh_node_id()), big]):
        TRIED["/v1/ingest oversized"] += 1
        got, close = talk(f"{relay.ws_url}/v1/ingest", frames)
        # 1009, or a reset that overtook the close frame (see check_node_exchange): never an
        # error frame or another code
        assert close in (CloseCode.TOO_BIG, None) and "error" not in [m["type"] for m in got]
    # a batch of exactly 1 MiB is not refused for its size
    TRIED["/v1/ingest oversized"] += 1
    def padded(k: int) -> bytes:
        return msgpack.packb({"type": "time_reply", "id": 1, "t1_ns": 1, "t2_ns": 2, "t3_ns": 3, "x": b"\0" * k})

    exact = padded(MAX_NODE_FRAME_BYTES - (len(padded(70_000)) - 70_000))
    assert len(exact) == MAX_NODE_FRAME_BYTES
    got, close = talk(f"{relay.ws_url}/v1/ingest", [hello_frame(fresh_node_id()), exact])
    assert_refused(got, close, ErrorCode.SCHEMA_INVALID)  # the unknown key "x", not the size
    healthy(relay)


# ----------------------------------------------------------------------- /v1/alerts, live


def query_oracle(params: dict[str, str]) -> ErrorCode | None:
    fmt = params.get("format", "msgpack")
    if fmt not in ("msgpack", "json"):
        return ErrorCode.BAD_REQUEST
    since = params.get("since")
    if since is not None and not (re.fullmatch(r"[0-9]+", since) and len(since.lstrip("0")) < 20
                                  and int(since.lstrip("0") or "0") < 1 << 63):
        return ErrorCode.BAD_REQUEST
    return None


@settings(FUZZ, max_examples=150)
@given(params=st.fixed_dictionaries({}, optional={
    "format": st.sampled_from(["msgpack", "json", "xml", "", "JSON"]) | st.text(max_size=8),
    "since": st.integers(-5, 1 << 64).map(str) | st.sampled_from(["", "abc", "1.5", "1e3", "0x10", "+3", " 7", "٣", "9" * 5000]) | st.text(max_size=6),
    "token": st.text(max_size=20),
    "other": st.text(max_size=10),
}))
def test_alerts_query_parameters_get_their_documented_answer(relay, params) -> None:
    TRIED["/v1/alerts query"] += 1
    expected = query_oracle(params)
    got, close = talk(f"{relay.ws_url}/v1/alerts?{urlencode(params)}", [], until=lambda m: m["type"] == "welcome")
    if expected is None:
        assert close is None and got[0]["type"] == "welcome", got
    else:
        assert_refused(got, close, expected)


def subscriber_oracle(frame: bytes | str) -> tuple[str, object]:
    size = len(frame.encode() if isinstance(frame, str) else frame)
    if size > MAX_SUBSCRIBER_FRAME_BYTES:
        return ("error", ErrorCode.FRAME_TOO_LARGE)
    try:
        decode_subscriber_message(frame)
    except ProtocolError as exc:
        return ("error", exc.code)
    return ("ok", None)


@settings(FUZZ, max_examples=200)
@given(frame=st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    st.builds(lambda d: msgpack.packb(d, use_bin_type=True), st.dictionaries(st.sampled_from(["type", "id", "t1_ns", "x"]), values, max_size=4)),
    st.builds(json.dumps, st.fixed_dictionaries({"type": st.sampled_from(["time_request", "x"]), "id": st.integers(-3, 1 << 64) | st.floats(), "t1_ns": st.integers(-3, 1 << 64)})),
    st.integers(1, 30_000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 200_000).map(deep_msgpack),
    st.sampled_from([b"\x00" * (MAX_SUBSCRIBER_FRAME_BYTES + 1), "€" * 30_000, "x" * (MAX_SUBSCRIBER_FRAME_BYTES + 1)]),
), fmt=st.sampled_from(["msgpack", "json"]))
def test_alerts_frames_get_their_documented_answer(relay, frame, fmt) -> None:
    TRIED["/v1/alerts frames"] += 1
    expected = subscriber_oracle(frame)
    url = f"{relay.ws_url}/v1/alerts?format={fmt}"
    if expected[0] == "error":
        got, close = talk(url, [frame])
        assert_refused(got, close, expected[1])
    else:
        got, close = talk(url, [frame, sentinel_time_request()], until=lambda m: m.get("id") == 424242)
        assert close is None and "error" not in [m["type"] for m in got], got


# ------------------------------------------------------------------------- REST endpoints

@pytest.fixture(scope="module")
def http(relay) -> httpx.Client:
    with httpx.Client(base_url=relay.http_url, timeout=10) as client:
        yield client


REST = {"/healthz", "/v1/events", "/v1/nodes", "/metrics", "/openapi.json", "/docs"}


@settings(FUZZ, max_examples=200)
@given(
    path=st.sampled_from(sorted(REST)) | st.text(alphabet=st.characters(codec="ascii", exclude_characters="#?%"), max_size=20).map(lambda p: "/" + p),
    method=st.sampled_from(["GET", "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    query=st.dictionaries(st.text(max_size=6), st.text(max_size=12), max_size=3),
    body=st.binary(max_size=500),
)
def test_rest_endpoints_never_fail_and_answer_as_documented(relay, http, path, method, query, body) -> None:
    TRIED["REST"] += 1
    try:
        response = http.request(method, path, params=query, content=body)
    except httpx.InvalidURL:
        assume(False)
    assert response.status_code < 500, (method, path, response.status_code)
    if path in REST and method == "GET":
        assert response.status_code == 200
    elif path in REST and not (method == "HEAD" and path in ("/docs", "/openapi.json")):
        assert response.status_code == 405
    if path == "/v1/events" and method == "GET":
        assert isinstance(response.json(), list)


# ------------------------------------------------------------------------------- floods


def _wait_idle(relay: RunningRelay) -> None:
    deadline = time.monotonic() + 10
    while relay.relay.connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert relay.relay.connections == 0


async def _flood_connections(relay: RunningRelay, n: int) -> tuple[int, int, list]:
    opened = refused = 0
    holding: list = []
    other: list = []
    all_in = asyncio.Event()
    done = 0

    async def one(i: int) -> None:
        nonlocal opened, refused, done
        path = "/v1/alerts" if i % 2 else "/v1/ingest"
        ws = await websockets.connect(f"{relay.ws_url}{path}", open_timeout=30)
        try:
            frame = await asyncio.wait_for(ws.recv(), 10) if path == "/v1/alerts" else None
            if frame is None:  # a node: say hello and read the welcome (or the refusal)
                with contextlib.suppress(websockets.ConnectionClosed):
                    await ws.send(hello_frame(f"flood-{i}"))
                frame = await asyncio.wait_for(ws.recv(), 10)
            msg = _decode_raw(frame)
            if msg["type"] == "welcome":
                opened += 1
                holding.append(ws)
            else:
                assert msg["type"] == "error" and msg["code"] == "RATE_LIMITED", msg
                with pytest.raises(websockets.ConnectionClosed) as info:
                    await asyncio.wait_for(ws.recv(), 10)
                assert info.value.rcvd.code == CloseCode.RATE_LIMITED
                refused += 1
                REFUSED["RATE_LIMITED"] += 1
        except websockets.ConnectionClosed as exc:
            other.append(exc.rcvd.code if exc.rcvd else None)
        finally:
            done += 1
            if done == n:
                all_in.set()

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 60)
    await asyncio.wait_for(all_in.wait(), 1)
    for ws in holding:
        await ws.close()
    return opened, refused, other


def test_connection_flood_is_capped_and_answered_with_rate_limited(relay) -> None:
    _wait_idle(relay)
    n = 300
    TRIED["connection flood"] += n
    opened, refused, other = asyncio.run(_flood_connections(relay, n))
    assert other == []
    assert opened == MAX_CONNECTIONS and refused == n - MAX_CONNECTIONS
    _wait_idle(relay)
    healthy(relay)


def test_frame_floods_are_cut_with_rate_limited(relay) -> None:
    n = int(NODE_FRAMES_PER_S * 4)
    TRIED["frame flood /v1/ingest"] += n
    replies = [msgpack.packb({"type": "time_reply", "id": 10_000 + i, "t1_ns": 1, "t2_ns": 2, "t3_ns": 3}) for i in range(n)]
    got, close = talk(f"{relay.ws_url}/v1/ingest", [hello_frame(fresh_node_id()), *replies])
    assert_refused(got, close, ErrorCode.RATE_LIMITED)
    n = int(SUB_FRAMES_PER_S * 4)
    TRIED["frame flood /v1/alerts"] += n
    requests = [msgpack.packb({"type": "time_request", "id": i, "t1_ns": 1}) for i in range(n)]
    got, close = talk(f"{relay.ws_url}/v1/alerts", requests)
    assert_refused(got, close, ErrorCode.RATE_LIMITED)
    # the bucket let the burst through before it cut the connection
    assert sum(m["type"] == "time_reply" for m in got) >= SUB_FRAMES_PER_S - 1
    healthy(relay)


# ----------------------------------------------------------------- state after the onslaught


async def _publish_clean_missile(relay: RunningRelay) -> tuple[dict, list]:
    before = relay.relay.hub.last_alert_id
    received: list = []
    sub = await websockets.connect(f"{relay.ws_url}/v1/alerts?since={before}", max_size=None)
    assert _decode_raw(await sub.recv())["type"] == "welcome"

    async def listen() -> None:
        async for frame in sub:
            msg = decode_relay_to_subscriber(frame)
            if isinstance(msg, AlertBatch):
                received.extend(msg.alerts)

    listener = asyncio.create_task(listen())
    states = ballistic_arc(37.5, 128.5, 80, 4800, 38, 40)
    # an hour after the fuzzed reports' epoch: clear of the events the fuzzed reports opened (a
    # report dated far away is tested on its own below)
    now = T0_NS + 3_600_000_000_000
    reports, pubs = {}, []
    for i, nation in enumerate(NATIONS):
        reports[nation] = national_reports(states, nation, track_number=900 + i, seed=i, t0_ns=now)
        pub = NodePublisher(relay.ws_url, nation, f"clean-{nation.value.lower()}", backoff_initial_s=0.05, max_batch=10)
        pub.submit(reports[nation])
        pub.task = asyncio.create_task(pub.run())
        pubs.append(pub)
    for pub in pubs:
        assert await pub.wait_acked(30), (pub.node_id, pub.stats.errors)
        pub.task.cancel()
    await asyncio.gather(*(p.task for p in pubs), return_exceptions=True)
    deadline = time.monotonic() + 15
    want = sum(len(r) for r in reports.values())
    while sum(a.kind == AlertKind.TRACK_UPDATE and a.alert_id > before for a in received) < want and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    listener.cancel()
    await sub.close()
    await asyncio.gather(listener, return_exceptions=True)
    return reports, [a for a in received if a.alert_id > before]


def _metric(text: str, name: str, label: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(name + label + " ") or (not label and line.startswith(name + " ")):
            return float(line.split()[-1])
    return 0.0


def test_after_the_onslaught_a_clean_missile_is_fused_completely_and_counters_agree(relay) -> None:
    _wait_idle(relay)
    healthy(relay)
    reports, alerts = asyncio.run(_publish_clean_missile(relay))
    for nation, rs in reports.items():
        ACCEPTED[nation.value] += len(rs)
        updates = [a for a in alerts if a.kind == AlertKind.TRACK_UPDATE and a.hops.source_nation == nation]
        assert len(updates) == len(rs), (nation, len(updates), len(rs))
    ids = [a.alert_id for a in alerts]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "a gap or a duplicate in the live stream"
    clean_events = {a.event_id for a in alerts if a.kind == AlertKind.TRACK_UPDATE}
    assert len(clean_events) == 1, clean_events
    assert any(a.kind == AlertKind.LAUNCH_DETECTED for a in alerts)
    assert set(alerts[-1].nations) == set(NATIONS)
    for a in alerts:
        if a.state is not None:
            assert all(math.isfinite(v) for v in (*a.state.position_ecef_m, *a.state.velocity_ecef_mps))

    metrics = httpx.get(f"{relay.http_url}/metrics", timeout=10).text
    links = relay.relay.nodes.links.values()
    for nation in NATIONS:
        counted = _metric(metrics, "warnshare_reports_accepted_total", f'{{nation="{nation.value}"}}')
        held = sum(link.accepted for link in links if link.nation == nation)
        assert counted == held == ACCEPTED[nation.value], (nation, counted, held, ACCEPTED[nation.value])
    for code in ErrorCode:
        assert _metric(metrics, "warnshare_frames_rejected_total", f'{{code="{code.value}"}}') == REFUSED[code.value], code
    assert _metric(metrics, "warnshare_frames_rejected_total", '{code="INTERNAL"}') == 0
    engine_errors = _metric(metrics, "warnshare_engine_errors_total")
    print(f"\nfuzz: reports accepted {dict(ACCEPTED)}, refusals {dict(REFUSED)}, engine errors {engine_errors:.0f}")
    healthy(relay)


_STALL_PROBE = """
import sys
from tests.synth import T0_NS, ballistic_arc, national_reports
from warnshare.fusion import FusionConfig, FusionEngine
from warnshare.protocol import Nation
engine = FusionEngine(FusionConfig())
gap_ns = int(sys.argv[1])
for nation, t0 in ((Nation.JPN, T0_NS), (Nation.KOR, T0_NS + gap_ns)):
    states = ballistic_arc(38.0, 126.0, 90, 5000, 40, 2)
    for r in national_reports(states, nation, track_number=1, t0_ns=t0):
        engine.ingest(r, node_sent_ns=t0, received_ns=t0, clock_offset_ns=0, clock_rtt_ns=0)
print("done")
"""


def test_a_report_dated_a_year_after_an_event_is_fused_without_stalling() -> None:
    import subprocess
    import sys

    one_year_ns = 365 * 86_400 * 1_000_000_000
    try:
        out = subprocess.run([sys.executable, "-c", _STALL_PROBE, str(one_year_ns)], capture_output=True,
                             text=True, timeout=8, cwd=str(__import__("pathlib").Path(__file__).parent.parent))
    except subprocess.TimeoutExpired:
        raise AssertionError("fusing 6 reports did not finish within the 8 s liveness deadline") from None
    assert out.stdout.strip() == "done", out.stderr[-2000:]
