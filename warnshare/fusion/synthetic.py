"""Synthetic truth and national track reports from warnshare.geo's J2 dynamics, for tests and
for the benchmark's fallback when the simulator is not installed.

Truth: a constant-thrust boost at a fixed azimuth and elevation, then ballistic J2 flight to
the ground. Reports: truth plus a per-nation registration bias, plus errors drawn from the
reported covariance, part of them shared between nations (common sensors), so that the
nations' errors are correlated the way the fusion engine has to assume they may be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from warnshare import geo
from warnshare.fusion.dynamics import accel_batch, altitude_approx
from warnshare.protocol import NATIONS, FlightPhase, Nation, TrackReport, covariance_to_upper

_NS = 1_000_000_000


@dataclass(frozen=True)
class Launch:
    lat_deg: float
    lon_deg: float
    azimuth_deg: float
    launch_ns: int
    burn_s: float = 60.0
    thrust_mps2: float = 35.0
    elevation_deg: float = 50.0


@dataclass(frozen=True)
class Truth:
    t_ns: NDArray  # (n,)
    states: NDArray  # (n, 6) ECEF
    boosting: NDArray  # (n,) bool

    def at(self, t_ns: int) -> NDArray:
        """Linear interpolation of the state at ``t_ns`` (truth is sampled at 0.1 s)."""
        i = int(np.searchsorted(self.t_ns, t_ns))
        i = min(max(i, 1), len(self.t_ns) - 1)
        u = (t_ns - self.t_ns[i - 1]) / (self.t_ns[i] - self.t_ns[i - 1])
        return (1 - u) * self.states[i - 1] + u * self.states[i]

    @property
    def impact(self) -> tuple[int, float, float]:
        lat, lon, _ = geo.ecef_to_geodetic(self.states[-1, :3])
        return int(self.t_ns[-1]), float(lat), float(lon)


def fly(launch: Launch, dt: float = 0.1, max_s: float = 4000.0) -> Truth:
    """Integrate one missile's flight from the pad to the ground (RK4, step ``dt``)."""
    r0 = geo.geodetic_to_ecef(launch.lat_deg, launch.lon_deg, 0.0)
    thrust_dir = geo.aer_to_enu(launch.azimuth_deg, launch.elevation_deg, 1.0) @ geo.enu_rotation(
        launch.lat_deg, launch.lon_deg
    )
    s = np.concatenate([r0, np.zeros(3)])[None, :]
    ts, states, boost = [0.0], [s[0].copy()], [True]
    t = 0.0

    def f(u: NDArray, tt: float) -> NDArray:
        a = accel_batch(u[:, :3], u[:, 3:])
        if tt < launch.burn_s:
            a = a + launch.thrust_mps2 * thrust_dir
        return np.concatenate([u[:, 3:], a], axis=1)

    while t < max_s:
        k1 = f(s, t)
        k2 = f(s + 0.5 * dt * k1, t + 0.5 * dt)
        k3 = f(s + 0.5 * dt * k2, t + 0.5 * dt)
        k4 = f(s + dt * k3, t + dt)
        s = s + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        t += dt
        alt = float(altitude_approx(s[:, :3])[0])
        ts.append(t)
        states.append(s[0].copy())
        boost.append(t < launch.burn_s)
        if alt < 0.0 and t > launch.burn_s:
            break
    t_ns = launch.launch_ns + np.round(np.array(ts) * _NS).astype(np.int64)
    return Truth(t_ns, np.array(states), np.array(boost))


@dataclass(frozen=True)
class NationFeed:
    """One nation's tracks as a radar at ``site`` would give them: ``pos_sigma_m`` along the
    line of sight and ``cross_factor`` times more across it."""

    nation: Nation
    period_s: float = 1.0
    pos_sigma_m: float = 150.0
    vel_sigma_mps: float = 8.0
    bias_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    #: Detection delay after launch (s) and how far above ground the nation stops seeing it (m).
    first_s: float = 10.0
    floor_alt_m: float = 5_000.0
    track_offset: int = 100
    site_lat_deg: float = 36.0
    site_lon_deg: float = 138.0
    cross_factor: float = 3.0


def feed_covariance(feed: NationFeed, position: NDArray) -> NDArray:
    """6x6 covariance of one report: elongated across the sensor's line of sight."""
    site = geo.geodetic_to_ecef(feed.site_lat_deg, feed.site_lon_deg, 0.0)
    los = position - site
    los /= np.linalg.norm(los)
    a = np.array([0.0, 0.0, 1.0]) if abs(los[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    c1 = np.cross(los, a)
    c1 /= np.linalg.norm(c1)
    c2 = np.cross(los, c1)
    r = np.stack([los, c1, c2], axis=1)
    sp = feed.pos_sigma_m
    sc = feed.pos_sigma_m * feed.cross_factor
    cov = np.zeros((6, 6))
    cov[:3, :3] = r @ np.diag([sp * sp, sc * sc, sc * sc]) @ r.T
    cov[3:, 3:] = np.eye(3) * feed.vel_sigma_mps**2
    return cov


def reports(
    truths: list[Truth],
    feeds: list[NationFeed],
    seed: int,
    *,
    shared_fraction: float = 0.5,
    mode_releasable: tuple[Nation, ...] = NATIONS,
) -> list[tuple[int, TrackReport]]:
    """All nations' reports of all missiles, as (arrival order key ns, report), sorted by time.

    Each error is sqrt(shared) * common + sqrt(1 - shared) * own, with both parts drawn from the
    reported covariance: every national report is consistent alone, and nations are correlated.
    """
    rng = np.random.default_rng(seed)
    out: list[tuple[int, TrackReport]] = []
    seq = {f.nation: 0 for f in feeds}
    for m, truth in enumerate(truths):
        t0 = int(truth.t_ns[0])
        t_end = int(truth.t_ns[-1])
        # common error process per missile and time step (keyed by whole report period)
        common: dict[int, NDArray] = {}
        for f in feeds:
            t = t0 + int(f.first_s * _NS)
            while t < t_end:
                x = truth.at(t)
                cov = feed_covariance(f, x[:3])
                chol = np.linalg.cholesky(cov)
                upper = covariance_to_upper(cov)
                alt = float(altitude_approx(x[None, :3])[0])
                if alt < f.floor_alt_m and t > t0 + int(120 * _NS):
                    break
                k = t // _NS
                if k not in common:
                    common[k] = rng.standard_normal(6)
                e = math.sqrt(shared_fraction) * common[k] + math.sqrt(1 - shared_fraction) * rng.standard_normal(6)
                z = x + chol @ e
                z[:3] += np.asarray(f.bias_m)
                seq[f.nation] += 1
                boosting = bool(truth.boosting[min(int(np.searchsorted(truth.t_ns, t)), len(truth.t_ns) - 1)])
                rep = TrackReport(
                    seq=seq[f.nation],
                    nation=f.nation,
                    track_number=f.track_offset + m,
                    time_of_validity_ns=t,
                    measured_ns=t,
                    position_ecef_m=z[:3].tolist(),
                    velocity_ecef_mps=z[3:].tolist(),
                    covariance=upper,
                    track_quality=10,
                    boosting=boosting,
                    flight_phase=FlightPhase.BOOST if boosting else FlightPhase.MIDCOURSE,
                    releasable_to=list(mode_releasable),
                )
                out.append((t, rep))
                t += int(f.period_s * _NS)
    out.sort(key=lambda p: (p[0], p[1].nation, p[1].track_number))
    return out


#: USA: a forward radar in northern Japan; JPN: a radar on the Sea of Japan coast; KOR: a radar
#: south of Seoul. Biases are a few tens of metres, as after routine registration.
DEFAULT_FEEDS = (
    NationFeed(Nation.USA, 1.0, 60.0, 10.0, (80.0, -60.0, 40.0), 8.0, 20_000.0, 500, 40.8, 140.3, 4.0),
    NationFeed(Nation.JPN, 1.0, 50.0, 8.0, (-70.0, 50.0, 30.0), 12.0, 5_000.0, 1000, 37.9, 139.0, 4.0),
    NationFeed(Nation.KOR, 1.0, 40.0, 6.0, (40.0, 90.0, -50.0), 5.0, 5_000.0, 7000, 36.9, 127.1, 4.0),
)
