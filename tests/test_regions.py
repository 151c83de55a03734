"""Territory, EEZ approximation and coastline helpers from the bundled Natural Earth data."""

from __future__ import annotations

import numpy as np
import pytest

from warnshare import regions
from warnshare.protocol import ImpactArea


@pytest.mark.parametrize(
    ("lat", "lon", "who"),
    [
        (35.68, 139.69, "JPN"),  # Tokyo
        (43.06, 141.35, "JPN"),  # Sapporo
        (26.21, 127.68, "JPN"),  # Naha, Okinawa
        (37.57, 126.98, "KOR"),  # Seoul
        (35.18, 129.08, "KOR"),  # Busan
        (39.02, 125.75, None),  # Pyongyang
        (39.9, 116.4, None),  # Beijing
        (40.0, 135.0, None),  # Sea of Japan
    ],
)
def test_territory_of_known_places(lat, lon, who):
    assert regions.territory_of(lat, lon) == who


def test_vectorised_territories_match_scalar():
    lats = np.array([35.68, 37.57, 40.0, 39.02])
    lons = np.array([139.69, 126.98, 135.0, 125.75])
    assert regions.territories(lats, lons).tolist() == [regions.territory_of(a, b) for a, b in zip(lats, lons, strict=True)]


@pytest.mark.parametrize(
    ("lat", "lon", "area"),
    [
        (35.68, 139.69, ImpactArea.JPN_TERRITORY),
        (37.57, 126.98, ImpactArea.KOR_TERRITORY),
        (40.9, 138.9, ImpactArea.JPN_EEZ),  # west of Aomori, ~90 km offshore
        (42.0, 137.0, ImpactArea.JPN_EEZ),
        (41.5, 134.0, ImpactArea.OUTSIDE),  # beyond 200 nmi of Honshu
        (38.5, 130.5, ImpactArea.OUTSIDE),  # nearer Korea than Japan: median line
        (39.5, 127.8, ImpactArea.OUTSIDE),  # off the North Korean coast
    ],
)
def test_impact_area(lat, lon, area):
    assert regions.impact_area(lat, lon) == area


def test_territorial_sea_counts_as_territory():
    # 10 km off the Sea of Japan coast near Niigata, inside 12 nmi
    d = regions.coast_distance_m("JPN", 37.98, 138.9)
    assert d < regions.TERRITORIAL_SEA_M
    assert regions.impact_area(37.98, 138.9) == ImpactArea.JPN_TERRITORY


def test_land_polygons_for_plots():
    polys = regions.land_polygons()
    assert {"JPN", "KOR", "PRK", "CHN", "RUS"} <= set(polys)
    for rings in polys.values():
        for ring in rings:
            assert ring.ndim == 2 and ring.shape[1] == 2
            assert np.allclose(ring[0], ring[-1])
    jpn = np.concatenate(polys["JPN"])
    assert 122 < jpn[:, 0].min() and jpn[:, 0].max() < 155 and 20 < jpn[:, 1].min() and jpn[:, 1].max() < 46
    polys["JPN"][0][0, 0] = 0.0  # copies: the module's data is not changed
    assert regions.land_polygons()["JPN"][0][0, 0] != 0.0
    assert "Natural Earth" in regions.attribution()


def test_banded_point_in_polygon_agrees_with_testing_every_edge():
    # the edge index (coast edges bucketed by latitude band) must give exactly what the plain
    # even-odd test over every edge of every ring gives, also right at the coasts
    def every_edge(code, lat, lon):
        inside = np.zeros(lat.shape, dtype=bool)
        for ring in regions.land_polygons_cached()[code]:
            xa, ya = ring[:-1, 0][:, None], ring[:-1, 1][:, None]
            xb, yb = ring[1:, 0][:, None], ring[1:, 1][:, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                x_cross = xa + (lat - ya) * (xb - xa) / (yb - ya)
            inside ^= (((ya > lat) != (yb > lat)) & (lon < x_cross)).sum(axis=0) % 2 == 1
        return inside

    rng = np.random.default_rng(7)
    for code in ("JPN", "KOR"):
        ring = max(regions.land_polygons_cached()[code], key=len)
        near = ring[rng.integers(0, len(ring) - 1, 2000)] + rng.normal(0.0, 0.01, (2000, 2))
        lon = np.concatenate([rng.uniform(122.0, 148.0, 20000), near[:, 0]])
        lat = np.concatenate([rng.uniform(24.0, 46.0, 20000), near[:, 1]])
        expected = every_edge(code, lat, lon)
        assert 0 < expected.sum() < len(lat)
        assert np.array_equal(regions.on_land(code, lat, lon), expected)
