"""National sensors and trackers: geometry, who sees what first, honest tracks, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sims import load_scenario, simulate
from sims.model import FLIGHT_PHASES, NATIONS, SimResult
from sims.sensors import radar_visibility, sensors, sensors_fed_to

NS = 1_000_000_000
_CACHE: dict[tuple[str, int], SimResult] = {}


def run(name: str, seed: int = 0) -> SimResult:
    """Each scenario simulated once per test session (the result is never modified)."""
    key = (name, seed)
    if key not in _CACHE:
        _CACHE[key] = simulate(load_scenario(name), seed=seed)
    return _CACHE[key]


SCENARIOS_UNDER_TEST = ["kn23-2023-03-19", "srbm-salvo-2022-06-05", "hwasong17-2022-11-18"]


@pytest.mark.parametrize("name", SCENARIOS_UNDER_TEST)
def test_a_radar_never_reports_a_target_below_its_horizon(name: str) -> None:
    r = run(name)
    by_id = {s.id: s for s in sensors()}
    checked = 0
    for sid, ms in r.measurements.items():
        if ms.kind != "radar":
            continue
        s = by_id[sid]
        for mid, tr in r.truth.items():
            t = ms.times_ns[ms.truth_id == mid]
            if len(t) == 0:
                continue
            pos, _ = tr.state_at(t)
            vis, _, el, rng = radar_visibility(s, pos)
            assert vis.all(), f"{sid} reported {mid} outside its coverage"
            assert (el >= s.min_el_deg).all() and (el >= 0.0).all()
            checked += len(t)
    assert checked > 1000


def test_radar_visibility_rejects_a_target_behind_the_earth() -> None:
    from warnshare.geo import geodetic_to_ecef

    sado = next(s for s in sensors() if s.id == "JPN-FPS5-SADO")
    # a 50 km-high target 900 km west of Sado: in range, in the field of regard, below the horizon
    low = geodetic_to_ecef(38.5, 128.0, 50e3)[None, :]
    high = geodetic_to_ecef(38.5, 128.0, 300e3)[None, :]
    assert not radar_visibility(sado, low)[0][0]
    assert radar_visibility(sado, high)[0][0]


def _first(r: SimResult, mid: str, nation: str | None = None, kind: str | None = None) -> float | None:
    """Seconds after launch of the first report of a missile by a nation's sensors (or a kind)."""
    tr = r.truth[mid]
    firsts = [int(ms.times_ns[ms.truth_id == mid][0]) for ms in r.measurements.values()
              if (nation is None or ms.nation == nation) and (kind is None or ms.kind == kind)
              and (ms.truth_id == mid).any()]
    return None if not firsts else (min(firsts) - tr.launch_ns) / NS


def test_korea_holds_the_low_kn23_from_early_boost_while_japan_sees_it_late() -> None:
    r = run("kn23-2023-03-19")
    tr = r.truth["KN23-1"]
    burn_s = (tr.burnout_ns - tr.launch_ns) / NS
    flight_s = tr.flight_time_s
    kor = _first(r, "KN23-1", "KOR", "radar")
    jpn = _first(r, "KN23-1", "JPN", "radar")
    assert kor is not None and kor < 0.75 * burn_s  # Korean radars have it while it still burns
    assert jpn is None or jpn > burn_s + 20.0  # Japan's radars only after burn-out, if at all
    kor_tracks = [u for u in r.national_tracks["KOR"] if u.missile_id == "KN23-1"]
    assert (kor_tracks[0].available_ns - tr.launch_ns) / NS < burn_s
    # "holds": Korea's national track runs from boost to the last minute of the flight
    valid_s = np.array([(u.time_of_validity_ns - tr.launch_ns) / NS for u in kor_tracks])
    assert valid_s.max() > flight_s - 60.0
    gaps = np.diff(np.sort(valid_s))
    assert gaps.max() < 15.0
    jpn_tracks = [u for u in r.national_tracks["JPN"] if u.missile_id == "KN23-1"]
    if jpn_tracks:
        assert jpn_tracks[0].available_ns > kor_tracks[0].available_ns + 30 * NS


@pytest.mark.parametrize("name", SCENARIOS_UNDER_TEST)
def test_space_layer_reports_a_launch_before_any_radar(name: str) -> None:
    r = run(name)
    for mid in r.truth:
        ir = _first(r, mid, kind="space_ir")
        radar = _first(r, mid, kind="radar")
        assert ir is not None, mid
        assert radar is None or ir < radar, mid
        assert ir < 30.0  # "within seconds" of the plume clearing the cloud tops


def test_space_layer_sees_only_burning_engines() -> None:
    r = run("hwasong17-2022-11-18")
    ms = r.measurements["USA-SBIRS"]
    tr = r.truth["HS17-1"]
    assert (ms.times_ns <= tr.burnout_ns).all()
    assert len(ms) > 50


def test_same_seed_same_result_other_seed_other_noise() -> None:
    a = run("kn23-2023-03-19", seed=7)
    b = simulate(load_scenario("kn23-2023-03-19"), seed=7)
    c = simulate(load_scenario("kn23-2023-03-19"), seed=8, nations=["KOR"])
    for mid in a.truth:
        assert np.array_equal(a.truth[mid].position_ecef_m, b.truth[mid].position_ecef_m)
    for sid, ms in a.measurements.items():
        assert np.array_equal(ms.times_ns, b.measurements[sid].times_ns)
        assert np.array_equal(ms.values, b.measurements[sid].values)
        assert np.array_equal(ms.truth_id, b.measurements[sid].truth_id)
    for nation in NATIONS:
        ua, ub = a.national_tracks[nation], b.national_tracks[nation]
        assert len(ua) == len(ub)
        for x, y in zip(ua, ub, strict=True):
            dx, dy = dataclasses.asdict(x), dataclasses.asdict(y)
            assert np.array_equal(dx.pop("covariance"), dy.pop("covariance"))
            assert dx == dy
    ms_a, ms_c = a.measurements["KOR-KDX3-SEJONG"], c.measurements["KOR-KDX3-SEJONG"]
    assert not (len(ms_a) == len(ms_c) and np.array_equal(ms_a.values, ms_c.values))
    # a nation's own measurements do not depend on which other nations were simulated
    d = simulate(load_scenario("kn23-2023-03-19"), seed=7, nations=["KOR"])
    assert np.array_equal(d.measurements["KOR-KDX3-SEJONG"].values, ms_a.values)
    assert list(d.national_tracks) == ["KOR"] and "USA-SBIRS" not in d.measurements


@pytest.mark.parametrize("name", SCENARIOS_UNDER_TEST)
def test_national_tracks_keep_the_interface(name: str) -> None:
    r = run(name)
    assert set(r.national_tracks) == set(NATIONS)
    for nation, ups in r.national_tracks.items():
        assert ups, nation
        avail = [u.available_ns for u in ups]
        assert avail == sorted(avail)
        by_track: dict[int, list] = {}
        fed = {s.id for s in sensors_fed_to(nation)}
        for u in ups:
            assert u.nation == nation
            assert u.available_ns > u.time_of_validity_ns
            assert u.covariance.shape == (6, 6)
            assert np.allclose(u.covariance, u.covariance.T)
            assert np.all(np.linalg.eigvalsh(u.covariance) > 0)
            assert 0 <= u.track_quality <= 15
            assert u.flight_phase in FLIGHT_PHASES
            assert u.boosting == (u.flight_phase == "BOOST")
            assert u.sensor_ids and set(u.sensor_ids) <= fed  # its own and those shared with it
            assert u.missile_id in r.truth
            by_track.setdefault(u.track_number, []).append(u)
        for tn, us in by_track.items():
            us.sort(key=lambda u: u.time_of_validity_ns)
            assert us[-1].lost and not any(u.lost for u in us[:-1]), (nation, tn)
            assert len({u.missile_id for u in us}) == 1
            # about one update a second while the track is held
            span = (us[-1].time_of_validity_ns - us[0].time_of_validity_ns) / NS
            if span > 60:
                assert 0.3 < len(us) / span <= 1.1


@pytest.mark.parametrize("name", SCENARIOS_UNDER_TEST)
def test_national_track_covariance_is_honest(name: str) -> None:
    """Normalised position error squared averages near its 3 degrees of freedom."""
    r = run(name)
    for nation, ups in r.national_tracks.items():
        nees, err = [], []
        for u in ups:
            p, _ = r.truth[u.missile_id].state_at(u.time_of_validity_ns)
            d = np.array(u.position_ecef_m) - p[0]
            nees.append(float(d @ np.linalg.solve(u.covariance[:3, :3], d)))
            err.append(float(np.linalg.norm(d)))
        assert 0.8 < np.mean(nees) < 10.0, nation
        assert np.median(err) < 300.0, nation


def test_boost_phase_is_flagged_in_boost_and_not_after() -> None:
    r = run("srbm-salvo-2022-06-05")
    for nation in ("USA", "KOR"):
        for u in r.national_tracks[nation]:
            tr = r.truth[u.missile_id]
            if u.boosting:
                # flagged boosting: the engine burns, give or take the tracker's 8 s velocity
                # window and the few seconds it needs to rule thrust out on a noisy radar
                assert u.time_of_validity_ns < tr.burnout_ns + 20 * NS
            if u.flight_phase == "TERMINAL":
                assert u.time_of_validity_ns > tr.burnout_ns
        boosting = [u for u in r.national_tracks[nation] if u.boosting]
        assert len({u.missile_id for u in boosting}) >= 4


def test_early_failure_leaves_short_tracks_near_the_site() -> None:
    r = run("early-failure")
    tr = r.truth["FAIL-1"]
    assert tr.breakup_ns is not None
    assert tr.apogee_m < 40e3
    ir = _first(r, "FAIL-1", kind="space_ir")
    assert ir is not None and ir < (tr.breakup_ns - tr.launch_ns) / NS
    for ups in r.national_tracks.values():
        for u in ups:
            assert u.time_of_validity_ns <= tr.impact_ns + NS


def test_sensor_data_file_states_a_source_or_assumption_for_every_value() -> None:
    from importlib import resources

    text = resources.files("sims").joinpath("data/sensors.toml").read_text()
    first: dict[str, str] = {}
    for line in text.splitlines():
        if "=" not in line or line.lstrip().startswith(("#", "[", "id ", "nation ", "kind ", "name ")):
            continue
        first.setdefault(line.split("=")[0].strip(), line)
    # the first time a value appears it says where it comes from; later sensors repeat the field
    missing = sorted(k for k, line in first.items() if "#" not in line)
    assert not missing, missing


def test_slbm_at_the_edge_of_korean_coverage() -> None:
    r = run("slbm-sinpo")
    tr = r.truth["SLBM-1"]
    assert not any(sid.startswith("KOR-KDX3") for sid in r.measurements)  # destroyers in port
    kor = [ms for ms in r.measurements.values() if ms.nation == "KOR" and (ms.truth_id == "SLBM-1").any()]
    jpn = [ms for ms in r.measurements.values() if ms.nation == "JPN" and (ms.truth_id == "SLBM-1").any()]
    kor_last = max(int(ms.times_ns[ms.truth_id == "SLBM-1"][-1]) for ms in kor) if kor else tr.launch_ns
    jpn_last = max(int(ms.times_ns[ms.truth_id == "SLBM-1"][-1]) for ms in jpn)
    # Korea loses it before the middle of the flight; Japan holds it to the last minute
    assert kor_last - tr.launch_ns < 0.5 * tr.flight_time_s * NS
    assert tr.impact_ns - jpn_last < 60 * NS


def test_salvo_stays_within_the_published_bounds() -> None:
    r = run("srbm-salvo-2022-06-05")
    ranges = [tr.range_m / 1e3 for tr in r.truth.values()]
    apogees = [tr.apogee_m / 1e3 for tr in r.truth.values()]
    assert len(ranges) == 8
    assert min(ranges) == pytest.approx(110, abs=5) and max(ranges) == pytest.approx(670, abs=10)
    assert all(25 <= a <= 91 for a in apogees)
    launches = sorted(tr.launch_ns for tr in r.truth.values())
    assert (launches[-1] - launches[0]) / NS <= 35 * 60
    # every missile of the salvo gets a Korean national track of its own
    kor_ids = {u.missile_id for u in r.national_tracks["KOR"]}
    assert kor_ids == set(r.truth)
