"""Ballistic dynamics and ground-point geometry: the fast forms agree with plain references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from warnshare import geo
from warnshare.fusion import dynamics, impact


def _fine_crossing(s: np.ndarray, h: float) -> tuple[float, np.ndarray]:
    """Time and ECEF state where RK4 in ECEF with small steps ``h`` (signed) crosses the ground."""
    state = s[None, :].copy()
    alt = float(dynamics.altitude_approx(state[:, :3])[0])
    t = 0.0
    for _ in range(200_000):
        nxt = dynamics.rk4_batch(state, h)
        alt_next = float(dynamics.altitude_approx(nxt[:, :3])[0])
        if alt_next <= 0.0:
            u = alt / (alt - alt_next)
            return t + u * h, state[0] + u * (nxt[0] - state[0])
        state, alt, t = nxt, alt_next, t + h
    raise AssertionError("never came down")


@pytest.mark.parametrize("forward", [True, False])
def test_fly_to_ground_agrees_with_fine_integration_in_ecef(forward):
    # an SRBM-like arc over the Sea of Japan, 200 km up, and a point near the ground
    up = list(geo.geodetic_to_ecef(39.5, 131.0, 200e3))
    low = list(geo.geodetic_to_ecef(38.0, 129.0, 5e3))
    east = geo.enu_rotation(39.5, 131.0)[0]
    states = np.array([up + list(1800.0 * east + [0.0, 0.0, 300.0]), low + [900.0, -400.0, 200.0]])
    t_hit, s_hit, apogee, _ = dynamics.fly_to_ground(states, forward=forward, max_time_s=2000.0)
    for i, s in enumerate(states):
        t_ref, s_ref = _fine_crossing(s, 0.05 if forward else -0.05)
        assert t_hit[i] == pytest.approx(t_ref, abs=0.01)
        assert np.linalg.norm(s_hit[i, :3] - s_ref[:3]) < 5.0  # metres, over hundreds of km
        assert np.linalg.norm(s_hit[i, 3:] - s_ref[3:]) < 0.5  # m/s
    assert apogee[0] >= 200e3 - 1.0


def test_fly_to_ground_records_the_centre_path_in_ecef():
    s = np.array([list(geo.geodetic_to_ecef(40.0, 132.0, 100e3)) + [1500.0, 500.0, -200.0]])
    t_hit, s_hit, _, path = dynamics.fly_to_ground(s, record_first=True)
    assert np.allclose(path[0], s[0, :3]) and np.allclose(path[-1], s_hit[0, :3])
    # every recorded point lies on the fine ECEF trajectory: compare one in the middle
    k = len(path) // 2
    _, _, alt = geo.ecef_to_geodetic(path[k])
    assert 0.0 < float(alt) < 110e3


def test_predicted_covariances_match_the_closed_form():
    rng = np.random.default_rng(7)
    a = rng.standard_normal((6, 6)) * 50.0
    p = a @ a.T + np.eye(6)
    upper = p[np.triu_indices(6)].tolist()
    assert np.array_equal(dynamics.covariance_from_upper(upper), p)
    for dt, q, scale in ((0.0, 4.0, 1.0), (0.8, 4.0, 1.0), (-2.5, 900.0, 1.0), (3.0, 2500.0, 2.5)):
        got = dynamics.predicted_covariances(np.array(dynamics.basis_coefficients(dt, scale)),
                                             np.array(upper + [q]))[0]
        assert np.allclose(got, scale * dynamics.predict_covariance(p, dt, q), rtol=1e-12, atol=1e-9)


def test_ellipse_and_containment_closed_forms_match_numpy():
    rng = np.random.default_rng(8)
    for _ in range(200):
        a = rng.standard_normal((2, 2)) * rng.uniform(10.0, 1e5)
        cov = a @ a.T + np.eye(2)
        major, minor, orient = impact.ellipse_95(cov)
        w, v = np.linalg.eigh(cov)
        assert major == pytest.approx(math.sqrt(impact.CHI2_2D_95 * w[1]), rel=1e-9)
        assert minor == pytest.approx(math.sqrt(impact.CHI2_2D_95 * w[0]), rel=1e-9, abs=1e-6)
        ref = math.degrees(math.atan2(v[0, 1], v[1, 1])) % 180.0
        assert min(abs(orient - ref), 180.0 - abs(orient - ref)) < 1e-6
        gp = impact.GroundPoint(0, 37.0, 134.0, major, minor, orient, 0.0, 0.0, np.zeros((0, 3)), cov)
        lat = 37.0 + rng.normal() * math.sqrt(cov[1, 1]) / 111e3 * 2
        lon = 134.0 + rng.normal() * math.sqrt(cov[0, 0]) / 89e3 * 2
        en = geo.ecef_to_enu(geo.geodetic_to_ecef(lat, lon, 0.0), 37.0, 134.0)[:2]
        d2 = float(en @ np.linalg.solve(cov, en))
        if abs(d2 - impact.CHI2_2D_95) > 1e-6:
            assert gp.contains(lat, lon) == (d2 <= impact.CHI2_2D_95)
