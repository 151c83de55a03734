"""Scenario files, fault overlays and the `warnshare sim` command."""

from __future__ import annotations

import gzip
import json

import pytest

from sims import Fault, ScenarioError, list_fault_overlays, list_scenarios, load_scenario, simulate
from warnshare.cli import main

NAMED = [
    "hwasong17-2022-11-18", "hwasong12-2022-10-04", "srbm-salvo-2022-06-05", "kn23-2023-03-19",
    "hgv-2022-01-11", "slbm-sinpo", "early-failure",
]


def test_every_named_scenario_is_bundled_and_loads() -> None:
    assert set(NAMED) <= set(list_scenarios())
    for name in list_scenarios():
        sc = load_scenario(name)
        assert sc.name == name
        assert sc.description
        assert sc.missiles
        assert sc.duration_s > 0
        # t=0 is a real date-time between the first DPRK ICBM tests and now
        assert 1_480_000_000e9 < sc.start_ns < 1_900_000_000e9


def test_historic_launch_times_are_utc() -> None:
    import datetime as dt

    sc = load_scenario("hwasong17-2022-11-18")
    assert dt.datetime.fromtimestamp(sc.start_ns / 1e9, dt.UTC) == dt.datetime(2022, 11, 18, 1, 15, tzinfo=dt.UTC)
    salvo = load_scenario("srbm-salvo-2022-06-05")
    assert len(salvo.missiles) == 8
    assert len({(m.launch_lat_deg, m.launch_lon_deg) for m in salvo.missiles}) == 4
    assert max(m.launch_time_s for m in salvo.missiles) <= 35 * 60


def test_fault_overlays_apply_to_any_scenario() -> None:
    assert {"jpn-outage", "degraded-links", "clock-skew", "spoof-replay"} <= set(list_fault_overlays())
    base = load_scenario("kn23-2023-03-19")
    assert base.faults == []
    sc = load_scenario("kn23-2023-03-19+jpn-outage+degraded-links")
    kinds = {f.kind for f in sc.faults}
    assert kinds == {"node_outage", "link_delay", "link_loss", "link_partition"}
    assert sc.name == "kn23-2023-03-19+jpn-outage+degraded-links"
    assert sc.missiles == base.missiles
    delay = next(f for f in sc.faults if f.kind == "link_delay")
    assert delay.params["delay_ms"] == 40.0
    every = set()
    for o in list_fault_overlays():
        every |= {f.kind for f in load_scenario("slbm-sinpo+" + o).faults}
    assert every == {"node_outage", "link_delay", "link_loss", "link_partition", "clock_skew", "spoof", "replay"}


def test_bad_faults_and_names_say_what_is_wrong(tmp_path) -> None:
    with pytest.raises(ScenarioError, match="unknown fault kind"):
        Fault("meteor", "JPN", 0.0, 1.0)
    with pytest.raises(ScenarioError, match="not one of"):
        Fault("node_outage", "PRK", 0.0, 1.0)
    with pytest.raises(ScenarioError, match="ends"):
        Fault("node_outage", "JPN", 5.0, 1.0)
    with pytest.raises(ScenarioError, match="unknown scenario"):
        load_scenario("no-such-launch")
    with pytest.raises(ScenarioError, match="unknown fault overlay"):
        load_scenario("kn23-2023-03-19+no-such-overlay")
    bad = tmp_path / "bad.toml"
    bad.write_text('start = "2024-01-01T00:00:00Z"\n[[launch]]\nclass = "kn-23"\nlat_deg = 39\nlon_deg = 125\n')
    with pytest.raises(ScenarioError, match="azimuth_deg or aim"):
        load_scenario(str(bad))
    bad.write_text('start = "2024-01-01T00:00:00"\n[[launch]]\nclass = "kn-23"\nlat_deg = 39\nlon_deg = 125\nazimuth_deg = 90\nrange_km = 300\n')
    with pytest.raises(ScenarioError, match="time zone"):
        load_scenario(str(bad))
    bad.write_text('start = "2024-01-01T00:00:00Z"\n[[launch]]\nclass = "scud-z"\nlat_deg = 39\nlon_deg = 125\nazimuth_deg = 90\nrange_km = 300\n')
    with pytest.raises(ScenarioError, match="unknown missile class"):
        load_scenario(str(bad))


def test_a_user_scenario_with_an_aim_point_and_a_profile(tmp_path) -> None:
    """A launch by site, time and aim point only: the solver picks a minimum-energy loft."""
    from warnshare.geo import great_circle_distance_m

    f = tmp_path / "mine.toml"
    f.write_text(
        'name = "mine"\ndescription = "a Nodong at Japan\'s EEZ"\nstart = "2024-05-01T00:00:00Z"\n'
        "[[launch]]\nid = \"N1\"\nclass = \"nodong\"\nlat_deg = 39.0\nlon_deg = 127.5\ntime_s = 10\n"
        "aim_lat_deg = 40.0\naim_lon_deg = 135.0\nprofile = \"minimum-energy\"\n"
        '[[fault]]\nkind = "clock_skew"\nnation = "KOR"\nstart_s = 0\nend_s = 100\nskew_s = 2.5\n'
    )
    sc = load_scenario(str(f))
    assert sc.faults[0].params == {"skew_s": 2.5}
    r = simulate(sc, nations=["JPN"])
    tr = r.truth["N1"]
    assert great_circle_distance_m(tr.impact_lat_deg, tr.impact_lon_deg, 40.0, 135.0) < 0.02 * tr.range_m
    assert tr.launch_ns == sc.start_ns + 10 * 10**9
    assert 0.15 < tr.apogee_m / tr.range_m < 0.3  # minimum energy: about a quarter of the range
    assert list(r.national_tracks) == ["JPN"]


def test_sim_list(capsys) -> None:
    assert main(["sim", "--list"]) == 0
    out = capsys.readouterr().out
    for name in NAMED:
        assert name in out
    assert "jpn-outage" in out


def test_sim_scenario_json_out_and_plot(tmp_path, capsys) -> None:
    out_file = tmp_path / "run.json.gz"
    png = tmp_path / "run.png"
    rc = main(["sim", "--scenario", "kn23-2023-03-19", "--json", "--seed", "3", "--out", str(out_file),
               "--plot", str(png)])
    assert rc == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert "[" in captured.err  # progress lines
    m = summary["missiles"][0]
    assert m["missile_id"] == "KN23-1" and m["class"] == "kn-23"
    assert m["apogee_km"] == pytest.approx(50.0, rel=0.02)
    assert m["range_km"] == pytest.approx(800.0, rel=0.02)
    nations_seen = {s["nation"] for s in m["seen_by"]}
    assert nations_seen == {"USA", "JPN", "KOR"}
    assert m["national_tracks"]["KOR"]["first_available_s"] < m["national_tracks"]["JPN"]["first_available_s"]
    with gzip.open(out_file, "rt") as f:
        doc = json.load(f)
    assert doc["format"] == "warnshare-sim/1"
    assert len(doc["truth"]["KN23-1"]["times_ns"]) == len(doc["truth"]["KN23-1"]["position_ecef_m"])
    kdx = doc["measurements"]["KOR-KDX3-SEJONG"]
    assert kdx["columns"] == ["range_m", "azimuth_deg", "elevation_deg"]
    assert len(kdx["times_ns"]) == len(kdx["values"]) == len(kdx["truth_id"])
    first = doc["national_tracks"]["KOR"][0]
    assert len(first["covariance"]) == 6 and first["track_quality"] in range(16)
    assert png.stat().st_size > 50_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sim_text_summary_and_errors(capsys) -> None:
    assert main(["sim", "--scenario", "early-failure", "--nations", "KOR", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "FAIL-1 hwasong-17" in out and "breaks up at 55 s" in out and "KOR:" in out
    assert main(["sim", "--scenario", "nope"]) == 2
    assert "unknown scenario" in capsys.readouterr().err
    assert main(["sim", "--scenario", "early-failure", "--nations", "PRK"]) == 2
    assert main(["sim"]) == 2
