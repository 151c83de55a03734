"""Synthetic national reports of ballistic missiles, for relay tests that need no simulator."""

from __future__ import annotations

import numpy as np

from warnshare.geo import ecef_acceleration, enu_rotation, geodetic_to_ecef
from warnshare.protocol import NATIONS, FlightPhase, Nation, TrackReport, covariance_to_upper

T0_NS = 1_668_734_040_000_000_000  # 2022-11-18T01:14:00Z


def ballistic_arc(
    lat_deg: float,
    lon_deg: float,
    azimuth_deg: float,
    speed_mps: float,
    elevation_deg: float,
    duration_s: float,
    dt_s: float = 1.0,
) -> np.ndarray:
    """(N, 6) ECEF states every dt from a burnt-out missile at 30 km altitude (RK4, J2)."""
    r = geodetic_to_ecef(lat_deg, lon_deg, 30_000.0)
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    enu_v = speed_mps * np.array([np.cos(el) * np.sin(az), np.cos(el) * np.cos(az), np.sin(el)])
    v = enu_v @ enu_rotation(lat_deg, lon_deg)
    states = [np.concatenate([r, v])]
    x = states[0]
    for _ in range(int(duration_s / dt_s)):

        def f(s: np.ndarray) -> np.ndarray:
            return np.concatenate([s[3:], ecef_acceleration(s[:3], s[3:])])

        k1 = f(x)
        k2 = f(x + 0.5 * dt_s * k1)
        k3 = f(x + 0.5 * dt_s * k2)
        k4 = f(x + dt_s * k3)
        x = x + dt_s / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        states.append(x)
    return np.array(states)


def national_reports(
    states: np.ndarray,
    nation: Nation,
    *,
    track_number: int,
    first_seq: int = 1,
    t0_ns: int = T0_NS,
    every: int = 1,
    sigma_m: float = 300.0,
    sigma_v: float = 30.0,
    seed: int = 0,
    measured_base_ns: int | None = None,
) -> list[TrackReport]:
    """Noisy reports of one nation every ``every`` states, seq from ``first_seq``; all
    measured at ``measured_base_ns`` when given (a burst), else at their validity time."""
    rng = np.random.default_rng(seed)
    cov = np.diag([sigma_m**2] * 3 + [sigma_v**2] * 3)
    upper = covariance_to_upper(cov)
    out = []
    seq = first_seq
    for i in range(0, len(states), every):
        noisy = states[i] + np.concatenate([rng.normal(0, sigma_m, 3), rng.normal(0, sigma_v, 3)])
        tov = t0_ns + i * 1_000_000_000
        out.append(
            TrackReport(
                seq=seq,
                nation=nation,
                track_number=track_number,
                time_of_validity_ns=tov,
                measured_ns=measured_base_ns if measured_base_ns else tov,
                position_ecef_m=[float(v) for v in noisy[:3]],
                velocity_ecef_mps=[float(v) for v in noisy[3:]],
                covariance=upper,
                track_quality=12,
                flight_phase=FlightPhase.MIDCOURSE,
                releasable_to=list(NATIONS),
            )
        )
        seq += 1
    return out
