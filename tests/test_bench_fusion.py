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


def test_an_update_is_scored_against_the_missile_whose_report_made_it() -> None:
    # A contender that folds one missile's reports into another missile's track, its state
    # staying on that other missile, has no picture of the missile reported: scored against
    # the track's majority owner it would look exact.
    import dataclasses

    import numpy as np
    from sims import simulate

    sim = simulate(bf.scenarios(quick=True)["salvo8"], seed=0)
    reps = bf.to_reports(sim)[:1500]
    good = bf.run_engine(reps)
    mids = sorted({m for _t, m, _r in reps})
    a, b = mids[0], mids[1]
    track_a = next(good.track_ids[k] for k, (_t, m, _r) in enumerate(reps) if m == a and good.track_ids[k])
    b_idx = [k for k, (_t, m, _r) in enumerate(reps) if m == b and good.track_ids[k] is not None][:20]
    ids, states = list(good.track_ids), list(good.states)
    for k in b_idx:
        p, v = sim.truth[a].state_at(good.tovs[k])
        ids[k], states[k] = track_a, np.concatenate([p[0], v[0]])
    folded = dataclasses.replace(good, track_ids=ids, states=states)
    s_good, s_folded = bf.score(good, reps, sim, full=False), bf.score(folded, reps, sim, full=False)
    assert s_folded["updates_on_another_missiles_track"] == s_good["updates_on_another_missiles_track"] + len(b_idx)
    # the owner's view barely moves (those updates are exact for missile a) ...
    assert s_folded["all_updates_position_rmse_vs_owner_m"] <= 1.05 * s_good["all_updates_position_rmse_vs_owner_m"]
    # ... the reported missile's view counts them as the misses they are
    assert s_folded["all_updates_position_rmse_m"] > 3 * s_good["all_updates_position_rmse_m"]
    # A report whose label lags (a national track that has just taken the neighbour's returns)
    # but which lies on the track's owner is the owner's: following it is no error.
    a_idx = [k for k, (_t, m, _r) in enumerate(reps) if m == a and good.track_ids[k] == track_a][:20]
    relabelled = [(t, b, r) if k in a_idx else (t, m, r) for k, (t, m, r) in enumerate(reps)]
    s_relabelled = bf.score(good, relabelled, sim, full=False)
    assert s_relabelled["updates_on_another_missiles_track"] == s_good["updates_on_another_missiles_track"]
    assert s_relabelled["all_updates_position_rmse_m"] == s_good["all_updates_position_rmse_m"]
