"""U.S. Standard Atmosphere 1976: density, pressure and speed of sound against geometric altitude.

The seven layers to 86 km geopotential are exact; above that the density follows the standard's
tabulated values, interpolated in log-density. Pure-Python floats because the flight integrator
calls it a few hundred thousand times per scenario.
"""

from __future__ import annotations

import bisect
import math

R_AIR = 287.05287  # J/(kg K)
G0 = 9.80665
R_EARTH_GEOPOT = 6356766.0
GAMMA = 1.4

# base geopotential height (m), base temperature (K), lapse (K/m), base pressure (Pa)
_LAYERS = [
    (0.0, 288.15, -0.0065, 101325.0),
    (11000.0, 216.65, 0.0, 22632.06),
    (20000.0, 216.65, 0.001, 5474.889),
    (32000.0, 228.65, 0.0028, 868.0187),
    (47000.0, 270.65, 0.0, 110.9063),
    (51000.0, 270.65, -0.0028, 66.93887),
    (71000.0, 214.65, -0.002, 3.956420),
]
_TOP_GEOPOT = 84852.0

# above 86 km: geometric altitude (m), density (kg/m^3) from the 1976 standard's tables
_HIGH = [
    (86e3, 6.958e-6), (90e3, 3.416e-6), (100e3, 5.604e-7), (110e3, 9.708e-8), (120e3, 2.222e-8),
    (130e3, 8.152e-9), (150e3, 2.076e-9), (200e3, 2.541e-10), (300e3, 1.916e-11),
    (500e3, 5.215e-13), (1000e3, 3.561e-15),
]
_HIGH_ALT = [a for a, _ in _HIGH]
_HIGH_LNRHO = [math.log(r) for _, r in _HIGH]
VACUUM_ALT_M = 1000e3


def properties(alt_m: float) -> tuple[float, float, float]:
    """(density kg/m^3, pressure Pa, speed of sound m/s) at a geometric altitude."""
    if alt_m < 0.0:
        alt_m = 0.0
    hgp = R_EARTH_GEOPOT * alt_m / (R_EARTH_GEOPOT + alt_m)
    if hgp < _TOP_GEOPOT:
        i = len(_LAYERS) - 1
        while _LAYERS[i][0] > hgp:
            i -= 1
        hb, tb, lapse, pb = _LAYERS[i]
        if lapse == 0.0:
            t = tb
            p = pb * math.exp(-G0 * (hgp - hb) / (R_AIR * tb))
        else:
            t = tb + lapse * (hgp - hb)
            p = pb * (t / tb) ** (-G0 / (R_AIR * lapse))
        return p / (R_AIR * t), p, math.sqrt(GAMMA * R_AIR * t)
    if alt_m >= VACUUM_ALT_M:
        return 0.0, 0.0, 300.0
    j = max(0, min(bisect.bisect_right(_HIGH_ALT, alt_m) - 1, len(_HIGH) - 2))
    f = (alt_m - _HIGH_ALT[j]) / (_HIGH_ALT[j + 1] - _HIGH_ALT[j])
    rho = math.exp(_HIGH_LNRHO[j] + f * (_HIGH_LNRHO[j + 1] - _HIGH_LNRHO[j]))
    # temperature rises steeply in the thermosphere; sound speed only matters for drag Mach
    # number, where it no longer changes anything, so hold the mesopause value
    return rho, rho * R_AIR * 186.87, 274.1


def drag_coefficient(mach: float) -> float:
    """Axial drag coefficient of a slender missile body against Mach number (a generic V-2-like curve)."""
    if mach < 0.8:
        return 0.20
    if mach < 1.1:
        return 0.20 + (mach - 0.8) * (0.45 - 0.20) / 0.3
    if mach < 2.0:
        return 0.45 - (mach - 1.1) * (0.45 - 0.32) / 0.9
    if mach < 5.0:
        return 0.32 - (mach - 2.0) * (0.32 - 0.25) / 3.0
    return 0.25
