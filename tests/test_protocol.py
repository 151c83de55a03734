"""Wire protocol v1: round trips, and the error each kind of bad frame gets."""

from __future__ import annotations

import json
import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.synth import ballistic_arc, national_reports
from warnshare.protocol import (
    CLOSE_CODES,
    AlertBatch,
    CloseCode,
    ErrorCode,
    Hello,
    Nation,
    ProtocolError,
    ReportBatch,
    covariance_from_upper,
    covariance_to_upper,
    decode_node_message,
    decode_relay_to_subscriber,
    decode_subscriber_message,
    encode,
)


def _batch() -> ReportBatch:
    states = ballistic_arc(39.2, 125.7, 90, 5000, 45, 3)
    return ReportBatch(sent_ns=1, reports=national_reports(states, Nation.JPN, track_number=7))


def test_report_batch_round_trips_through_msgpack() -> None:
    batch = _batch()
    assert decode_node_message(encode(batch)) == batch


def test_hello_round_trips() -> None:
    hello = Hello(protocol_version=1, nation=Nation.KOR, node_id="kor-1", sent_ns=5)
    assert decode_node_message(encode(hello)) == hello


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\xc1\xc1\xc1", ErrorCode.MALFORMED_FRAME),  # 0xc1 is never used in msgpack
        (msgpack.packb([1, 2, 3]), ErrorCode.MALFORMED_FRAME),  # not a map
        (msgpack.packb({"type": "hello"}), ErrorCode.SCHEMA_INVALID),
        (msgpack.packb({"type": "nonsense"}), ErrorCode.SCHEMA_INVALID),
        (
            msgpack.packb(
                {
                    "type": "hello",
                    "protocol_version": 2,
                    "nation": "JPN",
                    "node_id": "x",
                    "sent_ns": 1,
                }
            ),
            ErrorCode.UNSUPPORTED_VERSION,
        ),
        (
            msgpack.packb(
                {
                    "type": "hello",
                    "protocol_version": 1,
                    "nation": "PRK",
                    "node_id": "x",
                    "sent_ns": 1,
                }
            ),
            ErrorCode.SCHEMA_INVALID,
        ),
    ],
)
def test_bad_frames_get_their_error_code(frame: bytes, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_node_message(frame)
    assert info.value.code == code
    assert info.value.close_code == CLOSE_CODES[code]


def test_nan_and_infinity_never_validate() -> None:
    doc = _batch().model_dump(mode="python")
    for bad in (math.nan, math.inf, -math.inf):
        doc["reports"][0]["position_ecef_m"][0] = bad
        with pytest.raises(ProtocolError) as info:
            decode_node_message(msgpack.packb(doc))
        assert info.value.code == ErrorCode.SCHEMA_INVALID


def test_unknown_fields_are_refused() -> None:
    doc = _batch().model_dump(mode="python")
    doc["reports"][0]["surprise"] = 1
    with pytest.raises(ProtocolError, match="surprise"):
        decode_node_message(msgpack.packb(doc))


def test_every_error_code_has_a_close_code() -> None:
    assert set(CLOSE_CODES) == set(ErrorCode)
    assert all(isinstance(c, CloseCode) for c in CLOSE_CODES.values())


def test_subscriber_frames_in_json_and_msgpack() -> None:
    req = {"type": "time_request", "id": 3, "t1_ns": 99}
    assert decode_subscriber_message(json.dumps(req)).t1_ns == 99
    assert decode_subscriber_message(msgpack.packb(req)).id == 3
    with pytest.raises(ProtocolError) as info:
        decode_subscriber_message("{not json")
    assert info.value.code == ErrorCode.MALFORMED_FRAME


def test_empty_alert_batch_decodes_from_both_encodings() -> None:
    batch = AlertBatch(relay_sent_ns=5, alerts=[])
    assert decode_relay_to_subscriber(encode(batch)) == batch
    assert decode_relay_to_subscriber(batch.model_dump_json()) == batch


@given(st.binary(max_size=512))
@settings(max_examples=300, deadline=None)
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    try:
        decode_node_message(data)
    except ProtocolError as exc:
        assert exc.code in (
            ErrorCode.MALFORMED_FRAME,
            ErrorCode.SCHEMA_INVALID,
            ErrorCode.UNSUPPORTED_VERSION,
        )


@given(st.lists(st.floats(-1e6, 1e6), min_size=21, max_size=21))
def test_covariance_upper_round_trip(upper: list[float]) -> None:
    assert covariance_to_upper(covariance_from_upper(upper)) == upper


@pytest.mark.parametrize(
    ("field", "value"),
    [("protocol_version", "1"), ("sent_ns", 1.0), ("sent_ns", "5"), ("node_id", b"raw")],
)
def test_no_type_coercion(field: str, value) -> None:
    doc = {"type": "hello", "protocol_version": 1, "nation": "JPN", "node_id": "x", "sent_ns": 5}
    doc[field] = value
    with pytest.raises(ProtocolError) as info:
        decode_node_message(msgpack.packb(doc, use_bin_type=True))
    assert info.value.code == ErrorCode.SCHEMA_INVALID


def test_encode_gives_the_bytes_of_model_dump_for_every_kind_of_message() -> None:
    """``encode`` packs models without ``model_dump``'s copy; the bytes must not change."""
    from warnshare.fusion import FusionEngine
    from warnshare.protocol import Auth, SignedBatch

    batch = _batch()
    engine = FusionEngine()
    alerts = []
    for k, rep in enumerate(batch.reports):
        alerts += engine.ingest(rep, node_sent_ns=k, received_ns=k)
    alerts += engine.tick(batch.reports[-1].time_of_validity_ns + 10**12)
    assert {a.kind for a in alerts} >= {"LAUNCH_DETECTED", "TRACK_UPDATE"}
    hello = Hello(protocol_version=1, nation=Nation.USA, node_id="usa-1", sent_ns=5,
                  auth=Auth(scheme="ed25519", key_id="k", nonce=b"\x00\x01", signature=b"\xff" * 64))
    signed = SignedBatch(payload=encode(batch), signature=b"\x01" * 64, key_id="k")
    for message in [batch, hello, signed, AlertBatch(relay_sent_ns=3, alerts=alerts), *alerts]:
        assert encode(message) == msgpack.packb(message.model_dump(mode="python"), use_bin_type=True)
    with pytest.raises(TypeError):
        encode(object())  # type: ignore[arg-type]
