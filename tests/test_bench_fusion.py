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
        # both fusers that assume independence run on these first seeds, alike in any pool
        for k in ("average_nees_independent", "average_nees_sequential"):
            assert a[k] == b[k] and math.isfinite(a[k])
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


# ------------------------------------------------------------------ the sequential independent fuser


def _filtered_tracks(seed: int, per_s: int = 1, **launch: float) -> tuple[list, dict]:
    """Two nations' national tracks of one ballistic missile as a tracker gives them: each nation
    filters its own radar's noisy positions (independent, white, 150 m) with a Kalman filter and
    reports the filtered state and covariance ``per_s`` times a second, the two nations half a
    period apart; ``launch``: the missile's ``Launch`` fields (default: an SRBM, apogee ~90 km). Each track alone is consistent; its errors are correlated in time, as a filter's are.
    Returns the reports as (available_ns, missile_id, report) and the truth for ``bf.score``."""
    import numpy as np

    from warnshare.bench.naive import sequential_fuse
    from warnshare.fusion.synthetic import Launch, fly
    from warnshare.protocol import NATIONS, FlightPhase, Nation, TrackReport, covariance_to_upper

    t0 = 1_700_000_000 * bf.NS
    truth = fly(Launch(39.0, 125.7, 80.0, t0, **launch), dt=0.5)
    after_burn = t0 + int((launch.get("burn_s", 60.0) + 10.0) * bf.NS)
    sig_p, sig_v = 150.0, 300.0  # a radar measures position; velocity only weakly
    r_meas = covariance_to_upper(np.diag([sig_p**2] * 3 + [sig_v**2] * 3))
    rng = np.random.default_rng(seed)
    reps = []
    period_ns = bf.NS // per_s
    for n, (nation, offset_ns) in enumerate([(Nation.USA, 0), (Nation.JPN, period_ns // 2)]):
        times = range(after_burn + offset_ns, int(truth.t_ns[-1]) - 30 * bf.NS, period_ns)
        meas = []
        for i, t in enumerate(times):
            z = truth.at(t) + rng.normal(0.0, [sig_p] * 3 + [sig_v] * 3)
            meas.append(TrackReport(seq=i + 1, nation=nation, track_number=1, time_of_validity_ns=t, measured_ns=t,
                                    position_ecef_m=z[:3].tolist(), velocity_ecef_mps=z[3:].tolist(),
                                    covariance=r_meas, track_quality=10, flight_phase=FlightPhase.MIDCOURSE,
                                    releasable_to=list(NATIONS)))
        states, covs, _tovs = sequential_fuse(meas, [1] * len(meas))
        for m, x, p in zip(meas, states, covs, strict=True):
            rep = m.model_copy(update={"track_number": 100 + n, "position_ecef_m": x[:3].tolist(),
                                       "velocity_ecef_mps": x[3:].tolist(), "covariance": covariance_to_upper(p)})
            reps.append((m.time_of_validity_ns, "M1", rep))
    reps.sort(key=lambda r: (r[0], r[2].nation))

    class _Truth:
        def state_at(self, t_ns: int) -> tuple:
            s = truth.at(int(t_ns))
            return s[None, :3], s[None, 3:]

    sim = type("Sim", (), {"truth": {"M1": _Truth()}})()
    return reps, sim


def _nees_of(reports: list, sim: object) -> float:
    import numpy as np

    from warnshare import metrics
    from warnshare.protocol import covariance_from_upper

    err, cov = [], []
    for _t, mid, r in reports:
        p, v = sim.truth[mid].state_at(r.time_of_validity_ns)
        err.append(np.array(r.position_ecef_m + r.velocity_ecef_mps) - np.concatenate([p[0], v[0]]))
        cov.append(np.array(covariance_from_upper(r.covariance)))
    return float(metrics.nees(np.array(err), np.array(cov)).mean())


def test_the_sequential_fuser_fails_nees_on_filtered_tracks_where_ci_does_not() -> None:
    from warnshare import metrics

    # a lofted missile (apogee ~560 km), tracked above the atmosphere, where the engine's
    # acceleration noise is small and a Kalman filter remembers long enough to count each
    # national track's past many times over; two nations reporting twice a second
    reps, sim = _filtered_tracks(seed=3, per_s=2, burn_s=90.0, thrust_mps2=45.0, elevation_deg=60.0)
    lo, hi = metrics.nees_bounds(1)
    # each nation's own track is consistent (a Kalman filter on independent measurements is the
    # same code taking independent data: it is no failure of the fuser's arithmetic) ...
    for nation in ("USA", "JPN"):
        assert lo <= _nees_of([r for r in reps if r[2].nation.value == nation], sim) <= hi
    engine = bf.run_engine(reps)
    seq = bf.run_sequential(reps, engine)
    s_ci, s_seq = bf.score(engine, reps, sim, full=False), bf.score(seq, reps, sim, full=False)
    # ... the engine's CI of the two tracks stays inside the band; taking the filtered tracks
    # as independent measurements counts each track's past again at every report: outside it,
    # several times the engine's
    assert s_ci["fused_tracks"] == 1
    assert lo <= s_ci["average_nees"] <= hi
    assert s_seq["average_nees"] > hi
    assert s_seq["average_nees"] > 4 * s_ci["average_nees"]
    # overconfident, not inaccurate: its errors are no larger than the engine's by much
    assert s_seq["all_updates_position_rmse_m"] < 1.5 * s_ci["all_updates_position_rmse_m"]


def test_the_sequential_fuser_lines_up_with_the_reports_and_the_engines_association() -> None:
    import numpy as np

    from warnshare.bench.naive import sequential_fuse
    from warnshare.protocol import covariance_from_upper

    reps, sim = _filtered_tracks(seed=4)
    engine = bf.run_engine(reps)
    # a report the engine made no update for (here: blanked) is skipped, nothing else moves
    blank = len(reps) // 2
    engine.track_ids[blank] = None
    seq = bf.run_sequential(reps, engine)
    assert len(seq.states) == len(seq.covs) == len(seq.tovs) == len(seq.track_ids) == len(reps)
    assert seq.track_ids == engine.track_ids
    assert seq.states[blank] is None and seq.covs[blank] is None
    assert all(s is not None for k, s in enumerate(seq.states) if engine.track_ids[k] is not None)
    assert seq.tovs == [r.time_of_validity_ns for _t, _m, r in reps]
    # the first report of the event initialises it; the covariance only shrinks from there
    first = next(k for k, tid in enumerate(engine.track_ids) if tid is not None)
    assert np.array_equal(seq.states[first], np.array(reps[first][2].position_ecef_m + reps[first][2].velocity_ecef_mps))
    last = max(k for k, tid in enumerate(engine.track_ids) if tid is not None)
    r_last = np.array(covariance_from_upper(reps[last][2].covariance))
    assert np.trace(seq.covs[last]) < np.trace(r_last)
    # a report older than its event's state (another nation's, late) is predicted backwards:
    # fed in reverse time order, the fuser stays as close to the truth as fed forward
    back = list(reversed(reps))
    ids = list(reversed(engine.track_ids))
    states, _covs, _tovs = sequential_fuse([r for _t, _m, r in back], ids)

    def rmse(sts: list, rs: list) -> float:
        e = [s[:3] - sim.truth["M1"].state_at(r.time_of_validity_ns)[0][0]
             for s, (_t, _m, r) in zip(sts, rs, strict=True) if s is not None]
        return float(np.sqrt(np.mean(np.sum(np.square(e), axis=1))))

    assert rmse(states, back) < 1.5 * rmse(seq.states, reps)
    try:
        bf.run_sequential(reps[:-1], engine)
    except ValueError:
        pass
    else:
        raise AssertionError("an engine output that does not line up with the reports must be refused")
