"""The per-report arithmetic of fusion, compiled: members predicted to one time and fused by CI.

At ~50 µs a report, the engine's hot path was a dozen numpy calls on 6x6 matrices and a scalar
state prediction in Python, each paying more in call overhead than in flops. This module does
the same arithmetic in one compiled call (numba, no Python objects inside): each member's state
flown to the fused time (the midpoint scheme of ``dynamics.predict_state``, RK4 sub-steps beyond
6 s), its covariance predicted (``dynamics.predicted_covariances``' formula) and scaled by the
inverse of its CI weight, the information sum inverted, and the fused state's geodetic position.

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
    covariance_ok(row[8:29])
