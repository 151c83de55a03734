"""`warnshare bench fusion`: its Monte-Carlo part is a function of scenario and seed, whatever the pool."""

from __future__ import annotations

import math

from warnshare.bench import fusion as bf


def test_monte_carlo_runs_are_the_same_serial_and_in_a_process_pool() -> None:
    scen = {"salvo8": bf.scenarios(quick=True)["salvo8"]}
    jobs = [("salvo8", 1), ("salvo8", 2)]
    serial = bf._monte_carlo(scen, jobs, 1)
    pooled = bf._monte_carlo(scen, jobs, 2)
    assert serial.keys() == pooled.keys() == set(jobs)
    for job in jobs:
        a, b = serial[job], pooled[job]
        assert a["coverage_all"] and a["coverage_all"] == b["coverage_all"]
        assert a["impact_points"] == b["impact_points"]
        assert a["average_nees"] == b["average_nees"] and math.isfinite(a["average_nees"])
        # each run scores fused RMSE against the best nation's, as the seed-0 table does
        assert a["rmse_ratio_vs_best_nation"] == b["rmse_ratio_vs_best_nation"]
        assert 0.0 < a["rmse_ratio_vs_best_nation"] < 2.0
    # different seeds are different draws
    assert serial[jobs[0]]["impact_points"] != serial[jobs[1]]["impact_points"]
