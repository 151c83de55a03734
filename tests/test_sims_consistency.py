"""National trackers' covariances against their errors, and the US radars shared with Japan."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import sims.sensors
from sims import load_scenario, simulate
from sims.consistency import nees_table, pair_errors, pair_table, report_errors, track_stats
from sims.model import NATIONS, SimResult
from sims.sensors import Sensor, sensor_feeds, sensors, sensors_fed_to
from sims.tracker import run_tracker
from warnshare.metrics import nees_bounds

SEEDS = (0, 1, 2, 3)
SHARED = ("USA-TPY2-SHARIKI", "USA-TPY2-KYOGAMISAKI")
_CACHE: dict[int, SimResult] = {}


def short_salvo():
    """The first two launches of the 8-SRBM salvo (two KN-23 glides): short, and the hardest
    part of the salvo to track consistently (the pull-up)."""
    s8 = load_scenario("srbm-salvo-2022-06-05")
    return dataclasses.replace(s8, missiles=s8.missiles[:2], duration_s=700.0)


def run(seed: int) -> SimResult:
    if seed not in _CACHE:
        truth = next(iter(_CACHE.values())).truth if _CACHE else None  # the same for every seed
        _CACHE[seed] = simulate(short_salvo(), seed=seed, truth=truth)
    return _CACHE[seed]


def test_each_nations_reports_are_consistent_over_seeds() -> None:
    """Average 6-D NEES after boost inside the chi-square 95 % band. Reports of one track a
    second apart are not independent and a radar's registration bias holds for a whole seed, so
    the band counts one independent sample per missile and seed (8), not per report."""
    rows = [row for seed in SEEDS for row in report_errors(run(seed))]
    table = nees_table(rows)
    lo, hi = nees_bounds(len(SEEDS) * len(short_salvo().missiles))
    for nation in NATIONS:
        flight = table[nation]["flight"]
        assert flight["n"] > 1000, nation
        assert lo <= flight["mean_nees"] <= hi, (nation, flight["mean_nees"], (lo, hi))
        # and not by averaging a much too wide bulk with a few wild misses
        assert 3.0 <= flight["median_nees"] <= 8.0, (nation, flight["median_nees"])
        assert 0.85 <= flight["inside_95"] <= 0.995, (nation, flight["inside_95"])


def test_every_missile_keeps_its_tracks_and_no_report_strays() -> None:
    for seed in SEEDS:
        r = run(seed)
        for nation, s in track_stats(r).items():
            assert s["missed"] == 0 and s["false_tracks"] == 0, (seed, nation, s)
            assert s["label_switches"] == 0 and s["misassociated_reports"] == 0, (seed, nation, s)
            assert s["missiles_tracked"] == 2, (seed, nation, s)


def test_the_feed_table_shares_the_us_radars_in_japan_with_japan_only() -> None:
    for sid in SHARED:
        assert sensor_feeds(sid) == ("USA", "JPN")
    assert sensor_feeds("USA-TPY2-SEONGJU") == ("USA",)
    assert sensor_feeds("USA-SBIRS") == ("USA",)
    jpn = {s.id for s in sensors_fed_to("JPN")}
    assert set(SHARED) <= jpn and "USA-TPY2-SEONGJU" not in jpn
    assert not any(s.id.startswith("USA") for s in sensors_fed_to("KOR"))
    assert set(SHARED) <= {s.id for s in sensors_fed_to("USA")}


def test_japans_tracks_use_the_shared_radars_reports() -> None:
    r = run(0)
    used = {sid for u in r.national_tracks["JPN"] for sid in u.sensor_ids}
    assert used & set(SHARED), used
    assert not any(s.startswith("KOR") for s in used)


def test_japan_alone_receives_the_same_shared_reports() -> None:
    """The node simulates one nation; the shared radar's reports are still the very same draws."""
    both = run(0)
    alone = simulate(short_salvo(), seed=0, nations=["JPN"], truth=both.truth)
    for sid in SHARED:
        assert np.array_equal(alone.measurements[sid].values, both.measurements[sid].values)
    a = [(u.track_number, u.time_of_validity_ns, u.position_ecef_m) for u in alone.national_tracks["JPN"]]
    b = [(u.track_number, u.time_of_validity_ns, u.position_ecef_m) for u in both.national_tracks["JPN"]]
    assert a == b


def test_a_change_in_the_shared_radars_noise_moves_both_nations_and_not_korea(monkeypatch: pytest.MonkeyPatch) -> None:
    base = run(0)
    # the shared radar that sees these launches most (Shariki's sector is mostly north of them)
    sid = max(SHARED, key=lambda i: int((base.measurements[i].truth_id != "").sum()))
    assert (base.measurements[sid].truth_id != "").sum() > 100
    noisier = []
    for s in sensors():
        if s.id == sid:
            s = Sensor(s.id, s.nation, s.kind, s.name, {**s.params, "sigma_range_m": 40.0, "range_floor_m": 20.0})
        noisier.append(s)
    monkeypatch.setattr(sims.sensors, "sensors", lambda: tuple(noisier))
    changed = simulate(short_salvo(), seed=0, truth=base.truth)
    # the one draw, seen by both trackers
    assert not np.array_equal(changed.measurements[sid].values, base.measurements[sid].values)
    for nation in ("USA", "JPN"):
        before = [u.position_ecef_m for u in base.national_tracks[nation]]
        after = [u.position_ecef_m for u in changed.national_tracks[nation]]
        assert before != after, nation
    assert [u.position_ecef_m for u in changed.national_tracks["KOR"]] == \
        [u.position_ecef_m for u in base.national_tracks["KOR"]]


def test_japans_tracker_without_the_shared_radars_reports_differently() -> None:
    r = run(0)
    own = [r.measurements[s.id] for s in sensors_fed_to("JPN") if s.id not in SHARED]
    fed = [r.measurements[s.id] for s in sensors_fed_to("JPN")]
    bias = {s.id: (s.bias_range_m, s.bias_az_deg, s.bias_el_deg) for s in sensors_fed_to("JPN") if s.kind == "radar"}
    with_shared = run_tracker("JPN", fed, 2.0, 3, bias)
    without = run_tracker("JPN", own, 2.0, 3, bias)
    assert [u.position_ecef_m for u in with_shared] == [u.position_ecef_m for u in r.national_tracks["JPN"]]
    assert [u.position_ecef_m for u in with_shared] != [u.position_ecef_m for u in without]
    # the X-band radars make Japan's picture more accurate, not less
    err = {}
    for name, ups in (("with", with_shared), ("without", without)):
        e = [np.linalg.norm(np.array(u.position_ecef_m) - r.truth[u.missile_id].state_at(u.time_of_validity_ns)[0][0])
             for u in ups if not u.lost]
        err[name] = float(np.sqrt(np.mean(np.square(e))))
    assert err["with"] < err["without"], err


def test_a_radar_bias_is_carried_not_averaged_away() -> None:
    """One accurate radar for a whole flight: treated as noise, its registration bias would be
    averaged away and the covariance shrink far below the error it leaves (position NEES in the
    tens); carried as a consider parameter, the position NEES stays near its 3 dof."""
    s = next(x for x in sensors_fed_to("USA") if x.id == "USA-TPY2-KYOGAMISAKI")
    bias = {s.id: (s.bias_range_m, s.bias_az_deg, s.bias_el_deg)}
    for seed in SEEDS[:2]:
        r = run(seed)
        ms = r.measurements[s.id]
        nees = {}
        for name, b in (("consider", bias), ("ignored", None)):
            ups = [u for u in run_tracker("USA", [ms], 3.0, 3, b) if not u.lost]
            assert len(ups) > 200
            e = [np.array(u.position_ecef_m) - r.truth[u.missile_id].state_at(u.time_of_validity_ns)[0][0] for u in ups]
            nees[name] = float(np.mean([x @ np.linalg.solve(u.covariance[:3, :3], x) for x, u in zip(e, ups, strict=True)]))
        assert 1.0 < nees["consider"] < 6.0, (seed, nees)
        assert nees["ignored"] > 5.0 * nees["consider"], (seed, nees)


def test_japan_and_usa_errors_are_correlated_where_they_share_a_radar() -> None:
    """Fused as if independent, JPN and USA reports that both used a shared TPY-2 come out
    overconfident beyond either input: the shared noise and bias are counted twice."""
    rows = [row for seed in SEEDS for row in pair_errors(run(seed), "JPN", "USA")]
    shared = pair_table(rows)["shared"]
    assert shared["n"] > 300
    inputs = 0.5 * (shared["mean_nees_a"] + shared["mean_nees_b"])
    assert shared["mean_nees_independent_fusion"] > 1.3 * inputs, shared
