"""WGS84 frames: geodetic <-> ECEF <-> local ENU, great-circle helpers.

Shared by the simulator (truth and sensors) and the fusion core (ground points, ellipses).
All functions take and return SI units (metres, radians unless the name says ``_deg``) and
accept numpy arrays element-wise where it makes sense.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

WGS84_A = 6378137.0  # semi-major axis, m
WGS84_F = 1.0 / 298.257223563
WGS84_B = WGS84_A * (1.0 - WGS84_F)
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)  # first eccentricity squared
WGS84_EP2 = WGS84_E2 / (1.0 - WGS84_E2)  # second eccentricity squared
WGS84_GM = 3.986004418e14  # m^3/s^2
WGS84_J2 = 1.08262982e-3
WGS84_OMEGA = 7.292115e-5  # Earth rotation rate, rad/s
MEAN_RADIUS_M = 6371008.8


def geodetic_to_ecef(lat_deg: ArrayLike, lon_deg: ArrayLike, alt_m: ArrayLike = 0.0) -> NDArray:
    """ECEF position(s) in metres, shape (..., 3)."""
    lat = np.radians(np.asarray(lat_deg, dtype=float))
    lon = np.radians(np.asarray(lon_deg, dtype=float))
    alt = np.asarray(alt_m, dtype=float)
    sin_lat = np.sin(lat)
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * sin_lat * sin_lat)
    x = (n + alt) * np.cos(lat) * np.cos(lon)
    y = (n + alt) * np.cos(lat) * np.sin(lon)
    z = (n * (1.0 - WGS84_E2) + alt) * sin_lat
    return np.stack(np.broadcast_arrays(x, y, z), axis=-1)


def ecef_to_geodetic(ecef: ArrayLike) -> tuple[NDArray, NDArray, NDArray]:
    """(lat_deg, lon_deg, alt_m) of ECEF point(s) of shape (..., 3).

    Bowring's start and three Newton-like refinements: sub-millimetre from the centre of
    the Earth out to lunar distance, including the poles.
    """
    p3 = np.asarray(ecef, dtype=float)
    x, y, z = p3[..., 0], p3[..., 1], p3[..., 2]
    lon = np.arctan2(y, x)
    p = np.hypot(x, y)
    # Bowring's parametric-latitude start
    beta = np.arctan2(z * WGS84_A, p * WGS84_B)
    lat = np.arctan2(
        z + WGS84_EP2 * WGS84_B * np.sin(beta) ** 3, p - WGS84_E2 * WGS84_A * np.cos(beta) ** 3
    )
    for _ in range(3):
        beta = np.arctan2((1.0 - WGS84_F) * np.sin(lat), np.cos(lat))
        lat = np.arctan2(
            z + WGS84_EP2 * WGS84_B * np.sin(beta) ** 3,
            p - WGS84_E2 * WGS84_A * np.cos(beta) ** 3,
        )
    sin_lat = np.sin(lat)
    cos_lat = np.cos(lat)
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * sin_lat * sin_lat)
    # height formula that stays accurate near the poles
    alt = p * cos_lat + z * sin_lat - WGS84_A * WGS84_A / n
    return np.degrees(lat), np.degrees(lon), alt


def enu_rotation(lat_deg: float, lon_deg: float) -> NDArray:
    """3x3 matrix whose rows are the local East, North, Up unit vectors in ECEF."""
    lat = math.radians(lat_deg)
    lon = math.radians(lon_deg)
    sl, cl = math.sin(lat), math.cos(lat)
    so, co = math.sin(lon), math.cos(lon)
    return np.array(
        [
            [-so, co, 0.0],
            [-sl * co, -sl * so, cl],
            [cl * co, cl * so, sl],
        ]
    )


def ecef_to_enu(ecef: ArrayLike, lat0_deg: float, lon0_deg: float, alt0_m: float = 0.0) -> NDArray:
    """ENU coordinates (m) of ECEF point(s) relative to a geodetic origin."""
    origin = geodetic_to_ecef(lat0_deg, lon0_deg, alt0_m)
    return (np.asarray(ecef, dtype=float) - origin) @ enu_rotation(lat0_deg, lon0_deg).T


def enu_to_ecef(enu: ArrayLike, lat0_deg: float, lon0_deg: float, alt0_m: float = 0.0) -> NDArray:
    """ECEF point(s) of ENU coordinates (m) relative to a geodetic origin."""
    origin = geodetic_to_ecef(lat0_deg, lon0_deg, alt0_m)
    return np.asarray(enu, dtype=float) @ enu_rotation(lat0_deg, lon0_deg) + origin


def enu_to_aer(enu: ArrayLike) -> tuple[NDArray, NDArray, NDArray]:
    """(azimuth_deg from north clockwise, elevation_deg, slant range m) of ENU vector(s)."""
    v = np.asarray(enu, dtype=float)
    e, n, u = v[..., 0], v[..., 1], v[..., 2]
    horiz = np.hypot(e, n)
    az = np.degrees(np.arctan2(e, n)) % 360.0
    el = np.degrees(np.arctan2(u, horiz))
    return az, el, np.sqrt(horiz * horiz + u * u)


def aer_to_enu(az_deg: ArrayLike, el_deg: ArrayLike, range_m: ArrayLike) -> NDArray:
    az = np.radians(np.asarray(az_deg, dtype=float))
    el = np.radians(np.asarray(el_deg, dtype=float))
    r = np.asarray(range_m, dtype=float)
    horiz = r * np.cos(el)
    return np.stack(np.broadcast_arrays(horiz * np.sin(az), horiz * np.cos(az), r * np.sin(el)), -1)


def great_circle_distance_m(
    lat1_deg: float, lon1_deg: float, lat2_deg: float, lon2_deg: float
) -> float:
    """Haversine distance on the mean sphere (m); good to ~0.5% against the ellipsoid."""
    p1, p2 = math.radians(lat1_deg), math.radians(lat2_deg)
    dp = p2 - p1
    dl = math.radians(lon2_deg - lon1_deg)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2.0 * MEAN_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def initial_bearing_deg(
    lat1_deg: float, lon1_deg: float, lat2_deg: float, lon2_deg: float
) -> float:
    """Initial great-circle bearing from point 1 to point 2, degrees clockwise from north."""
    p1, p2 = math.radians(lat1_deg), math.radians(lat2_deg)
    dl = math.radians(lon2_deg - lon1_deg)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


def destination_point(
    lat_deg: float, lon_deg: float, bearing_deg: float, distance_m: float
) -> tuple[float, float]:
    """Point reached from (lat, lon) along a great circle at a bearing (sphere)."""
    p1 = math.radians(lat_deg)
    l1 = math.radians(lon_deg)
    b = math.radians(bearing_deg)
    d = distance_m / MEAN_RADIUS_M
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
    l2 = l1 + math.atan2(
        math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2)
    )
    return math.degrees(p2), (math.degrees(l2) + 540.0) % 360.0 - 180.0


def gravity_j2_ecef(r: NDArray) -> NDArray:
    """Gravitational acceleration (m/s^2, no rotation terms) with J2, for position(s) (..., 3)."""
    r = np.asarray(r, dtype=float)
    x, y, z = r[..., 0], r[..., 1], r[..., 2]
    r2 = x * x + y * y + z * z
    rn = np.sqrt(r2)
    k = -WGS84_GM / (r2 * rn)
    f = 1.5 * WGS84_J2 * (WGS84_A * WGS84_A) / r2
    zr2 = 5.0 * z * z / r2
    ax = k * x * (1.0 + f * (1.0 - zr2))
    ay = k * y * (1.0 + f * (1.0 - zr2))
    az = k * z * (1.0 + f * (3.0 - zr2))
    return np.stack([ax, ay, az], axis=-1)


def ecef_acceleration(r: NDArray, v: NDArray) -> NDArray:
    """Total acceleration in the rotating ECEF frame of a body under J2 gravity only:
    gravity minus Coriolis (2 w x v) and centrifugal (w x (w x r)) terms."""
    a = gravity_j2_ecef(r)
    w = WGS84_OMEGA
    r = np.asarray(r, dtype=float)
    v = np.asarray(v, dtype=float)
    ax = a[..., 0] + 2.0 * w * v[..., 1] + w * w * r[..., 0]
    ay = a[..., 1] - 2.0 * w * v[..., 0] + w * w * r[..., 1]
    return np.stack([ax, ay, a[..., 2]], axis=-1)
