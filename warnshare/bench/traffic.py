"""Synthetic benchmark traffic: ballistic missiles reported by every nation on an open-loop schedule.

Each report is packed to msgpack bytes before the run starts, so sending costs the load
generator a concatenation, not an encode; a frame of whatever reports are due is spliced
together at send time (`report_batch_frame`). A report's ``measured_ns`` is its *intended*
send time, which is what latency is measured from.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
from numpy.typing import NDArray

from warnshare.geo import ecef_acceleration, enu_rotation, geodetic_to_ecef
from warnshare.protocol import (
    MAX_REPORTS_PER_BATCH,
    NATIONS,
    DataMode,
    FlightPhase,
    Nation,
    ReportBatch,
    TrackReport,
)

#: Reported 1-sigma position and velocity uncertainty (diagonal covariance).
REPORT_SIGMA_POS_M = 200.0
REPORT_SIGMA_VEL_MPS = 20.0
#: Actual noise added to truth: a fraction of the reported sigma, so reports are consistent.
NOISE_POS_M = 60.0
NOISE_VEL_MPS = 6.0
#: Launch area (the arcs fan out from here toward the sea east of it).
LAUNCH_LAT_DEG = 39.0
LAUNCH_LON_DEG = 125.7
#: Integration step of the truth trajectories; reports interpolate between steps.
TRUTH_STEP_S = 0.5
#: The schedule starts this long after the arcs' initial state (missiles are in midcourse).
ARC_LEAD_S = 30.0

_COVARIANCE_UPPER: list[float] = [
    (REPORT_SIGMA_POS_M**2 if i < 3 else REPORT_SIGMA_VEL_MPS**2) if i == j else 0.0
    for i in range(6)
    for j in range(i, 6)
]


def _rk4_arcs(r0: NDArray, v0: NDArray, steps: int, dt: float) -> tuple[NDArray, NDArray]:
    """Positions and velocities, shape (steps + 1, K, 3), of K bodies under J2 gravity in ECEF."""
    pos = np.empty((steps + 1, *r0.shape))
    vel = np.empty_like(pos)
    pos[0], vel[0] = r0, v0
    r, v = r0.copy(), v0.copy()
    for i in range(steps):
        k1r, k1v = v, ecef_acceleration(r, v)
        k2r, k2v = v + 0.5 * dt * k1v, ecef_acceleration(r + 0.5 * dt * k1r, v + 0.5 * dt * k1v)
        k3r, k3v = v + 0.5 * dt * k2v, ecef_acceleration(r + 0.5 * dt * k2r, v + 0.5 * dt * k2v)
        k4r, k4v = v + dt * k3v, ecef_acceleration(r + dt * k3r, v + dt * k3v)
        r = r + dt / 6.0 * (k1r + 2 * k2r + 2 * k3r + k4r)
        v = v + dt / 6.0 * (k1v + 2 * k2v + 2 * k3v + k4v)
        pos[i + 1], vel[i + 1] = r, v
    return pos, vel


@dataclass(frozen=True)
class Arcs:
    """Truth of K missiles sampled every ``step_s`` from ``t0_ns`` (the arcs' initial state)."""

    t0_ns: int
    step_s: float
    pos: NDArray  # (steps + 1, K, 3)
    vel: NDArray

    @property
    def count(self) -> int:
        return int(self.pos.shape[1])

    def state(self, missile: NDArray, t_ns: NDArray) -> tuple[NDArray, NDArray]:
        """Position and velocity of ``missile[i]`` at ``t_ns[i]`` (cubic Hermite in position)."""
        t = (np.asarray(t_ns, dtype=np.int64) - self.t0_ns) / 1e9
        i = np.clip((t // self.step_s).astype(np.int64), 0, self.pos.shape[0] - 2)
        h = self.step_s
        s = ((t - i * h) / h)[:, None]
        p0, p1 = self.pos[i, missile], self.pos[i + 1, missile]
        v0, v1 = self.vel[i, missile], self.vel[i + 1, missile]
        s2, s3 = s * s, s * s * s
        pos = (
            (2 * s3 - 3 * s2 + 1) * p0
            + (s3 - 2 * s2 + s) * h * v0
            + (-2 * s3 + 3 * s2) * p1
            + (s3 - s2) * h * v1
        )
        vel = (
            (6 * s2 - 6 * s) / h * p0
            + (3 * s2 - 4 * s + 1) * v0
            + (-6 * s2 + 6 * s) / h * p1
            + (3 * s2 - 2 * s) * v1
        )
        return pos, vel


def make_arcs(missiles: int, t0_ns: int, horizon_s: float, seed: int = 1) -> Arcs:
    """K midcourse arcs fanned out eastward from the launch area, starting at ``t0_ns``.

    Each starts 80-120 km up at about 3.5 km/s, climbing at 35-45 degrees: a medium-range
    flight of several minutes, so every arc is still in the air after ``horizon_s``.
    """
    rng = np.random.default_rng(seed)
    r0 = np.empty((missiles, 3))
    v0 = np.empty((missiles, 3))
    for k in range(missiles):
        az = math.radians(60.0 + 50.0 * (k + 0.5) / missiles + rng.uniform(-2, 2))
        el = math.radians(rng.uniform(35.0, 45.0))
        speed = rng.uniform(3300.0, 3700.0)
        lat = LAUNCH_LAT_DEG + rng.uniform(-0.5, 0.5)
        lon = LAUNCH_LON_DEG + rng.uniform(-0.5, 0.5)
        r0[k] = geodetic_to_ecef(lat, lon, rng.uniform(80e3, 120e3))
        enu = np.array([math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)])
        v0[k] = speed * (enu @ enu_rotation(lat, lon))
    steps = int(math.ceil(horizon_s / TRUTH_STEP_S)) + 2
    pos, vel = _rk4_arcs(r0, v0, steps, TRUTH_STEP_S)
    return Arcs(t0_ns=t0_ns, step_s=TRUTH_STEP_S, pos=pos, vel=vel)


@dataclass
class NodeSchedule:
    """One node's reports: intended send times (ascending) and their packed msgpack bytes."""

    nation: Nation
    intended_ns: NDArray  # int64, one per report
    packed: list[bytes]
    #: The node's clock minus the true one: its reports' times are ``intended_ns + skew_ns``.
    skew_ns: int = 0

    def __len__(self) -> int:
        return len(self.packed)


@dataclass
class Traffic:
    """Every node's schedule for one run, plus a lookup from (nation, measured_ns) to report."""

    start_ns: int
    nodes: list[NodeSchedule]

    @property
    def total(self) -> int:
        return sum(len(n) for n in self.nodes)

    def index_map(self) -> dict[int, int]:
        """Key ``measured_ns * 4 + nation_index`` to a global report index 0..total-1."""
        out: dict[int, int] = {}
        base = 0
        for node in self.nodes:
            n_idx = NATIONS.index(node.nation)
            for j, t in enumerate(node.intended_ns.tolist()):
                out[t * 4 + n_idx] = base + j
            base += len(node)
        return out

    def intended_by_index(self) -> NDArray:
        return np.concatenate([n.intended_ns for n in self.nodes])


def schedule_times(start_ns: int, rate_per_s: float, duration_s: float, nodes: int) -> list[NDArray]:
    """Intended send times per node: a constant total rate, the nodes interleaved evenly."""
    period_ns = nodes * 1e9 / rate_per_s
    count = int(round(rate_per_s * duration_s / nodes))
    out = []
    for n in range(nodes):
        j = np.arange(count, dtype=np.float64)
        out.append(start_ns + np.round((j + n / nodes) * period_ns).astype(np.int64))
    return out


def make_traffic(
    start_ns: int,
    rate_per_s: float,
    duration_s: float,
    nodes: int = 3,
    missiles: int = 8,
    seed: int = 1,
    skew_ns: Sequence[int] = (),
) -> Traffic:
    """Pack every report of a run: node ``n`` is nation ``NATIONS[n % 3]`` (node_id distinguishes).

    ``skew_ns[n]`` is how far node ``n``'s clock is ahead: its reports carry measured times and
    times of validity on that clock (the schedule's intended send times stay on the true one)."""
    if not 1 <= nodes <= len(NATIONS):
        raise ValueError(f"nodes must be 1..{len(NATIONS)} (one per nation)")
    arcs = make_arcs(missiles, start_ns - int(ARC_LEAD_S * 1e9), ARC_LEAD_S + duration_s + 5.0, seed)
    rng = np.random.default_rng(seed + 1)
    out = []
    for n, times in enumerate(schedule_times(start_ns, rate_per_s, duration_s, nodes)):
        nation = NATIONS[n]
        missile = np.arange(times.size) % missiles
        pos, vel = arcs.state(missile, times)
        pos = pos + rng.normal(0.0, NOISE_POS_M, pos.shape)
        vel = vel + rng.normal(0.0, NOISE_VEL_MPS, vel.shape)
        skew = int(skew_ns[n]) if n < len(skew_ns) else 0
        packed = [
            pack_report(
                seq=j + 1,
                nation=nation,
                track_number=100 * (n + 1) + int(missile[j]),
                time_ns=t + skew,
                position=p,
                velocity=v,
            )
            for j, (t, p, v) in enumerate(zip(times.tolist(), pos.tolist(), vel.tolist(), strict=True))
        ]
        out.append(NodeSchedule(nation=nation, intended_ns=times, packed=packed, skew_ns=skew))
    return Traffic(start_ns=start_ns, nodes=out)


_RELEASABLE = [n.value for n in NATIONS]


def _report_template() -> dict[str, Any]:
    """Every TrackReport field in wire order, from a validated report (so new optional fields
    of the protocol appear here with their defaults)."""
    sample = TrackReport(
        seq=1,
        nation=Nation.USA,
        track_number=1,
        time_of_validity_ns=1,
        measured_ns=1,
        position_ecef_m=[0.0, 0.0, 0.0],
        velocity_ecef_mps=[0.0, 0.0, 0.0],
        covariance=_COVARIANCE_UPPER,
        track_quality=12,
        flight_phase=FlightPhase.MIDCOURSE,
        data_mode=DataMode.SIMULATED,
        releasable_to=list(NATIONS),
    )
    return sample.model_dump(mode="python")


_REPORT_TEMPLATE = _report_template()


def pack_report(
    seq: int, nation: Nation, track_number: int, time_ns: int, position: list[float], velocity: list[float]
) -> bytes:
    """msgpack bytes of one TrackReport, byte for byte what ``encode(TrackReport(...))`` gives."""
    d = dict(_REPORT_TEMPLATE)
    d["seq"] = seq
    d["nation"] = nation
    d["track_number"] = track_number
    d["time_of_validity_ns"] = time_ns
    d["measured_ns"] = time_ns
    d["position_ecef_m"] = position
    d["velocity_ecef_mps"] = velocity
    return msgpack.packb(d, use_bin_type=True)


def _batch_parts() -> tuple[bytes, bytes, bytes]:
    """(before sent_ns value, between it and the reports array, after the reports) of a
    ReportBatch, following the model's field order and defaults."""
    fields = ReportBatch.model_fields
    parts: list[bytes] = [bytes([0x80 | len(fields)])]
    cut: list[int] = []
    for name, info in fields.items():
        parts.append(msgpack.packb(name))
        if name in ("sent_ns", "reports"):
            cut.append(len(parts))
            parts.append(b"")
        else:
            parts.append(msgpack.packb(info.get_default(call_default_factory=True), use_bin_type=True))
    if len(cut) != 2 or cut[0] > cut[1]:
        raise RuntimeError("ReportBatch no longer has sent_ns before reports")
    return b"".join(parts[: cut[0]]), b"".join(parts[cut[0] + 1 : cut[1]]), b"".join(parts[cut[1] + 1 :])


_BATCH_HEAD, _BATCH_MID, _BATCH_TAIL = _batch_parts()


def report_batch_frame(sent_ns: int, packed_reports: list[bytes]) -> bytes:
    """A ReportBatch frame spliced from pre-packed reports (same bytes as ``encode(ReportBatch)``)."""
    n = len(packed_reports)
    if not 1 <= n <= MAX_REPORTS_PER_BATCH:
        raise ValueError(f"a batch holds 1..{MAX_REPORTS_PER_BATCH} reports, not {n}")
    header = bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack(">H", n)
    return b"".join((_BATCH_HEAD, msgpack.packb(sent_ns), _BATCH_MID, header, *packed_reports, _BATCH_TAIL))
