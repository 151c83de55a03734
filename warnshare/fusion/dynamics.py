"""Ballistic dynamics in rotating ECEF with J2: state and covariance prediction, batched propagation.

Two speeds on purpose. The per-report path predicts one 6-vector over a fraction of a
second, where numpy's per-call overhead dominates, so it uses scalar math, and predicts the
covariances of all of an event's tracks with one product (a constant linear map of each
report's numbers). Impact and launch propagation move a dozen sigma points over minutes, so
it integrates (3, n) arrays in the inertial frame (gravity only: 3-stage Nystrom steps).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from warnshare.fusion import kernel
from warnshare.fusion.kernel import MAX_SPAN_S
from warnshare.fusion.kernel import geodetic as geodetic  # noqa: F401 (one ECEF point, compiled)
from warnshare.geo import WGS84_A, WGS84_E2, WGS84_GM, WGS84_J2, WGS84_OMEGA

_W = WGS84_OMEGA
_W2 = WGS84_OMEGA * WGS84_OMEGA
_2W = 2.0 * WGS84_OMEGA
_J2A2 = 1.5 * WGS84_J2 * WGS84_A * WGS84_A
_B = WGS84_A * math.sqrt(1.0 - WGS84_E2)


def acceleration(x: float, y: float, z: float, vx: float, vy: float) -> tuple[float, float, float]:
    """ECEF acceleration (m/s^2) under J2 gravity plus Coriolis and centrifugal terms."""
    r2 = x * x + y * y + z * z
    k = -WGS84_GM / (r2 * math.sqrt(r2))
    f = _J2A2 / r2
    zr2 = 5.0 * z * z / r2
    g = k * (1.0 + f * (1.0 - zr2))
    return (
        g * x + 2.0 * _W * vy + _W2 * x,
        g * y - 2.0 * _W * vx + _W2 * y,
        k * z * (1.0 + f * (3.0 - zr2)),
    )


def predict_state(s: list[float], dt: float) -> list[float]:
    """One 6-state moved by ``dt`` seconds of ballistic flight (either direction).

    Spans up to 6 s (the gaps between one track's reports) use a midpoint (second order)
    scheme: its error, gravity-gradient jerk x dt^3, is ~0.1 m at 6 s. Longer spans use RK4
    sub-steps of at most 5 s.
    """
    if dt == 0.0:
        return list(s)
    if abs(dt) <= 6.0:
        return _midpoint(s, dt)
    if not abs(dt) <= MAX_SPAN_S:
        raise ValueError(f"a prediction span of {dt:.6g} s: longer than any flight ({MAX_SPAN_S:.0f} s)")
    n = int(math.ceil(abs(dt) / 5.0))
    h = dt / n
    for _ in range(n):
        s = _rk4(s, h)
    return s


def _midpoint(s: list[float], dt: float) -> list[float]:
    # ``acceleration`` written out twice (same arithmetic): the calls and tuples cost as much
    # as the sums on this per-report path
    x, y, z, vx, vy, vz = s
    r2 = x * x + y * y + z * z
    k = -WGS84_GM / (r2 * math.sqrt(r2))
    f = _J2A2 / r2
    zr2 = 5.0 * z * z / r2
    g = k * (1.0 + f * (1.0 - zr2))
    ax = g * x + _2W * vy + _W2 * x
    ay = g * y - _2W * vx + _W2 * y
    az = k * z * (1.0 + f * (3.0 - zr2))
    h = 0.5 * dt
    hh = 0.5 * h * h
    mx, my, mz = x + vx * h + ax * hh, y + vy * h + ay * hh, z + vz * h + az * hh
    mvx, mvy = vx + ax * h, vy + ay * h
    r2 = mx * mx + my * my + mz * mz
    k = -WGS84_GM / (r2 * math.sqrt(r2))
    f = _J2A2 / r2
    zr2 = 5.0 * mz * mz / r2
    g = k * (1.0 + f * (1.0 - zr2))
    bx = g * mx + _2W * mvy + _W2 * mx
    by = g * my - _2W * mvx + _W2 * my
    bz = k * mz * (1.0 + f * (3.0 - zr2))
    dd = 0.5 * dt * dt
    return [
        x + vx * dt + bx * dd,
        y + vy * dt + by * dd,
        z + vz * dt + bz * dd,
        vx + bx * dt,
        vy + by * dt,
        vz + bz * dt,
    ]


def _rk4(s: list[float], h: float) -> list[float]:
    def f(u: list[float]) -> list[float]:
        a = acceleration(u[0], u[1], u[2], u[3], u[4])
        return [u[3], u[4], u[5], a[0], a[1], a[2]]

    k1 = f(s)
    k2 = f([s[i] + 0.5 * h * k1[i] for i in range(6)])
    k3 = f([s[i] + 0.5 * h * k2[i] for i in range(6)])
    k4 = f([s[i] + h * k3[i] for i in range(6)])
    return [s[i] + h / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]) for i in range(6)]


def predict_covariance(p: NDArray, dt: float, q_accel: float) -> NDArray:
    """Covariance moved by ``dt`` with a constant-velocity transition plus white-acceleration noise.

    ``q_accel`` is the acceleration noise spectral density (m^2/s^3). Gravity gradients change
    the transition by ~1e-6 dt^2 per second, far below the process noise over report gaps, so
    the transition is [[I, dt I], [0, I]]. One track of ``predicted_covariances``.
    """
    if dt == 0.0:
        return p
    numbers = np.append(p[_IU], q_accel)
    return predicted_covariances(np.array(basis_coefficients(dt)), numbers)[0]


_Q_BASIS = np.stack(
    [
        np.kron(np.array([[1.0, 0.0], [0.0, 0.0]]), np.eye(3)),
        np.kron(np.array([[0.0, 1.0], [1.0, 0.0]]), np.eye(3)),
        np.kron(np.array([[0.0, 0.0], [0.0, 1.0]]), np.eye(3)),
    ]
).reshape(3, 36)


# ------------------------------------------------------------------ covariance prediction as one product
#
# The predicted covariance of one track is a fixed combination of six matrices with scalar
# coefficients in dt: P(dt) = P + dt (N P + P N') + dt^2 N P N' + q (|dt|^3/3 Qpp
# + dt |dt|/2 Qpv + |dt| Qvv), and each of the six is linear in the report's numbers (the 21 of
# the covariance's upper triangle and q). So P(dt) is a constant (132, 36) map applied to the
# outer product of the six coefficients with those 22 numbers: predicting any number of
# tracks, to any times, is one multiplication and one product, and nothing is built per report.

_IU = np.triu_indices(6)
#: the upper triangle's (row-major) index of each cell of a full 6x6 matrix
_FULL_FROM_UPPER = np.array(
    [next(k for k in range(21) if (_IU[0][k], _IU[1][k]) == (min(r, c), max(r, c))) for r in range(6) for c in range(6)]
)


def _cov_terms(p: NDArray, q: float) -> NDArray:
    """The six (6, 6) matrices whose dt-weighted sum is the predicted covariance."""
    t = np.zeros((6, 6, 6))
    t[0] = p
    t[1, :3, :] += p[3:, :]
    t[1, :, :3] += p[:, 3:]
    t[2, :3, :3] = p[3:, 3:]
    t[3:] = q * _Q_BASIS.reshape(3, 6, 6)
    return t


def _prediction_map() -> NDArray:
    """(6 * 22, 36): row (k, j) is term k of a track whose j-th number (21 upper-triangle
    cells, then q) is 1 and the others 0."""
    per_input = []
    for j in range(21):
        p = np.zeros((6, 6))
        p[_IU[0][j], _IU[1][j]] = p[_IU[1][j], _IU[0][j]] = 1.0
        per_input.append(_cov_terms(p, 0.0).reshape(6, 36))
    per_input.append(_cov_terms(np.zeros((6, 6)), 1.0).reshape(6, 36))
    return np.stack(per_input, axis=1).reshape(6 * 22, 36)


_PREDICTION_MAP = _prediction_map()


def basis_coefficients(dt: float, scale: float = 1.0) -> tuple[float, float, float, float, float, float]:
    """The six coefficients of the predicted covariance for a prediction by ``dt`` seconds,
    all multiplied by ``scale`` (a scaled covariance)."""
    a = abs(dt)
    if scale == 1.0:
        return (1.0, dt, dt * dt, a * a * a / 3.0, 0.5 * dt * a, a)
    return (scale, scale * dt, scale * dt * dt, scale * a * a * a / 3.0, scale * 0.5 * dt * a, scale * a)


def predicted_covariances(coefs: NDArray, numbers: NDArray) -> NDArray:
    """Covariances (m, 6, 6) of m tracks from their coefficients (m, 6) (``basis_coefficients``)
    and their numbers (m, 22) (the covariance's upper triangle, row-major, then q), either
    flat or 2-D."""
    m = coefs.size // 6
    outer = coefs.reshape(m, 6, 1) * numbers.reshape(m, 1, 22)
    return np.dot(outer.reshape(m, 132), _PREDICTION_MAP).reshape(m, 6, 6)


def covariance_from_upper(upper: list[float]) -> NDArray:
    """The full (6, 6) covariance from its upper triangle (row-major, 21 numbers; more are ignored)."""
    return np.array(upper[:21])[_FULL_FROM_UPPER].reshape(6, 6)


# ------------------------------------------------------------------ batched propagation


def accel_batch(r: NDArray, v: NDArray) -> NDArray:
    """ECEF acceleration of (n, 3) positions and velocities."""
    return _accel_t(r.T, v.T).T


def _accel_t(r: NDArray, v: NDArray) -> NDArray:
    """ECEF acceleration of positions and velocities laid out (3, n): rows are contiguous."""
    x, y, z = r
    r2 = x * x + y * y + z * z
    k = -WGS84_GM / (r2 * np.sqrt(r2))
    f = _J2A2 / r2
    zr2 = 5.0 * z * z / r2
    g = k * (1.0 + f * (1.0 - zr2)) + _W2
    return np.stack([g * x + (2.0 * _W) * v[1], g * y - (2.0 * _W) * v[0], k * z * (1.0 + f * (3.0 - zr2))])


def rk4_batch(s: NDArray, h: float) -> NDArray:
    """One RK4 step of (n, 6) states."""
    r, v = _rk4_t(s[:, :3].T, s[:, 3:].T, h)
    return np.concatenate([r.T, v.T], axis=1)


def _rk4_t(r: NDArray, v: NDArray, h: float) -> tuple[NDArray, NDArray]:
    a1 = _accel_t(r, v)
    v2 = v + (0.5 * h) * a1
    a2 = _accel_t(r + (0.5 * h) * v, v2)
    v3 = v + (0.5 * h) * a2
    a3 = _accel_t(r + (0.5 * h) * v2, v3)
    v4 = v + h * a3
    a4 = _accel_t(r + h * v3, v4)
    return r + (h / 6.0) * (v + 2.0 * (v2 + v3) + v4), v + (h / 6.0) * (a1 + 2.0 * (a2 + a3) + a4)


def altitude_approx(r: NDArray) -> NDArray:
    """Height above the WGS84 ellipsoid of (n, 3) positions, to a few metres below 1000 km."""
    return _alt_t(r.T)


def _alt_t(r: NDArray) -> NDArray:
    """Height of (3, n) positions: distance from the centre less the ellipsoid's geocentric
    radius below the point (off the geodetic height by < 1 m under 150 km)."""
    x, y, z = r
    r2 = x * x + y * y + z * z
    s2 = z * z / r2
    return np.sqrt(r2) - _AB / np.sqrt(_B * _B + (WGS84_A * WGS84_A - _B * _B) * s2)


_AB = WGS84_A * _B


def kepler_apogee_alt(s, lat_deg: float) -> float:
    """Apogee altitude (m) of the Kepler orbit through one ECEF state (inertial velocity
    v + omega x r), above the ellipsoid's radius at ``lat_deg``. J2 moves the true apogee of a
    lofted ICBM by ~10 km and the latitude of the apogee is taken as the state's (<= 21 km of
    ellipsoid radius): good to ~1% of a 6,000 km apogee, from any state above the atmosphere."""
    x, y, z = float(s[0]), float(s[1]), float(s[2])
    vx, vy, vz = float(s[3]) - _W * y, float(s[4]) + _W * x, float(s[5])
    r = math.sqrt(x * x + y * y + z * z)
    energy = 0.5 * (vx * vx + vy * vy + vz * vz) - WGS84_GM / r
    if energy >= 0.0:
        return math.inf
    hx, hy, hz = y * vz - z * vy, z * vx - x * vz, x * vy - y * vx
    a = -WGS84_GM / (2.0 * energy)
    e = math.sqrt(max(0.0, 1.0 + 2.0 * energy * (hx * hx + hy * hy + hz * hz) / (WGS84_GM * WGS84_GM)))
    c, sn = math.cos(math.radians(lat_deg)), math.sin(math.radians(lat_deg))
    a2, b2 = WGS84_A * WGS84_A, _B * _B
    radius = math.sqrt(((a2 * c) ** 2 + (b2 * sn) ** 2) / ((WGS84_A * c) ** 2 + (_B * sn) ** 2))
    return a * (1.0 + e) - radius


def fly_to_ground(
    s0: NDArray,
    *,
    forward: bool = True,
    max_time_s: float = 6000.0,
    stop_alt_m: float = 0.0,
    record_first: bool = False,
) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """Propagate (n, 6) ballistic ECEF states until each reaches ``stop_alt_m`` going down
    (forward) or going back in time (backward).

    Returns (time_s from the start, signed; ECEF ground states (n, 6); apogee altitude (n,);
    the ECEF positions (k, 3) the first state passed through, if ``record_first``, else an
    empty array). Points that never reach the ground within ``max_time_s`` get NaN time.

    The flight is integrated in the inertial frame that coincides with ECEF at the start:
    there gravity (J2) is the only force and does not depend on velocity, so a 3-stage
    Runge-Kutta-Nystrom step is 4th order (RK4 in ECEF needs 4 stages, each with Coriolis and
    centrifugal terms), and the ellipsoid height needs no rotation (it depends on |r| and z
    only). The step follows the lowest altitude among points still flying (half the time to
    fall at full ground-relative speed, 10 to 60 s: arcs in vacuum take 60 s steps, the last
    kilometres 10 s); the crossing is found by cubic Hermite interpolation, and the ground
    states and the path are rotated back to ECEF at their times.
    """
    s0 = np.ascontiguousarray(s0, dtype=float)
    sign = 1.0 if forward else -1.0
    below, crossed, a_all, b_all, alt_a, alt_b, t_cross, h_cross, apogee, raw_path = kernel.fly_rkn(
        s0, sign, float(max_time_s), float(stop_alt_m), bool(record_first)
    )
    t_hit = np.where(below, 0.0, np.nan)
    s_hit = s0.copy()
    if crossed.any():
        idx = np.nonzero(crossed)[0]
        a, b, hs = a_all[idx], b_all[idx], h_cross[idx]
        frac = _hermite_root(a, b, alt_a[idx], alt_b[idx], hs, stop_alt_m)
        t_i = sign * (t_cross[idx] + frac * np.abs(hs))
        t_hit[idx] = t_i
        s_hit[idx] = _inertial_to_ecef(_hermite_state(a, b, frac, hs), t_i)
    path = []
    if record_first:
        path = [_rotate_z(x, y, z, -_W * tp) for tp, x, y, z in raw_path.tolist()]
        path.append(tuple(s_hit[0, :3].tolist()))
    return t_hit, s_hit, apogee, np.array(path, dtype=float).reshape(-1, 3)


def _rotate_z(x: float, y: float, z: float, angle: float) -> tuple[float, float, float]:
    c, s = math.cos(angle), math.sin(angle)
    return c * x - s * y, s * x + c * y, z


def _inertial_to_ecef(s: NDArray, t_s: NDArray) -> NDArray:
    """(n, 6) inertial states at times ``t_s`` (n,) after the start to ECEF."""
    c, sn = np.cos(_W * t_s), np.sin(_W * t_s)
    x, y, z, vx, vy, vz = s.T
    # ECEF velocity in inertial axes (v - omega x r), then both rotated by -omega t
    gx, gy = vx + _W * y, vy - _W * x
    return np.array([c * x + sn * y, c * y - sn * x, z, c * gx + sn * gy, c * gy - sn * gx, vz]).T


def _hermite_state(a: NDArray, b: NDArray, u: NDArray, h: NDArray | float) -> NDArray:
    """Cubic Hermite interpolation of position (and linear of velocity) at fraction u of a step
    of length h (scalar or one per row)."""
    u = u[:, None]
    h = np.asarray(h, dtype=float).reshape(-1, 1)
    u2 = u * u
    u3 = u2 * u
    h01 = 3.0 * u2 - 2.0 * u3
    h10 = (u3 - 2.0 * u2 + u) * h
    h11 = (u3 - u2) * h
    pos = (1.0 - h01) * a[:, :3] + h10 * a[:, 3:] + h01 * b[:, :3] + h11 * b[:, 3:]
    vel = (1.0 - u) * a[:, 3:] + u * b[:, 3:]
    return np.concatenate([pos, vel], axis=1)


def _hermite_root(
    a: NDArray, b: NDArray, alt_a: NDArray, alt_b: NDArray, h: NDArray | float, stop_alt_m: float
) -> NDArray:
    """Fraction of the step where the interpolated altitude crosses zero (false position, 3 passes).

    Positions only (``_hermite_state``'s arithmetic), laid out (3, n) for the height."""
    h = np.asarray(h, dtype=float).reshape(-1, 1)
    ra, rb = a[:, :3], b[:, :3]
    va, vb = a[:, 3:] * h, b[:, 3:] * h
    lo = np.zeros(len(a))
    hi = np.ones(len(a))
    f_lo, f_hi = alt_a, alt_b
    u = f_lo / (f_lo - f_hi)
    for _ in range(3):
        w = u[:, None]
        w2 = w * w
        w3 = w2 * w
        h01 = 3.0 * w2 - 2.0 * w3
        # (u^3 - 2u^2 + u) h a' and (u^3 - u^2) h b', as in _hermite_state (h folded in first)
        pos = (1.0 - h01) * ra + (w3 - 2.0 * w2 + w) * va + h01 * rb + (w3 - w2) * vb
        f_u = _alt_t(pos.T) - stop_alt_m
        above = f_u > 0.0
        lo = np.where(above, u, lo)
        f_lo = np.where(above, f_u, f_lo)
        hi = np.where(above, hi, u)
        f_hi = np.where(above, f_hi, f_u)
        u = lo + (hi - lo) * f_lo / np.where(f_lo - f_hi == 0.0, 1.0, f_lo - f_hi)
    return np.minimum(np.maximum(u, 0.0), 1.0)
