"""simulate(): truth, each nation's sensor measurements and national tracks for one scenario."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .model import NATIONS, NationalTrackUpdate, Scenario, SimResult, Trajectory
from .truth import NS, fly_launch


def _simple_tracks(nation: str, truth: dict[str, Trajectory], seed: int) -> list[NationalTrackUpdate]:
    """Stand-in tracker: truth at 1 Hz plus noise, after a start-up delay (replaced by tracker.py)."""
    rng = np.random.default_rng([seed, NATIONS.index(nation)])
    out: list[NationalTrackUpdate] = []
    sigma_p, sigma_v = 300.0, 30.0
    cov = np.diag([sigma_p**2] * 3 + [sigma_v**2] * 3)
    for k, (mid, tr) in enumerate(sorted(truth.items())):
        idx = np.arange(20, len(tr.times_ns))
        for n, i in enumerate(idx):
            p = tr.position_ecef_m[i] + rng.normal(0, sigma_p, 3)
            v = tr.velocity_ecef_mps[i] + rng.normal(0, sigma_v, 3)
            t = int(tr.times_ns[i])
            out.append(NationalTrackUpdate(
                nation=nation, track_number=k + 1, missile_id=mid, time_of_validity_ns=t,
                available_ns=t + NS, position_ecef_m=tuple(map(float, p)),
                velocity_ecef_mps=tuple(map(float, v)), covariance=cov.copy(), track_quality=10,
                boosting=bool(tr.thrusting[i]), lost=n == len(idx) - 1,
                flight_phase="BOOST" if tr.thrusting[i] else "MIDCOURSE", launch_estimate=None,
                impact_estimate=None, sensor_ids=(f"{nation}-SIM",)))
    out.sort(key=lambda u: (u.available_ns, u.track_number))
    return out


def build_truth(scenario: Scenario) -> dict[str, Trajectory]:
    return {m.missile_id: fly_launch(m, scenario.start_ns) for m in scenario.missiles}


def simulate(scenario: Scenario, seed: int = 0, nations: Iterable[str] | None = None) -> SimResult:
    """Fly the scenario and run the requested nations' sensors and trackers (all three if None).

    Deterministic: the same scenario, seed and nations give an identical result.
    """
    wanted = list(NATIONS) if nations is None else [n for n in NATIONS if n in set(nations)]
    truth = build_truth(scenario)
    tracks = {n: _simple_tracks(n, truth, seed) for n in wanted}
    return SimResult(scenario=scenario, seed=seed, truth=truth, measurements={}, national_tracks=tracks)
