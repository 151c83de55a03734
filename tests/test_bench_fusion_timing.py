"""`warnshare bench fusion` timing: warm-up, interleaved repeats, best-of speed, quality from one run."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from warnshare.bench import fusion as bf

#: a prefix of the quick 8-salvo's reports: both missiles launched, impact predictions made
N_REPORTS = 600
SPEED_KEYS = {"median_update_us", "mean_update_us", "total_cpu_per_report_us", "median_update_us_runs",
              "timing_runs", "runs_with_different_output", "different_runs", "median_of_best_per_report_us"}


@pytest.fixture(scope="module")
def case() -> tuple[list, object]:
    from sims import simulate

    sim = simulate(bf.scenarios(quick=True)["salvo8"], seed=0)
    return bf.to_reports(sim)[:N_REPORTS], sim


@pytest.fixture(scope="module")
def rows2(case: tuple) -> tuple[dict, bf.Output]:
    reps, sim = case
    return bf.table_rows(reps, sim, 2, stonesoup=False)


def test_the_engine_says_the_same_on_every_run(case: tuple) -> None:
    reps, _sim = case
    a, b = bf.run_engine(reps), bf.run_engine(reps)
    assert a.alerts and a.alerts == b.alerts
    assert bf.same_output(a, b)
    # and the comparison can fail: one state moved by a millimetre
    k = next(i for i, s in enumerate(b.states) if s is not None)
    b.states[k] = b.states[k] + np.array([1e-3, 0, 0, 0, 0, 0])
    assert not bf.same_output(a, b)


def test_timed_repeats_leave_the_quality_figures_unchanged(case: tuple, rows2: tuple) -> None:
    reps, sim = case
    one, ours1 = bf.table_rows(reps, sim, 1, stonesoup=False)
    two, ours2 = rows2
    # the sequential independent fuser is scored beside them on the engine's run, not timed
    assert set(one) == set(two) == {"warnshare", "warnshare-independent", "warnshare-sequential"}
    assert ours1.alerts == ours2.alerts
    for name in one:
        q1 = {k: v for k, v in one[name].items() if k not in SPEED_KEYS}
        q2 = {k: v for k, v in two[name].items() if k not in SPEED_KEYS}
        assert q1.keys() == q2.keys() and math.isfinite(q1["all_updates_position_rmse_m"])
        assert all(q1[k] == q2[k] or (q1[k] != q1[k] and q2[k] != q2[k]) for k in q1), name  # NaN == NaN
        if name == "warnshare-sequential":
            assert "median_update_us_runs" not in two[name]
            continue
        r = two[name]
        assert r["timing_runs"] == 2 and len(r["median_update_us_runs"]) == 2
        assert r["median_update_us"] == min(r["median_update_us_runs"]) > 0
        # each report's best is no slower than that report in any run, so neither is their median
        assert 0 < r["median_of_best_per_report_us"] <= r["median_update_us"]
        assert r["runs_with_different_output"] == 0 and r["different_runs"] == []


def test_contenders_are_warmed_up_then_interleaved(case: tuple) -> None:
    reps, sim = case
    out = bf.run_engine(reps)
    calls: list[tuple[str, int]] = []

    def runner(name: str) -> bf.Runner:
        def run(r: list) -> bf.Output:
            calls.append((name, len(r)))
            return dataclasses.replace(out, name=name)
        return run

    res = bf.timed_runs(reps, {"A": runner("A"), "B": runner("B")}, 3, sim, warmup=50)
    assert calls == [("A", 50), ("B", 50)] + [("A", len(reps)), ("B", len(reps))] * 3
    assert [len(t.median_us) for t in res.values()] == [3, 3]
    with pytest.raises(ValueError):
        bf.timed_runs(reps, {"A": runner("A")}, 0, sim)


def test_a_run_that_differs_from_the_first_is_scored_and_counted(case: tuple) -> None:
    reps, sim = case
    good = bf.run_engine(reps)
    # the second timed run gives every update to one track: fewer tracks
    merged = dataclasses.replace(good, track_ids=[None if t is None else 1 for t in good.track_ids])
    outputs = iter([good, good, merged, good])
    res = bf.timed_runs(reps, {"flaky": lambda r: next(outputs)}, 3, sim, warmup=10)
    t = res["flaky"]
    assert t.first is good and len(t.differing) == 1
    d = t.differing[0]
    assert d["run"] == 2
    first = bf.score(good, reps, sim, full=False)
    assert d["fused_tracks"] == 1 < first["fused_tracks"]
    assert d["all_updates_position_rmse_vs_owner_m"] > first["all_updates_position_rmse_vs_owner_m"]
    assert d["updates_on_another_missiles_track"] > first["updates_on_another_missiles_track"]
    row = bf.speed_fields(t)
    assert row["runs_with_different_output"] == 1 and row["different_runs"] == [d]


def test_the_summary_carries_every_run_and_the_best(rows2: tuple) -> None:
    rows = dict(rows2[0])
    # the Stone Soup row stands in as a slower copy of the engine's, to exercise the ratios
    ss = dict(rows["warnshare"])
    ss["median_update_us_runs"] = [20 * v for v in ss["median_update_us_runs"]][::-1]
    ss["median_update_us"] = min(ss["median_update_us_runs"])
    rows["stonesoup-ekf"] = ss
    sc = {"rows": rows, "completeness_without_nation": {"KOR": 1.0},
          "completeness_coasting_without_nation": {"KOR": 1.0},
          "first_alert_latency_s_max": 0.0, "report_period_s": 1.0}
    out = bf.must_show({"scenarios": {"salvo8": sc}})
    w = rows["warnshare"]
    assert out["salvo8.median_update_us_runs"] == w["median_update_us_runs"]
    assert out["salvo8.median_update_us"] == min(w["median_update_us_runs"])
    assert out["salvo8.stonesoup_ekf_median_update_us_runs"] == ss["median_update_us_runs"]
    # best against best, and run against run
    assert out["salvo8.speedup_vs_stonesoup_ekf"] == pytest.approx(ss["median_update_us"] / w["median_update_us"])
    assert out["salvo8.speedup_vs_stonesoup_ekf_runs"] == pytest.approx(
        [a / b for a, b in zip(ss["median_update_us_runs"], w["median_update_us_runs"], strict=True)])
    assert out["salvo8.runs_with_different_output"] == 0


def test_stonesoup_anchor_numbers_each_track_once(case: tuple) -> None:
    pytest.importorskip("stonesoup")
    reps, sim = case
    a = bf.run_stonesoup(reps[:300], False)
    b = bf.run_stonesoup(reps[:300], False)
    assert bf.same_output(a, b)
    # numbers are handed out 1, 2, 3, ... in order of creation, never twice
    seen: list[int] = []
    for t in a.track_ids:
        if t is not None and t not in seen:
            seen.append(t)
    assert seen == list(range(1, len(seen) + 1)) and len(seen) >= 2
