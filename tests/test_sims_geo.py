"""The WGS84 frames the simulator flies and measures in, against pymap3d (an independent
implementation), to under a millimetre."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from warnshare.geo import (
    aer_to_enu,
    ecef_to_enu,
    ecef_to_geodetic,
    enu_to_aer,
    enu_to_ecef,
    geodetic_to_ecef,
)

pymap3d = pytest.importorskip("pymap3d")

lat = st.floats(-89.999, 89.999)
lon = st.floats(-180.0, 180.0)
# from below the sea floor to beyond the Hwasong-19's 7,700 km apogee
alt = st.floats(-11e3, 9000e3)
MM = 1e-3


@settings(max_examples=300, deadline=None)
@given(lat, lon, alt)
def test_geodetic_ecef_round_trip_matches_pymap3d(la: float, lo: float, h: float) -> None:
    mine = geodetic_to_ecef(la, lo, h)
    ref = np.array(pymap3d.geodetic2ecef(la, lo, h))
    assert np.linalg.norm(mine - ref) < MM
    la2, lo2, h2 = ecef_to_geodetic(mine)
    back = geodetic_to_ecef(la2, lo2, h2)
    assert np.linalg.norm(back - mine) < MM
    assert abs(float(h2) - h) < MM


@settings(max_examples=200, deadline=None)
@given(lat, lon, st.floats(0.0, 3000.0), st.floats(-3000e3, 3000e3), st.floats(-3000e3, 3000e3),
       st.floats(-100e3, 8000e3))
def test_enu_and_aer_match_pymap3d(la0: float, lo0: float, h0: float, e: float, n: float, u: float) -> None:
    # pymap3d's enu2aer rounds ENU components under 1 mm to zero: a target within millimetres
    # of the site is outside what it can be compared on
    assume(all(c == 0.0 or abs(c) > 0.01 for c in (e, n, u)))
    target = enu_to_ecef(np.array([e, n, u]), la0, lo0, h0)
    ref = np.array(pymap3d.enu2ecef(e, n, u, la0, lo0, h0))
    assert np.linalg.norm(target - ref) < MM
    enu = ecef_to_enu(target, la0, lo0, h0)
    assert np.linalg.norm(enu - np.array([e, n, u])) < MM
    az, el, rng = enu_to_aer(enu)
    raz, rel, rrng = pymap3d.ecef2aer(*target, la0, lo0, h0)
    assert abs(float(rng) - rrng) < MM
    # angles compared as the arc they subtend at the target's range
    assert abs(np.radians(float(el) - rel)) * rrng < MM
    daz = (float(az) - raz + 180.0) % 360.0 - 180.0
    assert abs(np.radians(daz)) * rrng * np.cos(np.radians(rel)) < MM
    assert np.linalg.norm(aer_to_enu(az, el, rng) - enu) < MM


def test_vectorised_conversions_agree_with_scalar_ones() -> None:
    rng = np.random.default_rng(0)
    la = rng.uniform(-89, 89, 500)
    lo = rng.uniform(-180, 180, 500)
    h = rng.uniform(0, 8e6, 500)
    xyz = geodetic_to_ecef(la, lo, h)
    la2, lo2, h2 = ecef_to_geodetic(xyz)
    assert np.abs(h2 - h).max() < MM
    assert np.abs(la2 - la).max() * 111e3 < MM
