"""End to end over real sockets: a uvicorn relay, three node clients, msgpack and JSON subscribers."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import msgpack
import pytest
import websockets

from tests.clients import Recorder
from tests.conftest import raw_node, send_report
from tests.synth import ballistic_arc, national_reports
from warnshare.node import NodeClock, NodePublisher
from warnshare.protocol import (
    MAX_NODE_FRAME_BYTES,
    NATIONS,
    AlertKind,
    CloseCode,
    ErrorCode,
    ErrorMessage,
    Hello,
    Nation,
    ReportBatch,
    Welcome,
    decode_relay_to_node,
    decode_relay_to_subscriber,
    encode,
)

STATES = ballistic_arc(39.2, 125.7, 95, 5500, 40, 60)


async def publish_missile(
    url: str, nations=NATIONS, skew_s: dict | None = None
) -> list[NodePublisher]:
    pubs = []
    for k, nation in enumerate(nations):
        clock = NodeClock(int((skew_s or {}).get(nation, 0) * 1e9))
        pub = NodePublisher(url, nation, f"{nation.value.lower()}-test", clock=clock)
        pub.task = asyncio.create_task(pub.run())
        now = time.time_ns()
        reports = national_reports(
            STATES, nation, track_number=100 + k, seed=k, measured_base_ns=now
        )
        if clock.skew_ns:
            reports = [
                r.model_copy(
                    update={
                        "time_of_validity_ns": r.time_of_validity_ns + clock.skew_ns,
                        "measured_ns": r.measured_ns + clock.skew_ns,
                    }
                )
                for r in reports
            ]
        pub.submit(reports)
        pubs.append(pub)
    for pub in pubs:
        assert await pub.wait_acked(20), f"{pub.node_id} not acked"
    return pubs


async def stop_publishers(pubs) -> None:
    for pub in pubs:
        pub.task.cancel()
    await asyncio.gather(*(p.task for p in pubs), return_exceptions=True)


async def test_three_nations_one_missile_one_event_same_alerts_for_msgpack_and_json(
    relay_server,
) -> None:
    mp, js = Recorder(relay_server.ws_url, "msgpack"), Recorder(relay_server.ws_url, "json")
    await mp.start()
    await js.start()
    pubs = await publish_missile(relay_server.ws_url)
    total = 3 * len(STATES)
    await mp.wait_for(lambda a: sum(x.kind == AlertKind.TRACK_UPDATE for x in a) >= total)
    await js.wait_for(lambda a: len(a) >= len(mp.alerts))
    await stop_publishers(pubs)
    await mp.stop()
    await js.stop()

    assert [a.alert_id for a in mp.alerts] == [a.alert_id for a in js.alerts]
    assert mp.alerts == js.alerts
    assert [a.alert_id for a in mp.alerts] == sorted({a.alert_id for a in mp.alerts})
    assert {a.event_id for a in mp.alerts} == {mp.alerts[0].event_id}, (
        "one missile must be one event"
    )
    kinds = [a.kind for a in mp.alerts]
    assert kinds[0] == AlertKind.LAUNCH_DETECTED and kinds.count(AlertKind.LAUNCH_DETECTED) == 1
    assert set(mp.alerts[-1].nations) == set(NATIONS)
    for a in mp.alerts:
        h = a.hops
        assert (
            h.measured_ns <= h.node_sent_ns + 50_000_000
            and h.node_sent_ns <= h.relay_received_ns + 50_000_000
        )
        assert h.relay_received_ns <= h.fused_ns
        assert not hasattr(a, "sensor_ids")
    async with httpx.AsyncClient(base_url=relay_server.http_url) as http:
        events = (await http.get("/v1/events")).json()
        assert len(events) == 1 and set(events[0]["nations"]) == {"USA", "JPN", "KOR"}
        metrics = (await http.get("/metrics")).text
        assert 'warnshare_reports_accepted_total{nation="JPN"} 61.0' in metrics


async def test_late_joiner_gets_the_current_picture_and_since_resumes_without_gap(
    relay_server,
) -> None:
    pubs = await publish_missile(relay_server.ws_url, nations=[Nation.KOR])
    first = Recorder(relay_server.ws_url, "msgpack")
    await first.start()
    await first.wait_for(lambda a: len(a) >= 1)
    kinds = {a.kind for a in first.alerts}
    assert AlertKind.LAUNCH_DETECTED in kinds and AlertKind.TRACK_UPDATE in kinds
    assert len(first.alerts) < len(STATES), "a late joiner gets the picture, not the history"
    await first.stop()
    await stop_publishers(pubs)
    last = await relay_server.settled_alert_id()
    async with websockets.connect(f"{relay_server.ws_url}/v1/alerts?since={last - 10}") as ws:
        assert isinstance(decode_relay_to_subscriber(await ws.recv()), Welcome)
        got = []
        while len(got) < 10:
            got.extend(decode_relay_to_subscriber(await asyncio.wait_for(ws.recv(), 5)).alerts)
        assert [a.alert_id for a in got] == list(range(last - 9, last + 1))


async def _raw_send(url: str, node_id: str, reports, expect_welcome_seq: int) -> int:
    async with websockets.connect(f"{url}/v1/ingest") as ws:
        await ws.send(
            encode(
                Hello(
                    protocol_version=1, nation=Nation.USA, node_id=node_id, sent_ns=time.time_ns()
                )
            )
        )
        assert decode_relay_to_node(await ws.recv()).last_acked_seq == expect_welcome_seq
        await ws.send(encode(ReportBatch(sent_ns=time.time_ns(), reports=reports)))
        while True:
            msg = decode_relay_to_node(await asyncio.wait_for(ws.recv(), 5))
            if msg.type == "ack":
                return msg.acked_seq


async def test_node_that_reconnects_resends_only_what_was_not_acked(relay_server) -> None:
    url = relay_server.ws_url
    reports = national_reports(STATES, Nation.USA, track_number=5)
    assert await _raw_send(url, "usa-r", reports[:20], 0) == 20
    # a node that does not know what got through re-sends an overlap: duplicates are dropped
    assert await _raw_send(url, "usa-r", reports[10:30], 20) == 30
    link = relay_server.relay.nodes.links["usa-r"]
    assert link.accepted == 30 and link.duplicates == 10
    # a publisher re-playing the same reports resumes from the welcome's last acked seq and
    # sends only the rest
    pub = NodePublisher(url, Nation.USA, "usa-r", numbering="replay")
    pub.submit(reports)
    pub.task = asyncio.create_task(pub.run())
    assert await pub.wait_acked(10)
    await stop_publishers([pub])
    assert pub.stats.reports_sent == len(reports) - 30
    assert pub.stats.reports_already_held == 30 and pub.stats.reports_renumbered == 0
    assert link.accepted == len(reports) and link.duplicates == 10 and link.last_seq == len(reports)


async def test_a_restarted_node_with_new_reports_continues_after_what_the_relay_holds(
    relay_server,
) -> None:
    """A node restarted while its relay kept its state numbers its new reports from seq 1 again.
    The relay held those seqs already, so it dropped every one as a duplicate and acknowledged
    it: the node said "all acked" and nothing of it was shown (a second `docker compose up`
    against the kept journal). Now the publisher numbers on after the welcome's seq."""
    url = relay_server.ws_url
    first = national_reports(STATES, Nation.KOR, track_number=8, measured_base_ns=time.time_ns())
    old = NodePublisher(url, Nation.KOR, "kor-restart")
    old.task = asyncio.create_task(old.run())
    old.submit(first[:20])
    assert await old.wait_acked(10)
    await stop_publishers([old])
    link = relay_server.relay.nodes.links["kor-restart"]
    listener = Recorder(url, "msgpack")
    await listener.start()
    shown_before = len(listener.alerts)

    # a new run of the node: reports numbered from 1 and queued before it has connected
    later = national_reports(STATES, Nation.KOR, track_number=9, measured_base_ns=time.time_ns())
    new = NodePublisher(url, Nation.KOR, "kor-restart")
    new.submit([r.model_copy(update={"seq": new.next_seq()}) for r in later[:10]])
    assert [r.seq for r in new.outbox] == list(range(1, 11))
    new.task = asyncio.create_task(new.run())
    pubs = [new]
    try:
        assert await new.wait_acked(10)
        assert new.stats.reports_renumbered == 10 and new.stats.reports_already_held == 0
        assert (link.last_seq, link.accepted, link.duplicates) == (30, 30, 0)
        await listener.wait_for(
            lambda alerts: sum(a.kind == AlertKind.TRACK_UPDATE for a in alerts[shown_before:]) >= 10
        )
        assert new.next_seq() == 31  # numbered on after the relay's 20 and its own 10
        new.submit([later[10].model_copy(update={"seq": 31})])
        assert await new.wait_acked(10) and link.accepted == 31
        await stop_publishers([new])

        # a run that connects before it numbers anything: next_seq starts after the relay's
        third = NodePublisher(url, Nation.KOR, "kor-restart")
        third.task = asyncio.create_task(third.run())
        pubs.append(third)
        await asyncio.wait_for(third.connected.wait(), 10)
        # a seq of its own that the relay holds is refused loudly, not dropped at the relay
        with pytest.raises(ValueError, match="already holds seq 1-31"):
            third.submit([later[11].model_copy(update={"seq": 1})])
        assert third.next_seq() == 32 and not third.outbox
        await stop_publishers([third])

        # a node re-playing the same reports says so; they are counted, not sent again
        again = NodePublisher(url, Nation.KOR, "kor-restart", numbering="replay")
        again.task = asyncio.create_task(again.run())
        pubs.append(again)
        await asyncio.wait_for(again.connected.wait(), 10)
        again.submit(first[:20])
        assert await again.wait_acked(10)
        assert again.stats.reports_already_held == 20 and again.stats.reports_sent == 0
        assert (link.accepted, link.duplicates) == (31, 0)
        assert not any(p.stats.errors for p in pubs), [p.stats.errors for p in pubs]
    finally:
        await stop_publishers(pubs)
        await listener.stop()

    with pytest.raises(ValueError, match="numbering must be one of"):
        NodePublisher(url, Nation.KOR, "kor-x", numbering="renumber")


async def test_a_relay_that_lost_its_state_takes_up_a_nodes_numbering() -> None:
    """A relay replaced by one without its state (no journal, a standby taking over) meets a
    node whose first reports the old one acknowledged: the node holds them no more, so the new
    relay must take up its numbering where it is. Held to seq 1, it refused the node's every
    batch with SEQUENCE_GAP and the node reconnected forever, sending nothing more."""
    from tests.conftest import start_relay
    from warnshare.relay.app import RelayConfig

    reports = national_reports(STATES, Nation.KOR, track_number=7, measured_base_ns=time.time_ns())
    old = start_relay(RelayConfig())
    port = old.port
    pub = NodePublisher(old.ws_url, Nation.KOR, "kor-1", backoff_initial_s=0.05, backoff_max_s=0.2)
    pub.task = asyncio.create_task(pub.run())
    new = None
    try:
        pub.submit(reports[:20])
        assert await pub.wait_acked(10) and pub.acked_seq == 20
        old.stop()
        new = start_relay(RelayConfig(), port=port)  # the same address, nothing of the old state
        listener = Recorder(new.ws_url, "msgpack")
        await listener.start()
        pub.submit(reports[20:40])
        assert await pub.wait_acked(10), f"the node is stuck: {pub.stats.errors[-1:]}"
        link = new.relay.nodes.links["kor-1"]
        assert (link.last_seq, link.accepted, link.duplicates) == (40, 20, 0)
        assert not any("SEQUENCE_GAP" in e for e in pub.stats.errors)
        # the new relay fuses and shows what it took: a TRACK_UPDATE for every report of 21-40
        await listener.wait_for(
            lambda alerts: sum(a.kind == AlertKind.TRACK_UPDATE for a in alerts) == 20
        )
        metrics = httpx.get(f"{new.http_url}/metrics").text
        assert "warnshare_node_numbering_taken_up_total 1.0" in metrics
        await listener.stop()
    finally:
        await stop_publishers([pub])
        if new is not None:
            new.stop()
        old.stop()


@pytest.mark.parametrize("new_relay", ["behind the subscriber", "past the subscriber"])
async def test_a_subscriber_resuming_on_a_relay_that_lost_its_state_gets_everything(new_relay) -> None:
    """A relay replaced by one without its state numbers its alerts from 1 again. A subscriber
    that resumed there with since=<its last alert of the old relay> was sent no backlog: every
    alert issued before it reconnected (the new missile's LAUNCH_DETECTED and first updates) was
    lost to it, silently. "behind": the new relay has issued fewer alerts than the subscriber's
    last id, which it never issued; "past": the subscriber was away while it issued more, so
    only the welcome's epoch, echoed on resuming, tells the two numberings apart."""
    from tests.conftest import start_relay
    from warnshare.relay.app import RelayConfig
    from warnshare.subscriber import AlertSubscriber

    behind = new_relay.startswith("behind")
    old_nations, new_nations = ([Nation.KOR, Nation.USA], [Nation.JPN]) if behind else (
        [Nation.KOR], [Nation.KOR, Nation.USA])
    old = start_relay(RelayConfig())
    new = None
    got: list = []
    sub = AlertSubscriber(old.ws_url)

    async def follow() -> None:
        async for item in sub.alerts():
            got.append(item.alert)

    async def received(n: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(got) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    follower = asyncio.create_task(follow())
    try:
        await stop_publishers(await publish_missile(old.ws_url, nations=old_nations))
        last_old = await old.settled_alert_id()
        await received(last_old, 10)
        assert (sub.last_alert_id, sub.epoch) == (last_old, old.relay.epoch)
        if not behind:  # away while the relay is replaced
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        old.stop()
        new = start_relay(RelayConfig(), port=old.port)  # the same address, none of the state
        assert new.relay.epoch != old.relay.epoch
        await stop_publishers(await publish_missile(new.ws_url, nations=new_nations))
        issued = await new.settled_alert_id()
        assert (0 < issued < last_old) if behind else (issued > last_old), (issued, last_old)
        if not behind:  # back, resuming with since and the epoch
            follower = asyncio.create_task(follow())
        await received(last_old + issued, 15)
        after = [a.alert_id for a in got[last_old:]]
        assert after[:issued] == list(range(1, issued + 1)), (
            f"got {len(after)} of the new relay's {issued} alerts, from id {after[:1]}")
        assert got[last_old].kind == AlertKind.LAUNCH_DETECTED and sub.epoch == new.relay.epoch
        metrics = httpx.get(f"{new.http_url}/metrics").text
        assert "warnshare_subscribers_resumed_elsewhere_total 1.0" in metrics
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        if new is not None:
            new.stop()
        old.stop()


async def test_auto_start_is_the_same_instant_for_every_node_and_does_not_wait_for_ever(
    relay_server,
) -> None:
    from warnshare.node import auto_start_ns, nodes_url

    assert nodes_url("ws://relay:8000/v1/ingest") == "http://relay:8000/v1/nodes"
    assert nodes_url("wss://relay.example/v1/ingest") == "https://relay.example/v1/nodes"
    pubs = []
    for nation in (Nation.KOR, Nation.JPN):
        pub = NodePublisher(relay_server.ws_url, nation, f"{nation.value.lower()}-auto")
        pub.task = asyncio.create_task(pub.run())
        pubs.append(pub)
        await asyncio.wait_for(pub.connected.wait(), 10)
        await asyncio.sleep(0.3)  # ready apart
    try:
        links = relay_server.relay.nodes.links
        expected = max(links[p.node_id].connected_ns for p in pubs) + 2_000_000_000
        both = [Nation.KOR, Nation.JPN]
        starts = await asyncio.gather(*(auto_start_ns(p, both, poll_s=0.05) for p in pubs))
        assert starts == [expected, expected]
        # no US node: after wait_s, the latest of the nations present, not a wait for ever
        t0 = time.monotonic()
        assert await auto_start_ns(pubs[0], wait_s=0.5, poll_s=0.05) == expected
        assert time.monotonic() - t0 < 5
    finally:
        await stop_publishers(pubs)


async def test_submit_refuses_what_the_relay_would_refuse_and_queues_nothing_of_it(
    relay_server,
) -> None:
    """A program that builds its own reports learns at ``submit`` what the relay would refuse:
    before, another nation's report or an impossible one closed the link for good
    (NodeRejected), and a skipped seq was refused as a gap on every reconnection."""
    reports = national_reports(STATES, Nation.JPN, track_number=3, measured_base_ns=time.time_ns())
    pub = NodePublisher(relay_server.ws_url, Nation.JPN, "jpn-own", backoff_initial_s=0.05)
    pub.task = asyncio.create_task(pub.run())
    try:
        pub.submit(reports[:5])
        fast = reports[6].model_copy(update={"velocity_ecef_mps": [1e200, 0.0, 0.0]})
        korean = reports[6].model_copy(update={"nation": Nation.KOR})
        refusals = {
            "an impossible state": ([reports[5], fast, reports[7]], "report seq 7: speed"),
            "another nation": ([reports[5], korean], "report seq 7 is KOR's"),
            "a skipped seq": ([reports[5], reports[7]], "report seq 8 does not follow seq 6"),
            "a seq sent before": (reports[3:7], "report seq 4 does not follow seq 5"),
        }
        for what, (bad, says) in refusals.items():
            with pytest.raises(ValueError, match=says):
                pub.submit(bad)
            assert all(r.seq <= 5 for r in pub.outbox), f"{what}: part of a refused call queued"
        with pytest.raises(TypeError):
            pub.submit([reports[5].model_dump()])
        pub.submit(reports[5:])  # nothing of the refused calls was kept: it goes on at seq 6
        assert await pub.wait_acked(10), pub.stats.errors
        link = relay_server.relay.nodes.links["jpn-own"]
        assert (link.last_seq, link.accepted) == (len(reports), len(reports))
        assert pub.stats.errors == [] and not pub.task.done()
    finally:
        await stop_publishers([pub])


async def _expect_refusal(url: str, frames: list, code: ErrorCode | None, close_code: int) -> None:
    error = None
    closed = None
    try:
        async with websockets.connect(f"{url}/v1/ingest", max_size=None) as ws:
            for f in frames:
                await ws.send(f)
            while True:
                msg = decode_relay_to_node(await asyncio.wait_for(ws.recv(), 5))
                if isinstance(msg, ErrorMessage):
                    error = msg
    except websockets.ConnectionClosed as exc:
        closed = exc
    assert closed is not None, "the relay must close the connection"
    if closed.rcvd is None:
        # only for an oversized frame: the reset of a socket closed with unread data can overtake
        # the 1009 close frame (PROTOCOL.md)
        assert close_code == CloseCode.TOO_BIG
    else:
        assert closed.rcvd.code == close_code
    if code is not None:
        assert error is not None and error.code == code and error.message


def _hello(nation: Nation = Nation.JPN, node_id: str = "bad-1", version: int = 1) -> bytes:
    return msgpack.packb(
        {
            "type": "hello",
            "protocol_version": version,
            "nation": nation.value,
            "node_id": node_id,
            "sent_ns": time.time_ns(),
            "auth": {"scheme": "none"},
        }
    )


async def test_malformed_input_gets_documented_errors_and_the_relay_keeps_serving(
    relay_server,
) -> None:
    url = relay_server.ws_url
    watcher = Recorder(url, "json")
    await watcher.start()
    good = national_reports(STATES, Nation.JPN, track_number=1)[:2]
    spoof = national_reports(STATES, Nation.KOR, track_number=1)[:1]
    cases = [
        ([b"\xc1 not msgpack"], ErrorCode.MALFORMED_FRAME, CloseCode.INVALID_PAYLOAD),
        (["a text frame"], ErrorCode.MALFORMED_FRAME, CloseCode.INVALID_PAYLOAD),
        (
            [msgpack.packb({"type": "hello", "nation": 7})],
            ErrorCode.SCHEMA_INVALID,
            CloseCode.SCHEMA_INVALID,
        ),
        ([_hello(version=9)], ErrorCode.UNSUPPORTED_VERSION, CloseCode.UNSUPPORTED_VERSION),
        (
            [encode(ReportBatch(sent_ns=1, reports=good))],
            ErrorCode.HELLO_REQUIRED,
            CloseCode.HELLO_REQUIRED,
        ),
        (
            [_hello(node_id="bad-2"), encode(ReportBatch(sent_ns=1, reports=spoof))],
            ErrorCode.NATION_MISMATCH,
            CloseCode.NATION_MISMATCH,
        ),
        (
            [
                _hello(node_id="bad-3"),
                msgpack.packb({"type": "report_batch", "sent_ns": 1, "reports": [{"seq": "x"}]}),
            ],
            ErrorCode.SCHEMA_INVALID,
            CloseCode.SCHEMA_INVALID,
        ),
        ([_hello(node_id="bad-4"), b"\x00" * (MAX_NODE_FRAME_BYTES + 1)], None, CloseCode.TOO_BIG),
        (
            # well-formed, finite, and no missile: 300,000 km/s
            [_hello(node_id="bad-5"), encode(ReportBatch(sent_ns=1, reports=[
                good[0].model_copy(update={"velocity_ecef_mps": [3e8, 0.0, 0.0]})]))],
            ErrorCode.SCHEMA_INVALID,
            CloseCode.SCHEMA_INVALID,
        ),
    ]
    for frames, code, close_code in cases:
        await _expect_refusal(url, frames, code, int(close_code))
    # everything else still works: a node publishes and the watcher, connected all along, hears it
    pubs = await publish_missile(url, nations=[Nation.JPN])
    await watcher.wait_for(lambda a: any(x.kind == AlertKind.LAUNCH_DETECTED for x in a))
    await stop_publishers(pubs)
    await watcher.stop()
    async with httpx.AsyncClient(base_url=relay_server.http_url) as http:
        assert (await http.get("/healthz")).status_code == 200
        metrics = (await http.get("/metrics")).text
    assert 'warnshare_frames_rejected_total{code="NATION_MISMATCH"} 1.0' in metrics


async def test_bad_subscriber_requests_are_refused_clearly(relay_server) -> None:
    for query, close_code in (
        ("format=xml", CloseCode.BAD_REQUEST),
        ("since=-4", CloseCode.BAD_REQUEST),
    ):
        async with websockets.connect(f"{relay_server.ws_url}/v1/alerts?{query}") as ws:
            msg = decode_relay_to_subscriber(await ws.recv())
            assert isinstance(msg, ErrorMessage) and msg.code == ErrorCode.BAD_REQUEST
            with pytest.raises(websockets.ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == close_code
    async with websockets.connect(f"{relay_server.ws_url}/v1/alerts?format=json") as ws:
        await ws.recv()  # welcome
        await ws.send("{oops")
        msg = json.loads(await ws.recv())
        assert msg["code"] == "MALFORMED_FRAME"
        with pytest.raises(websockets.ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd.code == CloseCode.INVALID_PAYLOAD


async def test_a_node_five_seconds_fast_gets_the_same_hop_latencies(relay_server) -> None:
    mp = Recorder(relay_server.ws_url, "msgpack")
    await mp.start()
    # one after the other, so neither batch queues behind the other's fusion
    for nation in (Nation.JPN, Nation.KOR):
        pubs = await publish_missile(
            relay_server.ws_url, nations=[nation], skew_s={Nation.KOR: 5.0}
        )
        await stop_publishers(pubs)
    await mp.wait_for(lambda a: sum(x.kind == AlertKind.TRACK_UPDATE for x in a) >= 2 * len(STATES))
    await mp.stop()
    link = relay_server.relay.nodes.links["kor-test"]
    # the error of every corrected hop is exactly the error of the offset estimate, which NTP
    # arithmetic bounds by half the round trip of the sample it trusts
    bound = link.clock.rtt_ns // 2 + 100_000
    assert abs(link.clock.offset_ns - 5_000_000_000) <= bound
    for nation in (Nation.JPN, Nation.KOR):
        alerts = [
            a
            for a in mp.alerts
            if a.hops.source_nation == nation and a.kind == AlertKind.TRACK_UPDATE
        ]
        assert alerts
        for a in alerts:
            slack = a.hops.clock_rtt_ns // 2 + 100_000  # the offset estimate's error bound
            hop = a.hops.relay_received_ns - a.hops.node_sent_ns
            assert -slack <= hop < 100_000_000, nation
            expected = 5_000_000_000 if nation == Nation.KOR else 0
            assert abs(a.hops.clock_offset_ns - expected) <= slack


async def test_a_connection_that_never_says_hello_is_closed() -> None:
    from tests.conftest import start_relay
    from warnshare.relay.app import RelayConfig

    running = start_relay(RelayConfig(hello_timeout_s=0.3))
    try:
        async with websockets.connect(f"{running.ws_url}/v1/ingest") as ws:
            msg = decode_relay_to_node(await asyncio.wait_for(ws.recv(), 5))
            assert isinstance(msg, ErrorMessage) and msg.code == ErrorCode.HELLO_REQUIRED
            with pytest.raises(websockets.ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 5)
            assert info.value.rcvd.code == CloseCode.HELLO_REQUIRED
    finally:
        running.stop()


@pytest.mark.parametrize("direct_writes", [True, False])
async def test_alerts_are_the_same_with_and_without_direct_writes(direct_writes: bool) -> None:
    """Frames written straight to the transports (the default under uvicorn's websockets-sansio)
    carry exactly what the ASGI path carries; the relay really takes the direct path."""
    from tests.conftest import start_relay
    from warnshare.relay.app import RelayConfig

    running = start_relay(RelayConfig(direct_writes=direct_writes))
    try:
        mp, js = Recorder(running.ws_url, "msgpack"), Recorder(running.ws_url, "json")
        await mp.start()
        await js.start()
        pubs = await publish_missile(running.ws_url)
        await stop_publishers(pubs)
        last = await running.settled_alert_id()
        await mp.wait_for(lambda a: len(a) >= last)
        await js.wait_for(lambda a: len(a) >= last)
        await mp.stop()
        await js.stop()
        assert [a.alert_id for a in mp.alerts] == list(range(1, last + 1))
        assert mp.alerts == js.alerts
        hub = running.relay.hub
        assert (hub.direct_frames > 0) == direct_writes
    finally:
        running.stop()


async def test_young_garbage_collections_run_only_between_reports() -> None:
    """With gc_control the relay runs the young collections itself, after a batch's alerts have
    gone out or in its ticker: no collection starts inside the handling of a report."""
    import gc
    import sys

    from tests.conftest import start_relay
    from warnshare.relay.app import RelayConfig

    where: list[str] = []

    def watch(phase: str, info: dict) -> None:
        if phase != "start":
            return
        names = set()
        frame = sys._getframe(1)
        while frame is not None:
            names.add(frame.f_code.co_name)
            frame = frame.f_back
        where.append("chosen" if names & {"collect_young", "maybe_collect_garbage", "lifespan"} else
                     f"gen{info['generation']} in {sorted(names & {'ingest_batch', 'ingest', '_fuse', 'flush'})}")

    thresholds = gc.get_threshold()
    gc.set_threshold(100, 5, thresholds[2])  # low, so that one missile's reports pass them often
    running = start_relay(RelayConfig())
    gc.callbacks.append(watch)
    try:
        assert not gc.isenabled()
        pubs = await publish_missile(running.ws_url)
        await stop_publishers(pubs)
        await running.settled_alert_id()
        assert running.relay.hub.last_alert_id > len(STATES)
    finally:
        gc.callbacks.remove(watch)
        running.stop()
        gc.set_threshold(*thresholds)
    assert gc.isenabled()  # given back when the relay stops
    # the batch's reports (thousands of objects) passed the threshold: collected after it
    assert where.count("chosen") >= 1, where
    assert set(where) == {"chosen"}, where


async def test_a_fault_after_a_batch_is_taken_leaves_it_to_be_sent_again(relay_server) -> None:
    # A bug past the ingest rules (here: stamping the batch's alerts raises once) closes the
    # node's connection with INTERNAL. The batch was not acknowledged, so it must not count as
    # taken either: the node's resend, after a reconnect, is fused and shown, not dropped as a
    # duplicate.
    url = relay_server.ws_url
    relay = relay_server.relay
    reports = national_reports(STATES, Nation.USA, track_number=9)[:4]

    async def session() -> tuple[websockets.ClientConnection, object]:
        return await raw_node(url, Nation.USA, "usa-fault")

    async def send(ws: websockets.ClientConnection, k: int) -> object:
        return await send_report(ws, reports[k])

    ws, welcome = await session()
    assert welcome.last_acked_seq == 0
    for k in range(2):
        assert (await send(ws, k)).acked_seq == reports[k].seq
    shown = relay.hub.last_alert_id
    real_stamp = relay._stamp

    def broken(*args: object) -> object:
        relay._stamp = real_stamp  # once
        raise RuntimeError("a bug")

    relay._stamp = broken
    refused = await send(ws, 2)
    assert refused.type == "error" and refused.code == ErrorCode.INTERNAL
    await ws.close()
    assert relay.hub.last_alert_id == shown
    ws, welcome = await session()
    assert welcome.last_acked_seq == reports[1].seq, "the failed batch is asked for again"
    assert (await send(ws, 2)).acked_seq == reports[2].seq
    await ws.close()
    assert relay.hub.last_alert_id > shown, "the resent batch's alerts are shown"
