"""Whose ground or water a point is: Japanese / Korean territory, Japan's EEZ, coastlines for plots.

Land is Natural Earth 1:50m Admin 0 countries (public domain; "Made with Natural Earth"),
extracted once into ``warnshare/data/ne_50m_land_east_asia.json`` (recipe in docs/FUSION.md).
Territory is land plus the 12 nmi territorial sea. Japan's EEZ is approximated as the water
within 200 nmi of Japan's coast that is nearer to Japan's coast than to any neighbour's
(KOR, PRK, CHN, RUS, TWN): an equidistance (median) line, not the negotiated or claimed
boundaries. Distances are great-circle distances to coast vertices densified to <= 2 km.
"""

from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources

import numpy as np
from numpy.typing import ArrayLike, NDArray

from warnshare.geo import MEAN_RADIUS_M
from warnshare.protocol import ImpactArea

NMI_M = 1852.0
TERRITORIAL_SEA_M = 12 * NMI_M
EEZ_M = 200 * NMI_M
#: Countries whose coasts bound Japan's EEZ by the median line.
EEZ_NEIGHBOURS = ("KOR", "PRK", "CHN", "RUS", "TWN")
_DATA_FILE = "ne_50m_land_east_asia.json"
# Coasts farther than this from the region are irrelevant to the median line.
_REGION_LON = (110.0, 165.0)
_REGION_LAT = (15.0, 60.0)


@cache
def _data() -> dict:
    with resources.files("warnshare.data").joinpath(_DATA_FILE).open("r", encoding="utf-8") as f:
        return json.load(f)


@cache
def land_polygons_cached() -> dict[str, tuple[NDArray, ...]]:
    out = {}
    for code, rings in _data()["countries"].items():
        out[code] = tuple(np.asarray(r, dtype=float) for r in rings)
    return out


def land_polygons() -> dict[str, list[NDArray]]:
    """Land rings by ADM0_A3 code (JPN, KOR, PRK, CHN, RUS, TWN): each an (n, 2) array of
    (lon_deg, lat_deg), closed (first point repeated). Copies, safe to modify."""
    return {code: [r.copy() for r in rings] for code, rings in land_polygons_cached().items()}


def attribution() -> str:
    """Credit line for plots and documents."""
    return str(_data()["attribution"])


#: Latitude band (deg) of the edge index: a point is tested only against the coast edges that
#: reach its band (a few dozen of Japan's ~1,000), not every edge of every island.
_BAND_DEG = 0.1


@cache
def _edge_index(code: str) -> tuple | None:
    """One country's ring edges, all rings together (even-odd over the union is the XOR of the
    rings' parities), bucketed by latitude band and padded with edges that straddle nothing:
    (lat0, bands, bounding box, xa, ya, xb, yb), the last four (bands, k) arrays."""
    rings = land_polygons_cached().get(code, ())
    if not rings:
        return None
    a = np.concatenate([r[:-1] for r in rings])
    b = np.concatenate([r[1:] for r in rings])
    lat0 = float(min(a[:, 1].min(), b[:, 1].min()))
    lat1 = float(max(a[:, 1].max(), b[:, 1].max()))
    bands = int(math.floor((lat1 - lat0) / _BAND_DEG)) + 1
    lo = np.floor((np.minimum(a[:, 1], b[:, 1]) - lat0) / _BAND_DEG).astype(int)
    hi = np.floor((np.maximum(a[:, 1], b[:, 1]) - lat0) / _BAND_DEG).astype(int)
    members: list[list[int]] = [[] for _ in range(bands)]
    for e, (i0, i1) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
        for band in range(i0, i1 + 1):
            members[band].append(e)
    k = max(1, max(len(m) for m in members))
    table = np.full((bands, k), len(a), dtype=int)  # index len(a): the padding edge
    for band, m in enumerate(members):
        table[band, : len(m)] = m
    pad = np.array([[np.nan, np.nan]])
    a, b = np.concatenate([a, pad]), np.concatenate([b, pad])
    box = (float(a[:-1, 0].min()), float(a[:-1, 0].max()), lat0, lat1)
    return lat0, bands, box, a[table, 0], a[table, 1], b[table, 0], b[table, 1]


def _inside(code: str, lat: NDArray, lon: NDArray) -> NDArray:
    """Even-odd point-in-polygon of many points against one country's rings."""
    result = np.zeros(lat.shape, dtype=bool)
    index = _edge_index(code)
    if index is None:
        return result
    lat0, bands, (x0, x1, y0, y1), xa, ya, xb, yb = index
    cand = (lon >= x0) & (lon <= x1) & (lat >= y0) & (lat <= y1)
    if not cand.any():
        return result
    py, px = lat[cand], lon[cand]
    band = np.clip(((py - lat0) / _BAND_DEG).astype(int), 0, bands - 1)
    xa, ya, xb, yb = xa[band], ya[band], xb[band], yb[band]
    py, px = py[:, None], px[:, None]
    straddle = (ya > py) != (yb > py)  # NaN padding compares False both ways: no straddle
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = xa + (py - ya) * (xb - xa) / (yb - ya)
    result[np.nonzero(cand)[0]] = (straddle & (px < x_cross)).sum(axis=1) % 2 == 1
    return result


def warm() -> None:
    """Build the lazy caches (edge indexes, densified coasts: ~0.2 s) now, so that the first
    impact prediction of a serving process does not pay for them."""
    for code in ("JPN", "KOR"):
        _edge_index(code)
    for code in ("JPN", "KOR", *EEZ_NEIGHBOURS):
        _coast(code)


def on_land(code: str, lat_deg: ArrayLike, lon_deg: ArrayLike) -> NDArray:
    """Whether point(s) lie on the land of a country (ADM0_A3 code)."""
    lat = np.atleast_1d(np.asarray(lat_deg, dtype=float))
    lon = np.atleast_1d(np.asarray(lon_deg, dtype=float))
    return _inside(code, lat, lon)


def territory_of(lat_deg: float, lon_deg: float) -> str | None:
    """"JPN" or "KOR" if the point is on that nation's land (Natural Earth 1:50m), else None."""
    lat = np.array([float(lat_deg)])
    lon = np.array([float(lon_deg)])
    for code in ("JPN", "KOR"):
        if _inside(code, lat, lon)[0]:
            return code
    return None


def territories(lat_deg: ArrayLike, lon_deg: ArrayLike) -> NDArray:
    """Vectorised ``territory_of``: an object array of "JPN", "KOR" or None per point."""
    lat = np.atleast_1d(np.asarray(lat_deg, dtype=float))
    lon = np.atleast_1d(np.asarray(lon_deg, dtype=float))
    out = np.full(lat.shape, None, dtype=object)
    for code in ("KOR", "JPN"):
        out[_inside(code, lat, lon)] = code
    return out


@cache
def _coast(code: str) -> NDArray:
    """Coast vertices (n, 2) of (lat_rad, lon_rad), densified to <= 2 km, within the region."""
    pts = []
    for ring in land_polygons_cached().get(code, ()):
        for (lo0, la0), (lo1, la1) in zip(ring[:-1], ring[1:], strict=True):
            if not (_REGION_LON[0] <= lo0 <= _REGION_LON[1] and _REGION_LAT[0] <= la0 <= _REGION_LAT[1]):
                continue
            seg_km = 111.2 * math.hypot(la1 - la0, (lo1 - lo0) * math.cos(math.radians(la0)))
            n = max(1, int(math.ceil(seg_km / 2.0)))
            for k in range(n):
                u = k / n
                pts.append((la0 + u * (la1 - la0), lo0 + u * (lo1 - lo0)))
    if not pts:
        return np.zeros((0, 2))
    return np.radians(np.array(pts))


def coast_distance_m(code: str, lat_deg: float, lon_deg: float) -> float:
    """Great-circle distance (m, mean sphere) from a point to a country's coast in the region."""
    c = _coast(code)
    if len(c) == 0:
        return math.inf
    p1, l1 = math.radians(lat_deg), math.radians(lon_deg)
    h = np.sin((c[:, 0] - p1) / 2) ** 2 + math.cos(p1) * np.cos(c[:, 0]) * np.sin((c[:, 1] - l1) / 2) ** 2
    return float(2.0 * MEAN_RADIUS_M * np.arcsin(np.sqrt(min(1.0, float(h.min())))))


def in_jpn_eez(lat_deg: float, lon_deg: float) -> bool:
    """Approximate Japanese EEZ (including the territorial sea; see the module docstring)."""
    d_jpn = coast_distance_m("JPN", lat_deg, lon_deg)
    if d_jpn > EEZ_M:
        return False
    return all(d_jpn <= coast_distance_m(n, lat_deg, lon_deg) for n in EEZ_NEIGHBOURS)


def impact_area(lat_deg: float, lon_deg: float) -> ImpactArea:
    """Where a fall point is, as the alerts say it: JPN or KOR territory (land or 12 nmi
    territorial sea), else inside Japan's EEZ (approximation), else outside."""
    terr = territory_of(lat_deg, lon_deg)
    if terr == "JPN":
        return ImpactArea.JPN_TERRITORY
    if terr == "KOR":
        return ImpactArea.KOR_TERRITORY
    d_jpn = coast_distance_m("JPN", lat_deg, lon_deg)
    d_kor = coast_distance_m("KOR", lat_deg, lon_deg)
    if d_jpn <= TERRITORIAL_SEA_M and d_jpn <= d_kor:
        return ImpactArea.JPN_TERRITORY
    if d_kor <= TERRITORIAL_SEA_M:
        return ImpactArea.KOR_TERRITORY
    if in_jpn_eez(lat_deg, lon_deg):
        return ImpactArea.JPN_EEZ
    return ImpactArea.OUTSIDE
