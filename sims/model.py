"""The simulator's public records: scenarios, faults, truth trajectories, measurements, national tracks.

Plain frozen data, SI units and UTC nanoseconds, so the node, the metrics and the tests can all
read them without importing the physics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

NATIONS: tuple[str, ...] = ("USA", "JPN", "KOR")
FAULT_KINDS: frozenset[str] = frozenset(
    {"node_outage", "link_delay", "link_loss", "link_partition", "clock_skew", "spoof", "replay"}
)
FLIGHT_PHASES: frozenset[str] = frozenset({"BOOST", "MIDCOURSE", "TERMINAL", "UNKNOWN"})


class ScenarioError(ValueError):
    """A scenario file is malformed or names something unknown."""


@dataclass(frozen=True)
class Fault:
    """A fault the node applies between ``start_s`` and ``end_s`` (scenario seconds)."""

    kind: str
    nation: str
    start_s: float
    end_s: float
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ScenarioError(f"unknown fault kind {self.kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if self.nation not in NATIONS:
            raise ScenarioError(f"fault nation {self.nation!r} is not one of {NATIONS}")
        if not self.end_s >= self.start_s:
            raise ScenarioError(f"fault {self.kind} ends ({self.end_s}) before it starts ({self.start_s})")


@dataclass(frozen=True)
class LaunchSpec:
    """One launch as a scenario states it; the trajectory solver turns it into a flight.

    Direction comes from ``azimuth_deg`` or from the aim point; shape from the published
    ``apogee_m`` and ``range_m`` when given, otherwise from the class's ``profile``.
    """

    missile_id: str
    missile_class: str
    launch_lat_deg: float
    launch_lon_deg: float
    launch_time_s: float = 0.0
    launch_alt_m: float = 0.0
    azimuth_deg: float | None = None
    aim_lat_deg: float | None = None
    aim_lon_deg: float | None = None
    apogee_m: float | None = None
    range_m: float | None = None
    profile: str | None = None  # "minimum-energy" | "lofted" | "depressed"
    failure_s: float | None = None  # break-up this many seconds after launch
    bank_deg: float | None = None  # lateral manoeuvre of a glide vehicle (+ = right)
    published_flight_time_s: float | None = None
    site_name: str = ""


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    start_ns: int  # UTC ns of scenario t = 0
    duration_s: float
    missiles: tuple[LaunchSpec, ...]
    faults: list[Fault] = field(default_factory=list)
    unavailable_sensors: tuple[str, ...] = ()
    source: str = ""  # path of the TOML it came from


@dataclass(frozen=True)
class Trajectory:
    """Truth of one missile, sampled every second from launch to impact (ECEF, rotating Earth)."""

    missile_id: str
    missile_class: str
    times_ns: NDArray  # (N,) int64 UTC ns
    position_ecef_m: NDArray  # (N, 3)
    velocity_ecef_mps: NDArray  # (N, 3)
    thrusting: NDArray  # (N,) bool: an engine burns (plume visible)
    launch_lat_deg: float
    launch_lon_deg: float
    impact_lat_deg: float
    impact_lon_deg: float
    launch_ns: int
    impact_ns: int
    apogee_m: float
    range_m: float
    flight_time_s: float
    burnout_ns: int  # end of the last burn
    breakup_ns: int | None = None  # a boost failure's break-up; impact is then where debris falls
    target_apogee_m: float | None = None
    target_range_m: float | None = None
    published_flight_time_s: float | None = None

    def geodetic(self) -> tuple[NDArray, NDArray, NDArray]:
        """(lat_deg, lon_deg, alt_m) of every sample (WGS84)."""
        from warnshare.geo import ecef_to_geodetic

        return ecef_to_geodetic(self.position_ecef_m)

    def state_at(self, t_ns: NDArray | int) -> tuple[NDArray, NDArray]:
        """Position and velocity at UTC ns time(s), cubic Hermite between the samples.

        Times outside [launch, impact] are clamped to the ends.
        """
        t = np.atleast_1d(np.asarray(t_ns, dtype=np.int64))
        ts = self.times_ns
        i = np.clip(np.searchsorted(ts, t, side="right") - 1, 0, len(ts) - 2)
        h = (ts[i + 1] - ts[i]).astype(float) * 1e-9
        s = np.clip((t - ts[i]).astype(float) * 1e-9 / h, 0.0, 1.0)[:, None]
        hh = h[:, None]
        p0, p1 = self.position_ecef_m[i], self.position_ecef_m[i + 1]
        v0, v1 = self.velocity_ecef_mps[i], self.velocity_ecef_mps[i + 1]
        s2, s3 = s * s, s * s * s
        pos = (
            (2 * s3 - 3 * s2 + 1) * p0
            + (s3 - 2 * s2 + s) * hh * v0
            + (-2 * s3 + 3 * s2) * p1
            + (s3 - s2) * hh * v1
        )
        vel = ((6 * s2 - 6 * s) * p0 + (3 * s2 - 4 * s + 1) * hh * v0 + (-6 * s2 + 6 * s) * p1 + (3 * s2 - 2 * s) * hh * v1) / hh
        return pos, vel


@dataclass(frozen=True, slots=True)
class NationalTrackUpdate:
    """One output of a nation's tracker: what that nation's node publishes."""

    nation: str
    track_number: int
    missile_id: str  # truth label for metrics; never published
    time_of_validity_ns: int
    available_ns: int
    position_ecef_m: tuple[float, float, float]
    velocity_ecef_mps: tuple[float, float, float]
    covariance: NDArray  # (6, 6), m and m/s
    track_quality: int
    boosting: bool
    lost: bool
    flight_phase: str
    launch_estimate: dict | None
    impact_estimate: dict | None
    sensor_ids: tuple[str, ...]


@dataclass(frozen=True)
class MeasurementSet:
    """Every report of one sensor, in the sensor's own coordinates, sorted by time.

    ``values`` columns: radar -> (range_m, azimuth_deg, elevation_deg) from the site's ENU frame;
    space_ir -> (latitude_deg, longitude_deg, altitude_m) of the plume's coarse stereo fix.
    ``sigma`` has the matching 1-sigma noise the sensor reports with each value. ``truth_id`` is
    the missile a report came from, or "" for a false alarm.
    """

    sensor_id: str
    nation: str
    kind: str  # "radar" | "space_ir"
    site_lat_deg: float
    site_lon_deg: float
    site_alt_m: float
    times_ns: NDArray  # (N,) int64
    values: NDArray  # (N, 3)
    sigma: NDArray  # (N, 3)
    truth_id: NDArray  # (N,) str

    def __len__(self) -> int:
        return len(self.times_ns)


@dataclass
class SimResult:
    scenario: Scenario
    seed: int
    truth: dict[str, Trajectory]
    measurements: dict[str, MeasurementSet]
    national_tracks: dict[str, list[NationalTrackUpdate]]
