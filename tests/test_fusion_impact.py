"""Impact ellipse against simulated flights: it covers a lifting body's glide, and it does not
widen for a steep ballistic dive."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sims.calibrate import nominal_flight
from sims.catalogue import missile_class
from warnshare import geo
from warnshare.fusion import dynamics, impact

#: A fused state's covariance of the size the salvo's fused tracks have: 150 m, 10 m/s.
P = np.diag([150.0**2] * 3 + [10.0**2] * 3)


def _states(name: str, every_s: float = 5.0) -> tuple[list[tuple[float, np.ndarray]], object]:
    """(altitude m, ECEF state) every ``every_s`` after burn-out + 10 s to 10 km on the way
    down, and the flight."""
    f = nominal_flight(missile_class(name))
    out = []
    t_next = f.burnout_s + 10.0
    for t, pos, vel in zip(f.t, f.pos, f.vel, strict=True):
        if t < t_next:
            continue
        _, _, alt = geo.ecef_to_geodetic(pos)
        if float(pos @ vel) < 0.0 and float(alt) < 10e3:
            break
        out.append((float(alt), np.concatenate([pos, vel])))
        t_next = t + every_s
    return out, f


def _phases(states):
    """Each state's (climbing, flight path angle deg)."""
    for alt, x in states:
        up = x[:3] / np.linalg.norm(x[:3])
        v = x[3:]
        yield alt, x, math.degrees(math.asin(float(up @ v) / float(np.linalg.norm(v))))


def test_lifting_glide_ellipse_covers_its_true_impact():
    # KN-23: a depressed arc, then a pull-up glide below 50 km that flies ~100+ km beyond the
    # vacuum arc; the vacuum prediction from a state near the pull-up falls that much short
    states, f = _states("kn-23")
    assert f.range_m > 600e3
    short = []
    for alt, x, gamma in _phases(states):
        gp = impact.predict_impact(x, P, 0, 3000.0)
        assert gp is not None
        miss = geo.great_circle_distance_m(gp.lat_deg, gp.lon_deg, f.impact_lat_deg, f.impact_lon_deg)
        if gamma < 0.0 and 20e3 < alt < 60e3:
            short.append(miss)
        assert gp.contains(f.impact_lat_deg, f.impact_lon_deg), (alt, gamma, miss, gp.semi_major_m)
    # the case that matters was exercised: descending states whose vacuum impact is far short
    assert short and max(short) > 80e3


@pytest.mark.parametrize("name", ["kn-23", "kn-25"])
def test_impact_time_sigma_covers_the_flight_time_the_glide_and_drag_add(name):
    # drag and a glide both make the missile arrive later than the vacuum arc; the along-track
    # model error, flown at half the vacuum arrival speed or less, must cover that in time too
    f = nominal_flight(missile_class(name))
    z = []
    for t, pos, vel in zip(f.t, f.pos, f.vel, strict=True):
        _, _, alt = geo.ecef_to_geodetic(pos)
        if t < f.burnout_s + 10.0 or (float(pos @ vel) < 0.0 and float(alt) < 10e3):
            continue
        gp = impact.predict_impact(np.concatenate([pos, vel]), P, int(t * 1e9), 3000.0)
        assert gp is not None
        z.append((gp.time_ns / 1e9 - f.flight_time_s) / gp.time_sigma_s)
    z = np.abs(np.array(z))
    assert len(z) > 20 and np.mean(z <= 1.96) >= 0.95, np.percentile(z, [50, 90, 100])


def test_steep_ballistic_dive_gets_no_glide_allowance():
    # KN-25: no lift; below ~60 km on the way down it dives steeper than the glide limit, where
    # the model error is the vacuum path term alone, and the ellipse still covers the truth
    states, f = _states("kn-25")
    dives = 0
    for _alt, x, gamma in _phases(states):
        gp = impact.predict_impact(x, P, 0, 3000.0)
        assert gp is not None and gp.contains(f.impact_lat_deg, f.impact_lon_deg)
        if gamma < -impact.GLIDE_MAX_DIVE_DEG:
            dives += 1
            assert impact.energy_height_m(x) == 0.0
            _, s_hit, _, path = dynamics.fly_to_ground(x[None, :], max_time_s=3000.0, record_first=True)
            lat0, lon0, _ = dynamics.geodetic(*s_hit[0, :3])
            _, _, alt_p = geo.ecef_to_geodetic(path)
            with_x = impact.model_error_en(path, lat0, lon0, alt_p, x)[0]
            without = impact.model_error_en(path, lat0, lon0, alt_p)[0]
            assert np.array_equal(with_x, without)
    assert dives >= 3


@pytest.mark.parametrize("alt_km, gamma_deg, speed, expect", [
    (40.0, -30.0, 2000.0, False),  # a steep dive through dense air
    (40.0, -10.0, 2000.0, True),  # a shallow descent, or a glide under way
    (40.0, 5.0, 2000.0, True),  # a depressed arc, climbing shallowly
    (40.0, 35.0, 2000.0, False),  # climbing steeply: it comes down as steeply
    (60.0, -4.0, 2400.0, True),  # a depressed arc's descent: ~8 deg at 50 km
    (90.0, -1.0, 1500.0, False),  # past a minimum-energy apogee: ~30 deg by 50 km
])
def test_energy_height_applies_to_arcs_entering_the_air_shallowly(alt_km, gamma_deg, speed, expect):
    pos = np.asarray(geo.geodetic_to_ecef(38.0, 131.0, alt_km * 1e3), dtype=float).ravel()
    up = pos / np.linalg.norm(pos)
    east = np.asarray(geo.enu_rotation(38.0, 131.0)[0], dtype=float)
    g = math.radians(gamma_deg)
    v = speed * (math.cos(g) * east + math.sin(g) * up)
    eh = impact.energy_height_m(np.concatenate([pos, v]))
    if expect:
        assert eh == pytest.approx(alt_km * 1e3 + speed**2 / (2 * 9.80665), rel=1e-3)
    else:
        assert eh == 0.0
    # above the atmosphere the vacuum arc is right: no allowance
    high = np.asarray(geo.geodetic_to_ecef(38.0, 131.0, 300e3), dtype=float).ravel()
    assert impact.energy_height_m(np.concatenate([high, 2000.0 * east])) == 0.0


def test_a_state_flown_for_minutes_carries_the_covariance_its_errors_have():
    # A lofted missile coasting 17 minutes high above every radar: 400 states drawn from the
    # covariance at the start of the coast, each flown through the gravity field, are scattered
    # at its end as fly_state's covariance says (average NEES near 6), and not as the
    # constant-velocity transition says, which misses how gravity shears the errors.
    from warnshare.fusion.synthetic import Launch, fly

    rng = np.random.default_rng(3)
    t0 = 1_700_000_000 * 10**9
    truth = fly(Launch(39.0, 125.7, 90.0, t0, burn_s=150.0, thrust_mps2=40.0, elevation_deg=80.0), dt=0.5)
    x0 = truth.at(t0 + 300 * 10**9)  # climbing through 1,000 km; apogee 1,760 km, falls at 1,572 s
    p0 = np.diag([300.0**2] * 3 + [3.0**2] * 3)
    dt = 1_000.0
    x1, p1 = impact.fly_state(x0, p0, dt, 0.0)
    samples = rng.multivariate_normal(x0, p0, 400)
    for _ in range(200):
        samples = dynamics.rk4_batch(samples, dt / 200)
    assert np.linalg.norm(samples.mean(axis=0)[:3] - x1[:3]) < 1_000.0

    def average_nees(p):
        e = samples - x1
        return float(np.mean(np.einsum("ij,ij->i", e, np.linalg.solve(p, e.T).T)))

    assert 4.5 < average_nees(p1) < 7.5
    assert average_nees(dynamics.predict_covariance(p0, dt, 0.0)) > 50.0
