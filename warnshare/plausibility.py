"""What a national track report may claim: a state a missile can be in, a covariance a tracker
can hold. Sans-I/O.

The schema (protocol.py) makes a report well-formed: finite numbers of the right types. It does
not make it physical, and the engine's arithmetic takes it at its word: one report with a
velocity of 1e300 m/s, or a covariance that is not positive semi-definite, made every later
fusion of its event fail (overflow, or a singular information matrix), so that the other
nations' reports of that missile were lost with it until the bad track went stale. The relay
refuses such a report at the door (``accept_batch``: the node gets ``SCHEMA_INVALID`` naming it);
the engine screens its input with the same rules, for callers that feed it directly; and a node
leaves out what its own tracker got wrong (``node.play_scenario``), so that one glitch costs one
report, not the nation's feed.

The bounds are wide on purpose: they refuse what no tracker of a real missile reports, never an
estimate that is merely poor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from warnshare.geo import WGS84_A
from warnshare.protocol import TrackReport

#: Geocentric distance: from 100 km below the polar surface (an estimate after impact may be
#: underground by a few km) to 50,000 km, past geostationary orbit; the highest lofted DPRK
#: ICBM flights reached ~7,700 km of altitude (Hwasong-19, 2024).
MIN_RADIUS_M = 6_250_000.0
MAX_RADIUS_M = 50_000_000.0
#: Speed in ECEF: above Earth's escape velocity (11.2 km/s); an ICBM burns out at ~7 km/s.
MAX_SPEED_MPS = 15_000.0
#: Largest 1-sigma a tracker may claim per axis: 5,000 km in position, 10 km/s in velocity (a
#: first space-IR line of sight is hundreds of km wide, not thousands).
MAX_POSITION_SIGMA_M = 5_000_000.0
MAX_VELOCITY_SIGMA_MPS = 10_000.0

_MIN_R2, _MAX_R2 = MIN_RADIUS_M**2, MAX_RADIUS_M**2
_MAX_V2 = MAX_SPEED_MPS**2
_MAX_PVAR, _MAX_VVAR = MAX_POSITION_SIGMA_M**2, MAX_VELOCITY_SIGMA_MPS**2
#: positions of the diagonal in the covariance's upper triangle, row-major
_DIAGONAL = (0, 6, 11, 15, 18, 20)


def covariance_psd(u: Sequence[float]) -> bool:
    """Whether the symmetric 6x6 with upper triangle ``u`` (21, row-major) is positive
    semi-definite: a Cholesky factorisation in which a pivot may be zero to round-off (1e-9 of
    its diagonal) but never negative, and every entry finite.

    Plain Python here (~40 us, for a node, which then loads no compiler); ``kernel.covariance_ok``
    is this function compiled (1-2 us, for the relay and the engine), so both ends of the link
    apply the same rule."""
    a = np.empty((6, 6))
    k = 0
    for i in range(6):
        for j in range(i, 6):
            if not math.isfinite(u[k]):
                return False
            a[i, j] = u[k]
            a[j, i] = u[k]
            k += 1
    for j in range(6):
        diag = a[j, j]
        if not diag >= 0.0:
            return False
        s = diag
        for m in range(j):
            s -= a[j, m] * a[j, m]
        if s < -1e-9 * diag:
            return False
        if s <= 1e-9 * diag:  # a zero pivot: the rest of the column must be zero as well
            for i in range(j + 1, 6):
                t = a[i, j]
                for m in range(j):
                    t -= a[i, m] * a[j, m]
                if abs(t) > 1e-6 * math.sqrt(diag * a[i, i]) + 1e-300:
                    return False
                a[i, j] = 0.0
            a[j, j] = 0.0
            continue
        d = math.sqrt(s)
        a[j, j] = d
        for i in range(j + 1, 6):
            t = a[i, j]
            for m in range(j):
                t -= a[i, m] * a[j, m]
            a[i, j] = t / d
    return True


def report_problem(
    report: TrackReport, psd: Callable[[Sequence[float]], bool] = covariance_psd
) -> str | None:
    """Why ``report`` cannot be a national track of a missile, or None when it can (always for
    a ``lost`` report, whose state nobody uses). ``psd`` is the covariance test:
    ``covariance_psd`` or its compiled twin ``kernel.covariance_ok``."""
    if report.lost:
        return None
    x, y, z = report.position_ecef_m
    r2 = x * x + y * y + z * z
    if not _MIN_R2 <= r2 <= _MAX_R2:
        return (f"position is {math.sqrt(r2) / 1000:.6g} km from the Earth's centre, outside "
                f"[{MIN_RADIUS_M / 1000:.0f}, {MAX_RADIUS_M / 1000:.0f}] km "
                f"(altitude {(math.sqrt(r2) - WGS84_A) / 1000:.6g} km)")
    vx, vy, vz = report.velocity_ecef_mps
    v2 = vx * vx + vy * vy + vz * vz
    if not v2 <= _MAX_V2:
        return f"speed {math.sqrt(v2):.6g} m/s is above {MAX_SPEED_MPS:.0f} m/s"
    c = report.covariance
    for k, i in enumerate(_DIAGONAL):
        limit = _MAX_PVAR if k < 3 else _MAX_VVAR
        if not 0.0 < c[i] <= limit:
            axis = "xyz"[k % 3]
            what = "position" if k < 3 else "velocity"
            return (f"covariance: the {what} variance along {axis} is {c[i]:.6g}, not in "
                    f"(0, {limit:.6g}]")
    if not psd(c):
        return "covariance is not positive semi-definite"
    return None
