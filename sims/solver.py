"""Trajectory solver: find the pitch programme and energy cut-off that fly a stated apogee and range.

The two published figures of a test pin down two free parameters of the flight: the thrust
elevation after pitch-over (sets the loft) and the share of the last stage burned (sets the
energy). At a fixed cut-off the apogee rises monotonically with the pitch; at a fixed apogee the
range rises monotonically with the cut-off; so two nested one-dimensional root finds converge
without a Jacobian, on coarse flights, and one fine flight confirms the answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from warnshare.geo import MEAN_RADIUS_M, initial_bearing_deg

from .flight import MissileClass, RawFlight, Steering, fly

PITCH_MIN_DEG = 4.0
PITCH_MAX_DEG = 89.5
CUTOFF_MIN = 0.05
POLISH_TOL = 5e-3  # published apogees and ranges are rounded to about this


@dataclass(frozen=True)
class Solution:
    steering: Steering
    flight: RawFlight
    converged: bool
    message: str = ""


def _root(f: Callable[[float], float], lo: float, hi: float, x0: float, tol: float, step: float, max_iter: int = 30) -> tuple[float, bool]:
    """Root of an increasing f on [lo, hi], starting at x0: secant steps, falling back to
    bisection inside the bracket once one is known. Returns (x, converged); an unreachable
    target returns the nearer end of the interval."""
    a_lo, f_lo = lo, None  # best known points with f < 0 and f > 0
    a_hi, f_hi = hi, None
    x_prev, f_prev = None, None
    x = min(max(x0, lo), hi)
    for _ in range(max_iter):
        fx = f(x)
        if abs(fx) < tol:
            return x, True
        if fx < 0:
            a_lo, f_lo = x, fx
        else:
            a_hi, f_hi = x, fx
        if f_lo is not None and f_hi is not None:
            if a_hi - a_lo < 1e-6:
                return x, True
            # Illinois-flavoured regula falsi inside the bracket
            xn = a_lo - f_lo * (a_hi - a_lo) / (f_hi - f_lo)
            if x_prev is not None and (fx < 0) == (f_prev < 0):
                xn = 0.5 * (a_lo + a_hi)
        elif x_prev is not None and fx != f_prev:
            xn = x - fx * (x - x_prev) / (fx - f_prev)
        else:
            xn = x + (step if fx < 0 else -step)
        if fx < 0 and x >= hi:
            return hi, False
        if fx > 0 and x <= lo:
            return lo, False
        x_prev, f_prev = x, fx
        x = min(max(xn, a_lo if f_lo is not None else lo), a_hi if f_hi is not None else hi)
        if x == x_prev:
            x = hi if fx < 0 else lo
    return x, False


def minimum_energy_apogee_m(range_m: float) -> float:
    """Apogee of the minimum-energy Kepler arc between two surface points ``range_m`` apart."""
    phi = range_m / MEAN_RADIUS_M
    r = MEAN_RADIUS_M
    nu = 2.0 * math.sin(phi / 2) / (1.0 + math.sin(phi / 2))  # v^2 r / GM
    gamma = (math.pi - phi) / 4.0
    a = r / (2.0 - nu)
    e = math.sqrt(max(0.0, 1.0 - nu * (2.0 - nu) * math.cos(gamma) ** 2))
    return a * (1.0 + e) - r


def profile_apogee_m(profile: str, range_m: float) -> float:
    """Apogee a class flies at a range when a scenario gives only a profile."""
    me = minimum_energy_apogee_m(range_m)
    factor = {"minimum-energy": 1.0, "lofted": 3.0, "depressed": 0.45}.get(profile)
    if factor is None:
        raise ValueError(f"unknown profile {profile!r}: minimum-energy, lofted or depressed")
    return me * factor


def solve(
    missile: MissileClass,
    launch_lat_deg: float,
    launch_lon_deg: float,
    azimuth_deg: float,
    apogee_m: float,
    range_m: float,
    launch_alt_m: float = 0.0,
    bank_deg: float = 0.0,
    tol: float = 2e-3,
    coarse: bool = True,
    guess: tuple[float, float] | None = None,
) -> Solution:
    """Steering that flies ``missile`` to ``apogee_m`` and ``range_m`` along ``azimuth_deg``."""
    cache: dict[tuple[float, float], RawFlight] = {}

    def flown(pitch: float, cutoff: float) -> RawFlight:
        key = (round(pitch, 9), round(cutoff, 9))
        if key not in cache:
            cache[key] = fly(missile, launch_lat_deg, launch_lon_deg,
                             Steering(azimuth_deg, pitch, cutoff, bank_deg), launch_alt_m, coarse=coarse)
        return cache[key]

    pitch_guess = [missile.nominal_pitch_deg if guess is None else guess[0]]
    shape = math.log(apogee_m / range_m)

    def pitch_for_shape(cutoff: float) -> tuple[float, bool]:
        # apogee / range rises monotonically with the pitch on both the depressed and the
        # lofted branch, and stays well conditioned near the vertical where apogee alone is not
        def f(p: float) -> float:
            fl = flown(p, cutoff)
            return math.log(max(fl.apogee_m, 1.0) / max(fl.range_m, 1.0)) - shape

        p, ok = _root(f, PITCH_MIN_DEG, PITCH_MAX_DEG, pitch_guess[0], tol, 3.0)
        if not ok:
            # very flat flights in dense air break the monotonic shape; bracket the root on the
            # well-behaved branch by a coarse scan upward and solve inside it
            grid = [8.0, 15.0, 25.0, 40.0, 55.0, 70.0, 80.0, 86.0, PITCH_MAX_DEG]
            vals = [f(g) for g in grid]
            for a, b, fa, fb in zip(grid, grid[1:], vals, vals[1:], strict=False):
                if fa <= 0.0 <= fb:
                    p, ok = _root(f, a, b, 0.5 * (a + b), tol, 0.25 * (b - a))
                    break
        pitch_guess[0] = p
        return p, ok

    def range_error(cutoff: float) -> float:
        p, _ = pitch_for_shape(cutoff)
        return math.log(max(flown(p, cutoff).range_m, 1.0) / range_m)

    cutoff, ok_c = _root(range_error, CUTOFF_MIN, 1.0, missile.nominal_cutoff if guess is None else guess[1], tol, 0.05)
    pitch, ok_p = pitch_for_shape(cutoff)
    steering = Steering(azimuth_deg, pitch, cutoff, bank_deg)
    final = cache.get((round(pitch, 9), round(cutoff, 9))) if not coarse else None
    if final is None:
        final = fly(missile, launch_lat_deg, launch_lon_deg, steering, launch_alt_m)
    if coarse and ok_c and ok_p and (abs(math.log(final.range_m / range_m)) > POLISH_TOL
                                     or abs(math.log(final.apogee_m / apogee_m)) > POLISH_TOL):
        # the coarse steps were off by more than published figures' rounding: polish on fine flights
        return solve(missile, launch_lat_deg, launch_lon_deg, azimuth_deg, apogee_m, range_m,
                     launch_alt_m, bank_deg, tol, coarse=False, guess=(pitch, cutoff))
    msg = ""
    if not (ok_c and ok_p):
        msg = (f"{missile.name} cannot fly apogee {apogee_m / 1e3:.0f} km and range {range_m / 1e3:.0f} km; "
               f"closest: {final.apogee_m / 1e3:.0f} km, {final.range_m / 1e3:.0f} km")
    return Solution(steering, final, ok_c and ok_p, msg)


def aim(
    missile: MissileClass,
    launch_lat_deg: float,
    launch_lon_deg: float,
    apogee_m: float,
    range_m: float,
    azimuth_deg: float,
    launch_alt_m: float = 0.0,
    bank_deg: float = 0.0,
) -> Solution:
    """Solve, then turn the launch azimuth once so the impact lies on the requested bearing
    (Earth rotation and a glide's bank push the ground track off the launch heading)."""
    def bearing_error(sol: Solution) -> float:
        got = initial_bearing_deg(launch_lat_deg, launch_lon_deg, sol.flight.impact_lat_deg, sol.flight.impact_lon_deg)
        return (got - azimuth_deg + 540.0) % 360.0 - 180.0

    heading = azimuth_deg
    sol = solve(missile, launch_lat_deg, launch_lon_deg, heading, apogee_m, range_m, launch_alt_m, bank_deg)
    err = bearing_error(sol)
    prev: tuple[float, float] | None = None
    for _ in range(6):
        if abs(err) < 0.05 or sol.flight.range_m < 20e3:
            break
        # secant on the heading: Earth rotation's push depends on the heading itself
        if prev is not None and err != prev[1]:
            step = -err * (heading - prev[0]) / (err - prev[1])
        else:
            step = -err
        prev = (heading, err)
        heading = (heading + step) % 360.0
        st = sol.steering
        if abs(step) < 1.0:
            # a small turn leaves the range alone: re-fly, do not re-solve
            steering = Steering(heading, st.pitch_final_deg, st.cutoff_fraction, st.bank_deg)
            sol = Solution(steering, fly(missile, launch_lat_deg, launch_lon_deg, steering, launch_alt_m),
                           sol.converged, sol.message)
        else:
            sol = solve(missile, launch_lat_deg, launch_lon_deg, heading, apogee_m, range_m, launch_alt_m,
                        bank_deg, guess=(st.pitch_final_deg, st.cutoff_fraction))
        err = bearing_error(sol)
    return sol


__all__ = ["Solution", "aim", "minimum_energy_apogee_m", "profile_apogee_m", "solve"]
