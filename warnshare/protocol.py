"""Wire protocol v1: the pydantic models of every message and their msgpack / JSON codec.

This module is the whole contract between national nodes, the relay and subscribers;
docs/PROTOCOL.md describes it for people writing clients in other languages. Every
frame is one map with a ``type`` key. Times are integer UTC nanoseconds since the Unix
epoch (``*_ns``), positions and velocities are WGS84 ECEF in metres and metres per second.
"""

from __future__ import annotations

import json
import threading
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Literal

import msgpack
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

#: Largest frame the relay accepts from a node (bytes); larger frames close with 1009.
MAX_NODE_FRAME_BYTES = 1 << 20
#: Largest frame the relay accepts from a subscriber (bytes).
MAX_SUBSCRIBER_FRAME_BYTES = 64 << 10
#: Largest number of reports in one batch.
MAX_REPORTS_PER_BATCH = 1000

INGEST_PATH = "/v1/ingest"
ALERTS_PATH = "/v1/alerts"


class Nation(StrEnum):
    USA = "USA"
    JPN = "JPN"
    KOR = "KOR"


NATIONS: tuple[Nation, ...] = (Nation.USA, Nation.JPN, Nation.KOR)


class DataMode(StrEnum):
    REAL = "REAL"
    EXERCISE = "EXERCISE"
    SIMULATED = "SIMULATED"


class FlightPhase(StrEnum):
    BOOST = "BOOST"
    MIDCOURSE = "MIDCOURSE"
    TERMINAL = "TERMINAL"
    UNKNOWN = "UNKNOWN"


class AlertKind(StrEnum):
    LAUNCH_DETECTED = "LAUNCH_DETECTED"
    TRACK_UPDATE = "TRACK_UPDATE"
    #: a silent event's predicted state while no sensor holds it (no report behind it)
    TRACK_COAST = "TRACK_COAST"
    IMPACT_PREDICTED = "IMPACT_PREDICTED"
    OVERFLIGHT = "OVERFLIGHT"
    IMPACT = "IMPACT"
    TRACK_LOST = "TRACK_LOST"
    CORRECTION = "CORRECTION"
    FINAL_ASSESSMENT = "FINAL_ASSESSMENT"


#: The running picture: alerts that a newer one of the same event supersedes.
PICTURE_KINDS = frozenset({AlertKind.TRACK_UPDATE, AlertKind.TRACK_COAST})
#: Alerts a slow subscriber must never lose (only the running picture may be conflated).
CRITICAL_KINDS = frozenset(AlertKind) - PICTURE_KINDS


class ImpactArea(StrEnum):
    JPN_TERRITORY = "JPN_TERRITORY"
    KOR_TERRITORY = "KOR_TERRITORY"
    JPN_EEZ = "JPN_EEZ"
    OUTSIDE = "OUTSIDE"


class ErrorCode(StrEnum):
    """Machine-readable error codes; the close code each one carries is in ``CLOSE_CODES``."""

    MALFORMED_FRAME = "MALFORMED_FRAME"
    SCHEMA_INVALID = "SCHEMA_INVALID"
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    HELLO_REQUIRED = "HELLO_REQUIRED"
    AUTH_FAILED = "AUTH_FAILED"
    NATION_MISMATCH = "NATION_MISMATCH"
    SEQUENCE_GAP = "SEQUENCE_GAP"
    REPLAYED = "REPLAYED"
    SUPERSEDED = "SUPERSEDED"
    FRAME_TOO_LARGE = "FRAME_TOO_LARGE"
    RATE_LIMITED = "RATE_LIMITED"
    SLOW_CONSUMER = "SLOW_CONSUMER"
    BAD_REQUEST = "BAD_REQUEST"
    INTERNAL = "INTERNAL"


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    INVALID_PAYLOAD = 1007
    POLICY = 1008
    TOO_BIG = 1009
    INTERNAL = 1011
    SCHEMA_INVALID = 4000
    UNSUPPORTED_VERSION = 4001
    HELLO_REQUIRED = 4002
    AUTH_FAILED = 4003
    NATION_MISMATCH = 4004
    SEQUENCE_GAP = 4005
    SUPERSEDED = 4006
    REPLAYED = 4007
    RATE_LIMITED = 4008
    SLOW_CONSUMER = 4009
    BAD_REQUEST = 4010


CLOSE_CODES: dict[ErrorCode, CloseCode] = {
    ErrorCode.MALFORMED_FRAME: CloseCode.INVALID_PAYLOAD,
    ErrorCode.SCHEMA_INVALID: CloseCode.SCHEMA_INVALID,
    ErrorCode.UNSUPPORTED_VERSION: CloseCode.UNSUPPORTED_VERSION,
    ErrorCode.HELLO_REQUIRED: CloseCode.HELLO_REQUIRED,
    ErrorCode.AUTH_FAILED: CloseCode.AUTH_FAILED,
    ErrorCode.NATION_MISMATCH: CloseCode.NATION_MISMATCH,
    ErrorCode.SEQUENCE_GAP: CloseCode.SEQUENCE_GAP,
    ErrorCode.REPLAYED: CloseCode.REPLAYED,
    ErrorCode.SUPERSEDED: CloseCode.SUPERSEDED,
    ErrorCode.FRAME_TOO_LARGE: CloseCode.TOO_BIG,
    ErrorCode.RATE_LIMITED: CloseCode.RATE_LIMITED,
    ErrorCode.SLOW_CONSUMER: CloseCode.SLOW_CONSUMER,
    ErrorCode.BAD_REQUEST: CloseCode.BAD_REQUEST,
    ErrorCode.INTERNAL: CloseCode.INTERNAL,
}


class ProtocolError(Exception):
    """A peer broke the protocol; ``code`` says how, and the connection closes with ``close_code``."""

    def __init__(self, code: ErrorCode, message: str, seq: int | None = None) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        #: For a node: seq of the first report of the refused batch, when known.
        self.seq = seq

    @property
    def close_code(self) -> CloseCode:
        return CLOSE_CODES[self.code]


# --------------------------------------------------------------------------- models


class _Wire(BaseModel):
    """Unknown keys are refused, NaN and infinities never validate, and numbers, booleans and
    strings must arrive as themselves (no "1" for 1): fields use the Strict* types. Enums take
    their string values."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


Vec3 = Annotated[list[StrictFloat], Field(min_length=3, max_length=3)]
#: Upper triangle, row by row, of the symmetric 6x6 covariance of (x, y, z, vx, vy, vz):
#: 21 numbers in m^2, m^2/s and m^2/s^2.
CovarianceUpper = Annotated[list[StrictFloat], Field(min_length=21, max_length=21)]
Timestamp = Annotated[StrictInt, Field(ge=0, lt=1 << 63)]
Releasability = Annotated[list[Nation], Field(min_length=1, max_length=3)]


class GroundEstimate(_Wire):
    """A point on the ground (launch or impact) with its 95% uncertainty ellipse."""

    time_ns: Timestamp
    lat_deg: StrictFloat = Field(ge=-90, le=90)
    lon_deg: StrictFloat = Field(ge=-180, le=180)
    semi_major_m: StrictFloat = Field(ge=0)
    semi_minor_m: StrictFloat = Field(ge=0)
    #: Orientation of the semi-major axis, degrees clockwise from true north, [0, 180).
    orientation_deg: StrictFloat = Field(ge=0, lt=180)
    time_sigma_s: StrictFloat = Field(default=0.0, ge=0)


class TrackReport(_Wire):
    """One national track at one time of validity (modelled on a J3.6 space track / UDL MissileTrack)."""

    seq: StrictInt = Field(ge=1, lt=1 << 63)
    nation: Nation
    track_number: StrictInt = Field(ge=0, lt=1 << 32)
    #: Physical time the state is valid at; fusion dynamics use only this time.
    time_of_validity_ns: Timestamp
    #: Node wall clock when the measurement behind this update was taken. Equal to
    #: time_of_validity_ns in live operation; differs when a scenario is replayed faster.
    measured_ns: Timestamp
    position_ecef_m: Vec3
    velocity_ecef_mps: Vec3
    covariance: CovarianceUpper
    track_quality: StrictInt = Field(ge=0, le=15)
    boosting: StrictBool = False
    lost: StrictBool = False
    flight_phase: FlightPhase = FlightPhase.UNKNOWN
    launch_estimate: GroundEstimate | None = None
    impact_estimate: GroundEstimate | None = None
    data_mode: DataMode = DataMode.SIMULATED
    releasable_to: Releasability
    #: Owner-only: sensors that contributed. The relay never forwards these.
    sensor_ids: Annotated[
        list[Annotated[StrictStr, Field(max_length=64)]], Field(max_length=32)
    ] = []


class Auth(_Wire):
    """Authentication material; ``scheme`` "none" or "ed25519" (signature over the hello)."""

    scheme: Literal["none", "ed25519"] = "none"
    key_id: Annotated[StrictStr, Field(max_length=128)] = ""
    nonce: Annotated[bytes, Field(max_length=64)] = b""
    signature: Annotated[bytes, Field(max_length=128)] = b""


NodeId = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class Hello(_Wire):
    """First frame a node sends on /v1/ingest."""

    type: Literal["hello"] = "hello"
    protocol_version: StrictInt
    nation: Nation
    node_id: NodeId
    sent_ns: Timestamp
    auth: Auth = Auth()


class ReportBatch(_Wire):
    """Reports in ascending ``seq`` order."""

    type: Literal["report_batch"] = "report_batch"
    sent_ns: Timestamp
    reports: Annotated[list[TrackReport], Field(min_length=1, max_length=MAX_REPORTS_PER_BATCH)]


class SignedBatch(_Wire):
    """A report_batch as opaque msgpack ``payload`` bytes with the node's Ed25519 signature
    over them, so that any client can verify exactly the bytes it received (see PROTOCOL.md)."""

    type: Literal["signed_batch"] = "signed_batch"
    key_id: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    payload: Annotated[bytes, Field(min_length=1, max_length=MAX_NODE_FRAME_BYTES)]
    signature: Annotated[bytes, Field(min_length=64, max_length=64)]


class TimeRequest(_Wire):
    """NTP-style clock exchange, either direction: ``t1_ns`` is the sender's clock at send."""

    type: Literal["time_request"] = "time_request"
    id: StrictInt = Field(ge=0, lt=1 << 63)
    t1_ns: Timestamp


class TimeReply(_Wire):
    """Answer to a TimeRequest: ``t2_ns`` at receipt and ``t3_ns`` at send, on the answerer's clock."""

    type: Literal["time_reply"] = "time_reply"
    id: StrictInt = Field(ge=0, lt=1 << 63)
    t1_ns: Timestamp
    t2_ns: Timestamp
    t3_ns: Timestamp


class Welcome(_Wire):
    """Relay's answer to a node's hello, or its first frame to a subscriber."""

    type: Literal["welcome"] = "welcome"
    protocol_version: StrictInt = PROTOCOL_VERSION
    relay_time_ns: Timestamp
    #: For a node: the highest contiguous seq the relay holds from it (0 = none); resend after it.
    last_acked_seq: StrictInt = 0
    #: For a subscriber: the newest alert id issued so far.
    last_alert_id: StrictInt = 0
    #: For a subscriber: which numbering of alert ids this relay's are (its journal's; new when
    #: a relay starts without its predecessor's state). Echo it with ``since`` when resuming.
    relay_epoch: StrictStr = ""


class Ack(_Wire):
    """Relay to node: every report with seq <= ``acked_seq`` is accepted and durable."""

    type: Literal["ack"] = "ack"
    acked_seq: StrictInt = Field(ge=0)
    relay_received_ns: Timestamp


class ErrorMessage(_Wire):
    type: Literal["error"] = "error"
    code: ErrorCode
    message: StrictStr
    #: For a node: seq of the first report of the refused batch, when known.
    seq: StrictInt | None = None
    fatal: StrictBool = True


class FusedState(_Wire):
    time_of_validity_ns: Timestamp
    position_ecef_m: Vec3
    velocity_ecef_mps: Vec3
    covariance: CovarianceUpper
    lat_deg: StrictFloat
    lon_deg: StrictFloat
    alt_m: StrictFloat
    speed_mps: StrictFloat
    flight_phase: FlightPhase
    track_quality: StrictInt = Field(ge=0, le=15)


class Assessment(_Wire):
    """A defence-ministry style summary: apogee, range, flight time, impact area."""

    apogee_m: StrictFloat
    range_m: StrictFloat
    flight_time_s: StrictFloat
    impact_area: ImpactArea | None = None


class _Mutable(_Wire):
    """Alerts are filled in by the engine, then stamped by the relay shell."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=False)


class Hops(_Mutable):
    """When the triggering report was measured and passed each hop, on the relay's clock.

    Node times are corrected by the relay's clock-offset estimate for that node's link.
    The last hop, relay sent, is ``AlertBatch.relay_sent_ns``: stamped once per frame by the
    relay's writer for each subscriber, so that every alert is encoded only once.
    """

    measured_ns: Timestamp
    node_sent_ns: Timestamp
    relay_received_ns: Timestamp
    fused_ns: Timestamp
    source_nation: Nation
    #: The relay's estimate of the source node's clock minus its own, and that link's RTT.
    clock_offset_ns: StrictInt = 0
    clock_rtt_ns: StrictInt = 0


class Alert(_Mutable):
    type: Literal["alert"] = "alert"
    alert_id: StrictInt = Field(ge=1)
    event_id: StrictInt = Field(ge=1)
    kind: AlertKind
    issued_ns: Timestamp
    state: FusedState | None = None
    launch: GroundEstimate | None = None
    impact: GroundEstimate | None = None
    impact_area: ImpactArea | None = None
    overflight: list[Nation] = []
    assessment: Assessment | None = None
    corrects_alert_id: StrictInt | None = None
    nations: list[Nation]
    releasable_to: list[Nation]
    data_mode: DataMode
    hops: Hops
    text: StrictStr = ""


class AlertBatch(_Wire):
    """Relay to subscriber: one frame of one or more alerts, in ascending ``alert_id``."""

    type: Literal["alert_batch"] = "alert_batch"
    relay_sent_ns: Timestamp
    alerts: list[Alert]
    #: TRACK_UPDATE alerts conflated away for this subscriber since its previous frame.
    conflated: StrictInt = 0


class EventSummary(_Wire):
    """One fused event (one missile) as GET /v1/events returns it."""

    event_id: StrictInt
    status: Literal["ACTIVE", "IMPACTED", "LOST"]
    first_alert_id: StrictInt
    last_alert_id: StrictInt
    nations: list[Nation]
    state: FusedState | None = None
    launch: GroundEstimate | None = None
    impact: GroundEstimate | None = None
    impact_area: ImpactArea | None = None
    overflight: list[Nation] = []
    assessment: Assessment | None = None


NodeMessage = Annotated[
    Hello | ReportBatch | SignedBatch | TimeRequest | TimeReply, Field(discriminator="type")
]
RelayToNodeMessage = Annotated[
    Welcome | Ack | ErrorMessage | TimeRequest | TimeReply, Field(discriminator="type")
]
SubscriberMessage = Annotated[TimeRequest, Field(discriminator="type")]
RelayToSubscriberMessage = Annotated[
    Welcome | AlertBatch | ErrorMessage | TimeReply, Field(discriminator="type")
]

_node_adapter: TypeAdapter[Any] = TypeAdapter(NodeMessage)
_relay_to_node_adapter: TypeAdapter[Any] = TypeAdapter(RelayToNodeMessage)
_subscriber_adapter: TypeAdapter[Any] = TypeAdapter(SubscriberMessage)
_relay_to_subscriber_adapter: TypeAdapter[Any] = TypeAdapter(RelayToSubscriberMessage)


# ---------------------------------------------------------------------------- codec


_new = object.__new__
_set = object.__setattr__
_FIELD_NAMES: dict[type, frozenset] = {}


def construct(cls: type[BaseModel], fields: dict) -> Any:
    """A model of ``cls`` from a dict of already-valid fields, every field given, without
    validation (what ``model_construct`` does, minus its per-field default and alias handling,
    which costs microseconds a message). For values the caller has made or checked itself."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(cls.model_fields)
    m = _new(cls)
    _set(m, "__dict__", fields)
    # a copy of a frozen set of the same names is cheaper than a set of the dict's keys
    _set(m, "__pydantic_fields_set__", set(names) if len(names) == len(fields) else set(fields))
    _set(m, "__pydantic_extra__", None)
    _set(m, "__pydantic_private__", None)
    return m


def _fields(obj: Any) -> dict:
    """A nested message's fields for msgpack, which packs str and int enums as their values.
    Every model here forbids extra fields and has no aliases or serialisers, so its
    ``__dict__`` is what ``model_dump`` gives, in the same order, without the copy."""
    if isinstance(obj, BaseModel):
        return obj.__dict__
    raise TypeError(f"cannot encode {type(obj).__name__}")


_packers = threading.local()


def encode(message: BaseModel) -> bytes:
    """msgpack bytes of a message (bin type for bytes, str for text, no None-stripping): what
    ``msgpack.packb(message.model_dump(), use_bin_type=True)`` gives, at a third of the cost
    (tests compare the two). Each thread keeps one packer: making one is a quarter of the cost
    of packing an alert, and a packer is not safe to share while ``_fields`` runs Python code."""
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True, default=_fields)
    return packer.pack(message)


def encode_json(message: BaseModel) -> str:
    """JSON text of a message (bytes as base64), for JSON subscribers."""
    return message.model_dump_json()


def unpack(data: bytes) -> Any:
    """msgpack bytes to Python objects, refusing what is not a well-formed map."""
    try:
        obj = msgpack.unpackb(
            data, raw=False, strict_map_key=True, max_bin_len=MAX_NODE_FRAME_BYTES
        )
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ProtocolError(
            ErrorCode.MALFORMED_FRAME, f"frame is not valid msgpack: {exc}"
        ) from None
    if not isinstance(obj, dict):
        raise ProtocolError(
            ErrorCode.MALFORMED_FRAME, f"frame must be a msgpack map, got {type(obj).__name__}"
        )
    return obj


def _validate(adapter: TypeAdapter[Any], obj: dict[str, Any]) -> Any:
    try:
        return adapter.validate_python(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "frame"
        raise ProtocolError(
            ErrorCode.SCHEMA_INVALID,
            f"{where}: {first['msg']} ({exc.error_count()} error(s) in frame)",
        ) from None


def decode_node_message(data: bytes) -> Hello | ReportBatch | SignedBatch | TimeRequest | TimeReply:
    """Decode and validate one node → relay frame; raises ProtocolError."""
    obj = unpack(data)
    if obj.get("type") == "hello":
        version = obj.get("protocol_version")
        if isinstance(version, int) and version not in SUPPORTED_VERSIONS:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"protocol version {version} is not supported (supported: "
                f"{sorted(SUPPORTED_VERSIONS)})",
            )
    return _validate(_node_adapter, obj)


def decode_relay_to_node(data: bytes) -> Welcome | Ack | ErrorMessage | TimeRequest | TimeReply:
    return _validate(_relay_to_node_adapter, unpack(data))


def decode_subscriber_message(data: bytes | str) -> TimeRequest:
    """Decode a subscriber's frame: msgpack (binary) or JSON (text)."""
    if isinstance(data, str):
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as exc:  # deep nesting exhausts the C scanner's stack
            raise ProtocolError(
                ErrorCode.MALFORMED_FRAME, f"frame is not valid JSON: {exc}"
            ) from None
        if not isinstance(obj, dict):
            raise ProtocolError(ErrorCode.MALFORMED_FRAME, "frame must be a JSON object")
        return _validate(_subscriber_adapter, obj)
    return _validate(_subscriber_adapter, unpack(data))


def decode_relay_to_subscriber(
    data: bytes | str,
) -> Welcome | AlertBatch | ErrorMessage | TimeReply:
    """Decode one relay → subscriber frame (JSON text or msgpack binary)."""
    if isinstance(data, str):
        return _relay_to_subscriber_adapter.validate_json(data)
    return _validate(_relay_to_subscriber_adapter, unpack(data))


def covariance_from_upper(upper: list[float]) -> list[list[float]]:
    """The full 6x6 matrix from the 21-number upper triangle."""
    m = [[0.0] * 6 for _ in range(6)]
    k = 0
    for i in range(6):
        for j in range(i, 6):
            m[i][j] = m[j][i] = float(upper[k])
            k += 1
    return m


def covariance_to_upper(matrix: Any) -> list[float]:
    """The 21-number upper triangle of a 6x6 matrix (list of lists or numpy array)."""
    return [float(matrix[i][j]) for i in range(6) for j in range(i, 6)]
