"""The per-report arithmetic of fusion, compiled: members predicted to one time and fused by CI.

At ~50 µs a report, the engine's hot path was a dozen numpy calls on 6x6 matrices and a scalar
state prediction in Python, each paying more in call overhead than in flops. This module does
the same arithmetic in one compiled call (numba, no Python objects inside): each member's state
flown to the fused time (the midpoint scheme of ``dynamics.predict_state``, RK4 sub-steps beyond
6 s), its covariance predicted (``dynamics.predicted_covariances``' formula) and scaled by the
inverse of its CI weight, the information sum inverted, and the fused state's geodetic position.
The sigma-point flights are here too: to the ground (``fly_rkn``, the loop of
``dynamics.fly_to_ground``) and over a span (``fly_points``, for ``impact.fly_state``); they run
on the relay's one thread, where numpy's call overhead made each a stall of several ms.

Functions are compiled on first use and cached on disk (``cache=True``); ``warm()`` compiles
them ahead of the first report. Results agree with the numpy path to round-off (tests compare).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from warnshare import plausibility
from warnshare.geo import WGS84_A, WGS84_E2, WGS84_GM, WGS84_J2, WGS84_OMEGA

#: The longest span a state is flown over (s), twice the longest flight the engine follows: a
#: longer one is an input error (a report dated far from the others), and refusing it keeps a
#: single report from running the integrator for minutes.
MAX_SPAN_S = 12_000.0
#: per member in the input row: dt (s), scale (1 / CI weight), state (6), covariance's upper
#: triangle (21, row-major), acceleration noise q
MEMBER_WIDTH = 30
#: the output row: state (6), covariance's upper triangle (21, row-major), lat_deg, lon_deg,
#: alt_m, then the full covariance (36, row-major)
OUT_WIDTH = 66

_W = WGS84_OMEGA
_W2 = WGS84_OMEGA * WGS84_OMEGA
_2W = 2.0 * WGS84_OMEGA
_J2A2 = 1.5 * WGS84_J2 * WGS84_A * WGS84_A
_GM = WGS84_GM
_A = WGS84_A
_E2 = WGS84_E2
_B = WGS84_A * math.sqrt(1.0 - WGS84_E2)
_EP2 = WGS84_E2 / (1.0 - WGS84_E2)


@njit(cache=True, nogil=True)
def _accel(x, y, z, vx, vy):  # pragma: no cover - compiled
    r2 = x * x + y * y + z * z
    k = -_GM / (r2 * math.sqrt(r2))
    f = _J2A2 / r2
    zr2 = 5.0 * z * z / r2
    g = k * (1.0 + f * (1.0 - zr2))
    return g * x + _2W * vy + _W2 * x, g * y - _2W * vx + _W2 * y, k * z * (1.0 + f * (3.0 - zr2))


@njit(cache=True, nogil=True)
def _fly(s, dt, out):  # pragma: no cover - compiled
    """``dynamics.predict_state`` of s (6,) into out (6,)."""
    if abs(dt) <= 6.0:
        x, y, z, vx, vy, vz = s[0], s[1], s[2], s[3], s[4], s[5]
        ax, ay, az = _accel(x, y, z, vx, vy)
        h = 0.5 * dt
        hh = 0.5 * h * h
        mx, my, mz = x + vx * h + ax * hh, y + vy * h + ay * hh, z + vz * h + az * hh
        bx, by, bz = _accel(mx, my, mz, vx + ax * h, vy + ay * h)
        dd = 0.5 * dt * dt
        out[0] = x + vx * dt + bx * dd
        out[1] = y + vy * dt + by * dd
        out[2] = z + vz * dt + bz * dd
        out[3] = vx + bx * dt
        out[4] = vy + by * dt
        out[5] = vz + bz * dt
        return
    if not abs(dt) <= MAX_SPAN_S:
        raise ValueError("a prediction span longer than any flight (MAX_SPAN_S)")
    n = int(math.ceil(abs(dt) / 5.0))
    h = dt / n
    u = np.empty(6)
    k = np.empty((4, 6))
    for i in range(6):
        out[i] = s[i]
    for _ in range(n):
        for stage in range(4):
            c = 0.0 if stage == 0 else (h if stage == 3 else 0.5 * h)
            for i in range(6):
                u[i] = out[i] + (c * k[stage - 1, i] if stage else 0.0)
            ax, ay, az = _accel(u[0], u[1], u[2], u[3], u[4])
            k[stage, 0], k[stage, 1], k[stage, 2] = u[3], u[4], u[5]
            k[stage, 3], k[stage, 4], k[stage, 5] = ax, ay, az
        for i in range(6):
            out[i] += h / 6.0 * (k[0, i] + 2.0 * k[1, i] + 2.0 * k[2, i] + k[3, i])


@njit(cache=True, nogil=True)
def fly_points(pts, dt):  # pragma: no cover - compiled
    """Each state (row) of ``pts`` (n, 6) flown by ``dt`` seconds (``_fly``)."""
    out = np.empty_like(pts)
    for i in range(pts.shape[0]):
        _fly(pts[i], dt, out[i])
    return out


_AB = WGS84_A * _B
_BB = _B * _B
_AA_BB = WGS84_A * WGS84_A - _B * _B


@njit(cache=True, nogil=True)
def _accel_inertial(x, y, z, xx, yy, zz):  # pragma: no cover - compiled
    """J2 gravity at one point in an Earth-centred inertial frame sharing ECEF's z axis (no
    velocity terms), from its coordinates and their squares (shared with the altitude)."""
    ir2 = 1.0 / (xx + yy + zz)
    k = ir2 * math.sqrt(ir2) * -_GM
    kf = k * ir2 * _J2A2
    c = (1.0 - 5.0 * zz * ir2) * kf + k
    return x * c, y * c, z * c + (2.0 * kf) * z


@njit(cache=True, nogil=True)
def _alt_sq(xx, yy, zz):  # pragma: no cover - compiled
    """Height of one point above the ellipsoid from its squared coordinates: distance from the
    centre less the ellipsoid's geocentric radius below the point (``dynamics._alt_t``)."""
    r2 = xx + yy + zz
    return math.sqrt(r2) - _AB / math.sqrt(_BB + _AA_BB * (zz / r2))


@njit(cache=True, nogil=True)
def fly_rkn(s0, sign, max_time_s, stop_alt_m, record_first):  # pragma: no cover - compiled
    """The integration loop of ``dynamics.fly_to_ground``, the same arithmetic point by point:
    (n, 6) ECEF states flown in the inertial frame (Runge-Kutta-Nystrom, steps of 10-60 s
    following the lowest point still flying) until each goes below ``stop_alt_m``.

    Returns (below (n,) bool: already below at the start (its time is 0, it is not crossed),
    crossed (n,) bool, the states before and after each point's crossing step (n, 6) each, in
    inertial axes, the altitudes there (n,) each, each crossing step's start time and signed
    length (n,) each, the apogees (n,), and the first point's path (k, 4): time, x, y, z in
    inertial axes)."""
    n = s0.shape[0]
    r = np.empty((n, 3))
    v = np.empty((n, 3))
    alt = np.empty(n)
    apogee = np.empty(n)
    acc = np.empty((n, 3))
    done = np.zeros(n, dtype=np.bool_)
    crossed = np.zeros(n, dtype=np.bool_)
    sa = np.zeros((n, 6))
    sb = np.zeros((n, 6))
    alt_a = np.zeros(n)
    alt_b = np.zeros(n)
    t_cross = np.zeros(n)
    h_cross = np.zeros(n)
    path = np.empty((int(max_time_s / 10.0) + 3 if record_first else 0, 4))
    k_path = 0
    n_done = 0
    for i in range(n):
        x, y, z = s0[i, 0], s0[i, 1], s0[i, 2]
        r[i, 0], r[i, 1], r[i, 2] = x, y, z
        v[i, 0] = s0[i, 3] - _W * y
        v[i, 1] = s0[i, 4] + _W * x
        v[i, 2] = s0[i, 5]
        alt[i] = _alt_sq(x * x, y * y, z * z) - stop_alt_m
        apogee[i] = alt[i] + stop_alt_m
        if alt[i] <= 0.0:
            done[i] = True
            n_done += 1
        acc[i, 0], acc[i, 1], acc[i, 2] = _accel_inertial(x, y, z, x * x, y * y, z * z)
    below = done.copy()
    if record_first:
        path[0, 0], path[0, 1], path[0, 2], path[0, 3] = 0.0, r[0, 0], r[0, 1], r[0, 2]
        k_path = 1
    t = 0.0
    while n_done < n and t < max_time_s:
        # the lowest altitude and the largest ground-speed component among the points flying
        lowest = math.inf
        speed = 0.0
        for i in range(n):
            if n_done and done[i]:
                continue
            if alt[i] < lowest:
                lowest = alt[i]
            g0 = abs(v[i, 0] + _W * r[i, 1])
            g1 = abs(v[i, 1] - _W * r[i, 0])
            g2 = abs(v[i, 2])
            if g0 > speed:
                speed = g0
            if g1 > speed:
                speed = g1
            if g2 > speed:
                speed = g2
        speed += 1.0
        h = min(60.0, max(10.0, 0.5 * lowest / speed))
        hs = sign * h
        c2 = hs * hs / 8.0
        c3 = 0.5 * hs * hs
        c6 = hs * hs / 6.0
        cv = hs / 6.0
        for i in range(n):
            hv0, hv1, hv2 = hs * v[i, 0], hs * v[i, 1], hs * v[i, 2]
            a10, a11, a12 = acc[i, 0], acc[i, 1], acc[i, 2]
            m0 = r[i, 0] + 0.5 * hv0 + c2 * a10
            m1 = r[i, 1] + 0.5 * hv1 + c2 * a11
            m2 = r[i, 2] + 0.5 * hv2 + c2 * a12
            a20, a21, a22 = _accel_inertial(m0, m1, m2, m0 * m0, m1 * m1, m2 * m2)
            h0, h1, h2 = r[i, 0] + hv0, r[i, 1] + hv1, r[i, 2] + hv2
            q0, q1, q2 = h0 + c3 * a20, h1 + c3 * a21, h2 + c3 * a22
            a30, a31, a32 = _accel_inertial(q0, q1, q2, q0 * q0, q1 * q1, q2 * q2)
            n0 = h0 + c6 * (a10 + 2.0 * a20)
            n1 = h1 + c6 * (a11 + 2.0 * a21)
            n2 = h2 + c6 * (a12 + 2.0 * a22)
            w0 = v[i, 0] + cv * (a10 + 4.0 * a20 + a30)
            w1 = v[i, 1] + cv * (a11 + 4.0 * a21 + a31)
            w2 = v[i, 2] + cv * (a12 + 4.0 * a22 + a32)
            xx, yy, zz = n0 * n0, n1 * n1, n2 * n2
            alt_new = _alt_sq(xx, yy, zz) - stop_alt_m
            if alt_new + stop_alt_m > apogee[i]:
                apogee[i] = alt_new + stop_alt_m
            if not done[i] and alt_new <= 0.0:
                crossed[i] = True
                done[i] = True
                n_done += 1
                sa[i, 0], sa[i, 1], sa[i, 2] = r[i, 0], r[i, 1], r[i, 2]
                sa[i, 3], sa[i, 4], sa[i, 5] = v[i, 0], v[i, 1], v[i, 2]
                sb[i, 0], sb[i, 1], sb[i, 2], sb[i, 3], sb[i, 4], sb[i, 5] = n0, n1, n2, w0, w1, w2
                alt_a[i], alt_b[i] = alt[i], alt_new
                t_cross[i], h_cross[i] = t, hs
            r[i, 0], r[i, 1], r[i, 2] = n0, n1, n2
            v[i, 0], v[i, 1], v[i, 2] = w0, w1, w2
            alt[i] = alt_new
            acc[i, 0], acc[i, 1], acc[i, 2] = _accel_inertial(n0, n1, n2, xx, yy, zz)
        t += h
        if record_first and not done[0]:
            path[k_path, 0] = sign * t
            path[k_path, 1], path[k_path, 2], path[k_path, 3] = r[0, 0], r[0, 1], r[0, 2]
            k_path += 1
    return below, crossed, sa, sb, alt_a, alt_b, t_cross, h_cross, apogee, path[:k_path].copy()


@njit(cache=True, nogil=True)
def _predicted_cov(row, base, dt, scale, p):  # pragma: no cover - compiled
    """The covariance of the member at ``row[base:]`` predicted by dt, times ``scale``, into p:
    P + dt (N P + P N') + dt^2 N P N' + q (|dt|^3/3 Qpp + dt |dt|/2 Qpv + |dt| Qvv), N the
    position-from-velocity shift (constant-velocity transition)."""
    k = base
    for i in range(6):
        for j in range(i, 6):
            p[i, j] = p[j, i] = row[k]
            k += 1
    q = row[k]
    a = abs(dt)
    if dt != 0.0:
        for i in range(3):
            for j in range(3):
                p[i, j] += dt * (p[i + 3, j] + p[i, j + 3]) + dt * dt * p[i + 3, j + 3]
        for i in range(3):
            for j in range(3, 6):
                p[i, j] += dt * p[i + 3, j]
                p[j, i] = p[i, j]
    for i in range(3):
        p[i, i] += q * a * a * a / 3.0
        p[i, i + 3] += q * 0.5 * dt * a
        p[i + 3, i] += q * 0.5 * dt * a
        p[i + 3, i + 3] += q * a
    if scale != 1.0:
        for i in range(6):
            for j in range(6):
                p[i, j] *= scale


@njit(cache=True, nogil=True)
def _inv6(a, out):  # pragma: no cover - compiled
    """Gauss-Jordan inverse with partial pivoting of a (6, 6) into out; False if singular."""
    m = np.empty((6, 12))
    for i in range(6):
        for j in range(6):
            m[i, j] = a[i, j]
            m[i, j + 6] = 1.0 if i == j else 0.0
    for c in range(6):
        piv = c
        best = abs(m[c, c])
        for r in range(c + 1, 6):
            if abs(m[r, c]) > best:
                best = abs(m[r, c])
                piv = r
        if not best > 0.0:
            return False
        if piv != c:
            for j in range(12):
                t = m[c, j]
                m[c, j] = m[piv, j]
                m[piv, j] = t
        d = 1.0 / m[c, c]
        for j in range(12):
            m[c, j] *= d
        for r in range(6):
            if r != c:
                f = m[r, c]
                if f != 0.0:
                    for j in range(12):
                        m[r, j] -= f * m[c, j]
    for i in range(6):
        for j in range(6):
            out[i, j] = m[i, j + 6]
    return True


_covariance_psd = njit(cache=True, nogil=True)(plausibility.covariance_psd)


def covariance_ok(u) -> bool:
    """``plausibility.covariance_psd`` compiled: the upper triangle ``u`` (21 numbers) is a
    positive semi-definite covariance (~1 us with the conversion to an array)."""
    return _covariance_psd(np.asarray(u, dtype=np.float64))


@njit(cache=True, nogil=True)
def predict_members(row, n):  # pragma: no cover - compiled
    """States (n, 6) and covariances (n, 6, 6) of the n members in ``row`` (``MEMBER_WIDTH``
    numbers each) predicted to the fused time and scaled."""
    xs = np.empty((n, 6))
    ps = np.empty((n, 6, 6))
    for k in range(n):
        b = k * MEMBER_WIDTH
        dt, scale = row[b], row[b + 1]
        if dt == 0.0:
            for i in range(6):
                xs[k, i] = row[b + 2 + i]
        else:
            _fly(row[b + 2 : b + 8], dt, xs[k])
        _predicted_cov(row, b + 8, dt, scale, ps[k])
    return xs, ps


@njit(cache=True, nogil=True)
def fuse_members(row, n):  # pragma: no cover - compiled
    """CI of the n members in ``row`` (each covariance already divided by its weight, so the
    information sum is sum w_i P_i^-1): the output row (``OUT_WIDTH``), NaNs if a matrix is
    singular. One member: its prediction."""
    xs, ps = predict_members(row, n)
    out = np.empty(OUT_WIDTH)
    x = np.zeros(6)
    p = np.empty((6, 6))
    ok = True
    if n == 1:
        for i in range(6):
            x[i] = xs[0, i]
            for j in range(6):
                p[i, j] = ps[0, i, j]
    else:
        info = np.zeros((6, 6))
        ix = np.zeros(6)
        ik = np.empty((6, 6))
        for k in range(n):
            if not _inv6(ps[k], ik):
                ok = False
                break
            for i in range(6):
                s = 0.0
                for j in range(6):
                    info[i, j] += ik[i, j]
                    s += ik[i, j] * xs[k, j]
                ix[i] += s
        if ok:
            ok = _inv6(info, p)
        if ok:
            for i in range(6):
                s = 0.0
                for j in range(6):
                    s += p[i, j] * ix[j]
                x[i] = s
    if not ok:
        out[:] = np.nan
        return out
    k = 6
    for i in range(6):
        out[i] = x[i]
        for j in range(i, 6):
            # symmetric up to round-off: the mean of the two halves, in both outputs
            v = 0.5 * (p[i, j] + p[j, i])
            out[k] = out[30 + 6 * i + j] = out[30 + 6 * j + i] = v
            k += 1
    out[27], out[28], out[29] = geodetic(x[0], x[1], x[2])
    return out


@njit(cache=True, nogil=True)
def geodetic(x, y, z):  # pragma: no cover - compiled
    """(lat_deg, lon_deg, alt_m) of one ECEF point, scalar Bowring (mm-accurate near Earth);
    callable from Python too (``dynamics.geodetic``)."""
    p = math.hypot(x, y)
    beta = math.atan2(z * _A, p * _B)
    sb, cb = math.sin(beta), math.cos(beta)
    lat = math.atan2(z + _EP2 * _B * sb * sb * sb, p - _E2 * _A * cb * cb * cb)
    sl, cl = math.sin(lat), math.cos(lat)
    n = _A / math.sqrt(1.0 - _E2 * sl * sl)
    return math.degrees(lat), math.degrees(math.atan2(y, x)), p * cl + z * sl - _A * _A / n


_warm = False


def warm() -> None:
    """Compile (or load from the disk cache) every kernel now, not at the first report
    (seconds to compile, a fraction of one to load; once per process)."""
    global _warm
    if _warm:
        return
    _warm = True
    row = np.zeros(2 * MEMBER_WIDTH)
    for b in (0, MEMBER_WIDTH):
        row[b + 1] = 1.0
        row[b + 2] = WGS84_A + 100e3
        row[b + 8] = row[b + 14] = row[b + 19] = 1e4
        row[b + 23] = row[b + 26] = row[b + 28] = 1e2
    row[0] = 0.5
    fuse_members(row, 2)
    fuse_members(row, 1)
    predict_members(row, 2)
    fly_points(row[2:14].reshape(2, 6), 10.0)
    fly_rkn(row[2:14].reshape(2, 6), 1.0, 30.0, 0.0, True)
    covariance_ok(row[8:29])
