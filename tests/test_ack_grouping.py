"""A node's frames that reach the relay together are taken together: one cumulative ack after
them, not one each, and nothing accepted before a bad frame is lost (a real uvicorn relay)."""

from __future__ import annotations

import asyncio
import time

import pytest
import websockets

from tests.conftest import start_relay
from tests.synth import ballistic_arc, national_reports
from warnshare.protocol import Hello, Nation, ReportBatch, decode_relay_to_node, encode
from warnshare.relay.app import RelayConfig

STATES = ballistic_arc(39.2, 125.7, 95, 5500, 40, 60)
FRAMES = 40


async def _burst(url: str, frames: list[bytes]) -> tuple[list[int], object]:
    """Say hello, then put every frame on the wire in one write (so they arrive together), and
    read what the relay answers until it acks the last report or closes: the acked seqs seen and
    the last message."""
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
