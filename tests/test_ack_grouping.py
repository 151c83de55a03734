"""A node's frames that reach the relay together are taken together: one cumulative ack after
them, not one each, and nothing accepted before a bad frame is lost (a real uvicorn relay)."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest
import websockets

from tests.conftest import start_relay
from tests.synth import ballistic_arc, national_reports
from warnshare.protocol import Hello, Nation, ReportBatch, decode_relay_to_node, encode
from warnshare.relay.app import RelayConfig

STATES = ballistic_arc(39.2, 125.7, 95, 5500, 40, 60)
FRAMES = 40


async def _burst(url: str, frames: list[bytes], on_ack=None) -> tuple[list[int], object]:
    """Say hello, then put every frame on the wire in one write (so they arrive together), and
    read what the relay answers until it acks the last report or closes: the acked seqs seen and
    the last message. ``on_ack(seq)`` is called as each ack arrives."""
    async with websockets.connect(f"{url}/v1/ingest") as ws:
        await ws.send(encode(Hello(protocol_version=1, nation=Nation.USA, node_id="usa-b",
                                   sent_ns=time.time_ns())))
        assert decode_relay_to_node(await ws.recv()).type == "welcome"
        for frame in frames:
            ws.protocol.send_binary(frame)
        ws.transport.write(b"".join(ws.protocol.data_to_send()))
        acked: list[int] = []
        last = None
        try:
            while True:
                last = decode_relay_to_node(await asyncio.wait_for(ws.recv(), 10))
                if last.type == "ack":
                    acked.append(last.acked_seq)
                    if on_ack is not None:
                        on_ack(last.acked_seq)
                    if last.acked_seq == FRAMES:
                        break
                elif last.type == "error":
                    break
        except websockets.ConnectionClosed:
            pass
        return acked, last


def _frames() -> list[bytes]:
    reports = national_reports(STATES, Nation.USA, track_number=7)[:FRAMES]
    return [encode(ReportBatch(sent_ns=time.time_ns(), reports=[r])) for r in reports]


@pytest.mark.parametrize("group", [1, 16])
async def test_frames_that_arrive_together_get_one_ack_per_group(group: int) -> None:
    running = start_relay(RelayConfig(ack_group_max=group))
    try:
        acked, _ = await _burst(running.ws_url, _frames())
        link = running.relay.nodes.links["usa-b"]
        assert link.accepted == FRAMES and link.last_seq == FRAMES
        assert acked == sorted(acked) and acked[-1] == FRAMES
        if group == 1:
            assert acked == list(range(1, FRAMES + 1)), "an ack per frame"
        else:
            # frames already waiting are taken first: at most `group` per ack, and fewer acks
            assert len(acked) < FRAMES, acked
            steps = [b - a for a, b in zip([0, *acked], acked, strict=False)]
            assert max(steps) <= group, steps
    finally:
        running.stop()


async def test_a_bad_frame_in_a_group_leaves_what_came_before_it_accepted_and_acked() -> None:
    running = start_relay(RelayConfig(ack_group_max=16))
    try:
        frames = _frames()[:5] + [b"\xc1 not msgpack"] + _frames()[5:10]
        acked, last = await _burst(running.ws_url, frames)
        link = running.relay.nodes.links["usa-b"]
        assert link.accepted == 5 and link.last_seq == 5
        assert acked and acked[-1] == 5, "the five accepted before the bad frame are acked"
        assert last is not None and last.type == "error" and last.code.value == "MALFORMED_FRAME"
    finally:
        running.stop()


async def test_a_journaled_group_is_committed_once_before_its_alerts_and_its_ack(tmp_path) -> None:
    """Group commit: the batches taken together are made durable in one transaction, and nothing
    of them (alert or ack) leaves the relay before it."""
    path = tmp_path / "relay.sqlite3"
    running = start_relay(RelayConfig(ack_group_max=16, journal_path=str(path)))
    journal, hub = running.relay.journal, running.relay.hub
    commits: list[int] = []
    early: list[int] = []  # alert ids handed to the hub while their batch was not committed
    commit, fan_out = journal.commit, hub.fan_out

    def counting_commit() -> None:
        if journal.open:
            commits.append(1)
        commit()

    def checked_fan_out(encoded: list) -> None:
        if journal.open:
            early.extend(a.alert_id for a in encoded)
        fan_out(encoded)

    journal.commit, hub.fan_out = counting_commit, checked_fan_out
    reader = sqlite3.connect(path)  # another connection sees only what is committed
    unjournaled_acks: list[int] = []

    def on_ack(seq: int) -> None:
        (last,) = reader.execute("SELECT max(last_seq) FROM inputs WHERE kind = 'batch'").fetchone()
        if last is None or last < seq:
            unjournaled_acks.append(seq)

    try:
        acked, _ = await _burst(running.ws_url, _frames(), on_ack)
        assert acked[-1] == FRAMES and not unjournaled_acks and not early
        assert 0 < len(commits) < FRAMES, "one commit per group, not per frame"
        (batches,) = reader.execute("SELECT count(*) FROM inputs WHERE kind = 'batch'").fetchone()
        assert batches == FRAMES  # and every batch is its own input row
    finally:
        reader.close()
        running.stop()
