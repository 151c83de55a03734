"""`warnshare bench fusion`: the engine's quality and speed against Stone Soup, in one run.

Same scenarios (sims: the 8-SRBM salvo of 2022-06-05 and a 20-missile salvo built from it),
same national track reports, same metrics. Anchors: Stone Soup's EKF with a Mahalanobis
``DistanceHypothesiser`` and ``GNNWith2DAssignment`` (national tracks as Gaussian detections,
independence assumed) and the same tracker with its CI ``ChernoffUpdater``. Beside them, two
fusers that assume the nations' errors independent, there to fail the NEES band: the engine
with ``fusion_rule="independent"`` (memoryless) and a sequential Kalman filter on the engine's
association (``naive``; scored, not timed). Speed is the time
per fused track update (per national report), measured in this process for every contender the
same way: a warm-up pass, then ``--timing-runs`` interleaved runs on the same reports, the best
run's median reported (noise on a shared machine only adds time) and every run's kept; quality
is scored on the first run.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from warnshare import metrics
from warnshare.fusion import FusionConfig, FusionEngine, dynamics
from warnshare.protocol import (
    NATIONS,
    AlertKind,
    FlightPhase,
    GroundEstimate,
    Nation,
    TrackReport,
    covariance_from_upper,
    covariance_to_upper,
)

NS = 1_000_000_000
GOSPA_C_M = 10_000.0
#: A track counts as held this long after its last update (the engine's lost time-out).
COAST_NS = 20 * NS
SALVO8 = "srbm-salvo-2022-06-05"
#: Monte-Carlo seeds on which the memoryless naive (independence-assuming) fuser also runs (the
#: sequential one, cheap, runs on every seed; its NAIVE_SEEDS average is reported beside).
NAIVE_SEEDS = 10
#: Reports in the untimed warm-up pass each contender makes before its timed runs: enough to go
#: through every code path once (imports, lazy caches, first impact predictions).
WARMUP_REPORTS = 500


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a reduced run, under a minute")
    parser.add_argument("--json", metavar="FILE", help="write the figures (summary object) as JSON")
    parser.add_argument("--seeds", type=int, default=None,
                        help="Monte-Carlo seeds per salvo for coverage, swaps, NEES (default 100, quick 1)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="processes for the Monte-Carlo seeds (default 1; the timed tables always run in this process)")
    parser.add_argument("--plot", metavar="PNG", help="plot impact error against time since launch")
    parser.add_argument("--no-stonesoup", action="store_true", help="skip the Stone Soup anchors")
    parser.add_argument("--timing-runs", type=int, default=None, metavar="K",
                        help="timed runs of each contender on the seed-0 reports, interleaved; the best "
                             "run's median is reported (default 3, quick 1)")
    parser.add_argument("--coverage-by-class", action="store_true",
                        help="Monte-Carlo ellipse coverage and median size by missile class and flight phase")


# ------------------------------------------------------------------ scenarios


def scenarios(quick: bool) -> dict[str, Any]:
    from sims import load_scenario

    s8 = load_scenario(SALVO8)
    s20 = salvo20(s8)
    if quick:
        # the first two launches of each salvo: the same code paths, in under a minute
        return {
            "salvo8": dataclasses.replace(s8, missiles=s8.missiles[:2], duration_s=700.0),
            "salvo20": dataclasses.replace(s20, missiles=s20.missiles[:3], duration_s=700.0),
        }
    return {"salvo8": s8, "salvo20": s20}


def salvo20(base: Any) -> Any:
    """Twenty launches, 15 s apart, from the four sites of the 2022-06-05 salvo with their
    classes, azimuths, apogees and ranges cycled and spread a little."""
    specs = []
    for i in range(20):
        b = base.missiles[i % len(base.missiles)]
        specs.append(
            dataclasses.replace(
                b,
                missile_id=f"M{i + 1:02d}",
                launch_time_s=15.0 * i,
                azimuth_deg=(b.azimuth_deg or 90.0) + (i // len(base.missiles)) * 3.0,
            )
        )
    return dataclasses.replace(base, name="srbm-salvo-20", missiles=tuple(specs), duration_s=1200.0)


def to_reports(sim: Any, drop: str | None = None) -> list[tuple[int, str, TrackReport]]:
    """National track updates as wire reports: (available_ns, missile_id, report), in arrival order."""
    out = []
    for nation, updates in sim.national_tracks.items():
        if nation == drop:
            continue
        for seq, u in enumerate(updates, start=1):
            launch = _ground(u.launch_estimate)
            impact = _ground(u.impact_estimate)
            rep = TrackReport(
                seq=seq,
                nation=Nation(nation),
                track_number=u.track_number,
                time_of_validity_ns=u.time_of_validity_ns,
                measured_ns=u.time_of_validity_ns,
                position_ecef_m=list(u.position_ecef_m),
                velocity_ecef_mps=list(u.velocity_ecef_mps),
                covariance=covariance_to_upper(u.covariance),
                track_quality=int(u.track_quality),
                boosting=bool(u.boosting),
                lost=bool(u.lost),
                flight_phase=FlightPhase(u.flight_phase) if u.flight_phase in FlightPhase.__members__ else FlightPhase.UNKNOWN,
                launch_estimate=launch,
                impact_estimate=impact,
                releasable_to=list(NATIONS),
            )
            out.append((u.available_ns, u.missile_id, rep))
    out.sort(key=lambda r: (r[0], r[2].nation, r[2].track_number, r[2].seq))
    return out


def _ground(d: dict | None) -> GroundEstimate | None:
    if not d:
        return None
    try:
        return GroundEstimate.model_validate(d)
    except Exception:
        return None


# ------------------------------------------------------------------ contenders


@dataclasses.dataclass
class Output:
    """What a contender said after each report: its fused track id and state (or None)."""

    name: str
    track_ids: list[int | None]
    states: list[np.ndarray | None]  # (6,)
    covs: list[np.ndarray | None]  # (6, 6)
    n_nations: list[int]
    times_ns: list[int]  # per-report processing time
    tovs: list[int] = dataclasses.field(default_factory=list)  # time of validity of each state
    tick_ns: int = 0  # time spent in tick (re-association, time-outs), for the per-report total
    alerts: list = dataclasses.field(default_factory=list)  # (report index, Alert)


def run_engine(reps: list[tuple[int, str, TrackReport]], config: FusionConfig | None = None, name: str = "warnshare") -> Output:
    engine = FusionEngine(config or FusionConfig())
    out = Output(name, [], [], [], [], [])
    next_tick = None
    for k, (t_rx, _mid, rep) in enumerate(reps):
        if next_tick is None:
            next_tick = t_rx + NS
        while t_rx >= next_tick:
            t0 = time.perf_counter_ns()
            ticked = engine.tick(next_tick)
            out.tick_ns += time.perf_counter_ns() - t0
            out.alerts += [(k, a) for a in ticked]
            next_tick += NS
        t0 = time.perf_counter_ns()
        alerts = engine.ingest(rep, node_sent_ns=t_rx, received_ns=t_rx)
        out.times_ns.append(time.perf_counter_ns() - t0)
        upd = next((a for a in alerts if a.kind == AlertKind.TRACK_UPDATE), None)
        if upd is None:
            out.track_ids.append(None)
            out.states.append(None)
            out.covs.append(None)
            out.n_nations.append(0)
        else:
            st = upd.state
            out.track_ids.append(upd.event_id)
            out.states.append(np.array(st.position_ecef_m + st.velocity_ecef_mps))
            out.covs.append(np.array(covariance_from_upper(st.covariance)))
            out.n_nations.append(len(upd.nations))
        out.tovs.append(upd.state.time_of_validity_ns if upd is not None else rep.time_of_validity_ns)
        out.alerts += [(k, a) for a in alerts]
    if reps:
        t = reps[-1][0]
        for dt in (30, 60, 120):
            out.alerts += [(len(reps) - 1, a) for a in engine.tick(t + dt * NS)]
    return out


def run_stonesoup(reps: list[tuple[int, str, TrackReport]], chernoff: bool) -> Output:
    """Stone Soup as the anchor: each national report is a GaussianDetection of the full state."""
    from datetime import UTC, datetime

    from stonesoup.dataassociator.neighbour import GNNWith2DAssignment
    from stonesoup.hypothesiser.distance import DistanceHypothesiser
    from stonesoup.measures import Mahalanobis
    from stonesoup.models.measurement.linear import LinearGaussian
    from stonesoup.models.transition.linear import (
        CombinedLinearGaussianTransitionModel,
        ConstantVelocity,
    )
    from stonesoup.predictor.kalman import ExtendedKalmanPredictor
    from stonesoup.types.detection import GaussianDetection
    from stonesoup.types.state import GaussianState
    from stonesoup.types.track import Track
    from stonesoup.updater.chernoff import ChernoffUpdater
    from stonesoup.updater.kalman import ExtendedKalmanUpdater

    # ECEF position/velocity interleaved as Stone Soup's CV model wants (x, vx, y, vy, z, vz)
    order = [0, 3, 1, 4, 2, 5]
    inv_order = np.argsort(order)
    transition = CombinedLinearGaussianTransitionModel([ConstantVelocity(100.0)] * 3)
    predictor = ExtendedKalmanPredictor(transition)
    base_model = LinearGaussian(ndim_state=6, mapping=tuple(range(6)), noise_covar=np.eye(6))
    updater = ChernoffUpdater(measurement_model=base_model) if chernoff else ExtendedKalmanUpdater(base_model)
    hyp = DistanceHypothesiser(predictor, updater, measure=Mahalanobis(), missed_distance=30.0)
    assoc = GNNWith2DAssignment(hyp)
    tracks: set = set()
    # keyed by the Track itself (identity hash), which keeps deleted tracks alive: keyed by
    # id(track), a deleted track's address could be reused by a new one and two tracks ended up
    # sharing a number (a false swap, a missing track, km of RMSE) depending on the allocator
    ids: dict[Track, int] = {}
    out = Output("stonesoup-" + ("ci" if chernoff else "ekf"), [], [], [], [], [])
    last_seen: dict[Track, int] = {}
    for _t_rx, _mid, rep in reps:
        if rep.lost:
            out.track_ids.append(None)
            out.states.append(None)
            out.covs.append(None)
            out.n_nations.append(0)
            out.times_ns.append(0)
            out.tovs.append(rep.time_of_validity_ns)
            continue
        t0 = time.perf_counter_ns()
        ts = datetime.fromtimestamp(rep.time_of_validity_ns / NS, tz=UTC).replace(tzinfo=None)
        x = np.array(rep.position_ecef_m + rep.velocity_ecef_mps)[order]
        p = np.array(covariance_from_upper(rep.covariance))[np.ix_(order, order)]
        model = LinearGaussian(ndim_state=6, mapping=tuple(range(6)), noise_covar=p)
        det = GaussianDetection(x.reshape(6, 1), p, timestamp=ts, measurement_model=model)
        # tracks not seen for 30 s are deleted (the anchor's deleter)
        for tr in [tr for tr in tracks if rep.time_of_validity_ns - last_seen[tr] > 30 * NS]:
            tracks.discard(tr)
        hyps = assoc.associate(tracks, {det}, ts) if tracks else {}
        chosen = None
        for tr, h in hyps.items():
            if h.measurement is det:
                tr.append(updater.update(h))
                chosen = tr
        if chosen is None:
            chosen = Track([GaussianState(x.reshape(6, 1), p, timestamp=ts)])
            tracks.add(chosen)
            ids[chosen] = len(ids) + 1
        last_seen[chosen] = rep.time_of_validity_ns
        out.times_ns.append(time.perf_counter_ns() - t0)
        st = chosen.state
        sv = np.asarray(st.state_vector, dtype=float).ravel()[inv_order]
        cv = np.asarray(st.covar, dtype=float)[np.ix_(inv_order, inv_order)]
        out.track_ids.append(ids[chosen])
        out.states.append(sv)
        out.covs.append(cv)
        out.n_nations.append(1)
        out.tovs.append(int(st.timestamp.replace(tzinfo=UTC).timestamp() * 1e6) * 1000)
    return out


def run_sequential(reps: list[tuple[int, str, TrackReport]], engine_out: Output,
                   config: FusionConfig | None = None) -> Output:
    """The sequential independent fuser (``naive.sequential_fuse``) on the engine's own
    association: report ``k`` goes to the event the engine's run ``engine_out`` put it in
    (skipped where the engine made no update), so that only the fusion rule differs. Its
    ``n_nations`` are the engine's, so that "two or more nations" scores the same updates.
    Not timed (``times_ns`` 0): it is here to show a failure, not to race."""
    from warnshare.bench.naive import sequential_fuse

    if len(engine_out.track_ids) != len(reps):
        raise ValueError("the engine's output does not line up with the reports")
    states, covs, tovs = sequential_fuse([r for _t, _m, r in reps], engine_out.track_ids, config)
    return Output("sequential", list(engine_out.track_ids), states, covs,
                  [n if s is not None else 0 for n, s in zip(engine_out.n_nations, states, strict=True)],
                  [0] * len(reps), tovs)


# ------------------------------------------------------------------ timing


Runner = Callable[[list], Output]


def runners(stonesoup: bool) -> dict[str, Runner]:
    """The contenders by row name, in the order each round of timed runs goes through them."""
    out: dict[str, Runner] = {
        "warnshare": run_engine,
        "warnshare-independent": lambda reps: run_engine(reps, FusionConfig(fusion_rule="independent"), "independent"),
    }
    if stonesoup:
        out["stonesoup-ekf"] = lambda reps: run_stonesoup(reps, False)
        out["stonesoup-ci"] = lambda reps: run_stonesoup(reps, True)
    return out


@dataclasses.dataclass
class Timed:
    """One contender's timed runs on the same reports: the first run's output (the one scored),
    each run's speed figures in us, and the runs whose output was not the first's."""

    first: Output
    median_us: list[float]
    mean_us: list[float]
    total_us: list[float]
    differing: list[dict[str, Any]]
    #: each report's fastest time over the runs (ns): noise hits a report in one run, not in all
    best_ns: np.ndarray | None = None


def speed_us(out: Output) -> tuple[float, float, float]:
    """Median and mean time per update (reports a contender skipped, timed 0, left out) and
    total CPU per report including the engine's ``tick``, in us."""
    t = [x for x in out.times_ns if x > 0]
    med = float(np.median(t)) / 1000.0 if t else math.nan
    mean = float(np.mean(t)) / 1000.0 if t else math.nan
    return med, mean, (sum(out.times_ns) + out.tick_ns) / max(1, len(out.times_ns)) / 1000.0


def same_output(a: Output, b: Output) -> bool:
    """Whether two runs said the same thing after every report (track ids, states, covariances,
    alerts), timings aside."""
    def same(xs: list, ys: list) -> bool:
        return len(xs) == len(ys) and all(
            (x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))
            for x, y in zip(xs, ys, strict=True))

    return (a.track_ids == b.track_ids and a.tovs == b.tovs and a.n_nations == b.n_nations
            and same(a.states, b.states) and same(a.covs, b.covs) and a.alerts == b.alerts)


def timed_runs(reps: list, contenders: dict[str, Runner], k: int, sim: Any,
               warmup: int = WARMUP_REPORTS) -> dict[str, Timed]:
    """Time every contender the same way on the same reports.

    A warm-up first (the region caches built, one untimed pass of each contender over the first
    ``warmup`` reports: imports, lazy caches and first-call costs paid outside the timing), then
    ``k`` rounds, each running every contender once in turn (A B C D, A B C D, ...), so that
    drift in the machine's load hits all alike; a garbage collection before each run so none
    inherits another's garbage. A run whose output is not the first run's is scored (track
    count, swaps, RMSE) and listed: the engine is deterministic, an anchor may not be."""
    from warnshare import regions

    if k < 1:
        raise ValueError("timing runs must be >= 1")
    regions.warm()
    for fn in contenders.values():
        fn(reps[:warmup])
    res: dict[str, Timed] = {}
    for i in range(k):
        for name, fn in contenders.items():
            gc.collect()
            out = fn(reps)
            med, mean, tot = speed_us(out)
            t = res.get(name)
            if t is None:
                res[name] = Timed(out, [med], [mean], [tot], [], np.array(out.times_ns, dtype=np.int64))
                continue
            t.best_ns = np.minimum(t.best_ns, np.array(out.times_ns, dtype=np.int64))
            t.median_us.append(med)
            t.mean_us.append(mean)
            t.total_us.append(tot)
            if not same_output(t.first, out):
                sc = score(out, reps, sim, full=False)
                t.differing.append({"run": i + 1, "fused_tracks": sc["fused_tracks"],
                                    "tracks_with_swap": sc["tracks_with_swap"],
                                    "all_updates_position_rmse_m": sc["all_updates_position_rmse_m"],
                                    "all_updates_position_rmse_vs_owner_m": sc["all_updates_position_rmse_vs_owner_m"],
                                    "updates_on_another_missiles_track": sc["updates_on_another_missiles_track"]})
    return res


def speed_fields(t: Timed) -> dict[str, Any]:
    """A row's speed figures from its timed runs: the best (minimum) of each figure over the
    runs, as ``timeit`` reports, and every run's median to show the spread; and, as a second
    view, the median over reports of each report's best time."""
    best = t.best_ns[t.best_ns > 0] if t.best_ns is not None else np.array([])
    return {
        "median_update_us": min(t.median_us),
        "mean_update_us": min(t.mean_us),
        "total_cpu_per_report_us": min(t.total_us),
        "median_update_us_runs": list(t.median_us),
        "median_of_best_per_report_us": float(np.median(best)) / 1000.0 if len(best) else math.nan,
        "timing_runs": len(t.median_us),
        "runs_with_different_output": len(t.differing),
        "different_runs": list(t.differing),
    }


# ------------------------------------------------------------------ scoring


def _labels(out: Output, reps: list) -> tuple[dict[int, list[str]], dict[int, str]]:
    """Each fused track's truth labels (the missiles of the reports that updated it, in order)
    and its owner (the majority label)."""
    labels: dict[int, list[str]] = defaultdict(list)
    for tid, (_t, mid, _r) in zip(out.track_ids, reps, strict=True):
        if tid is not None:
            labels[tid].append(mid)
    return labels, metrics.majority_labels(labels)


def _described(truth: dict, rep: TrackReport, label: str, owner: str | None) -> str:
    """The missile a national report describes: its label (the simulator's: the missile most of
    the national track's measurements so far came from) or, when the fused track it went to is
    another missile's, that missile if the report lies nearer to it. A national track that has
    just taken another missile's returns keeps the old label for a while; it is not the fuser's
    error to follow where the report is."""
    if owner is None or owner == label or owner not in truth:
        return label
    rp = np.array(rep.position_ecef_m)
    t = rep.time_of_validity_ns
    d_label = np.linalg.norm(rp - truth[label].state_at(t)[0][0])
    d_owner = np.linalg.norm(rp - truth[owner].state_at(t)[0][0])
    return owner if d_owner < d_label else label


def score(out: Output, reps: list[tuple[int, str, TrackReport]], sim: Any, full: bool = True) -> dict[str, Any]:
    truth = sim.truth
    labels, owner = _labels(out, reps)
    swaps = sum(1 for tid, labs in labels.items() if metrics.count_swaps(labs) > 0)
    # events whose LAUNCH_DETECTED a CORRECTION withdrew (merged duplicates) are not events
    withdrawn = {a.event_id for _k, a in out.alerts
                 if a.kind == AlertKind.CORRECTION and a.corrects_alert_id is not None and "duplicate" in a.text}
    per_missile = defaultdict(int)
    for tid, mid in owner.items():
        if tid not in withdrawn:
            per_missile[mid] += 1
    kept = [tid for tid in owner if tid not in withdrawn]
    one_each = all(per_missile.get(m, 0) == 1 for m in truth) and len(kept) == len(truth)

    # Each update is scored against the missile its report describes: the picture's answer about
    # that missile. (Scored against its track's majority owner instead, a contender that folds a
    # new missile's first reports into a neighbour's track, its state staying on the neighbour,
    # looked accurate while it had no picture of the missile reported: see FUSION.md.)
    fused_err, fused_err6, fused_cov, nation_err = [], [], [], defaultdict(list)
    owner_err = []
    on_other = 0
    last_state: dict[int, tuple[int, np.ndarray]] = {}
    for k, (_t, mid, rep) in enumerate(reps):
        tid = out.track_ids[k]
        if tid is None or out.states[k] is None:
            continue
        tov = out.tovs[k]
        mid = _described(truth, rep, mid, owner.get(tid))
        other = owner.get(tid, mid) != mid
        on_other += other
        tp, tv = truth[mid].state_at(tov)
        true6 = np.concatenate([tp[0], tv[0]])
        e6 = out.states[k] - true6
        if other and owner[tid] in truth:
            owner_err.append(out.states[k][:3] - truth[owner[tid]].state_at(tov)[0][0])
        else:
            owner_err.append(e6[:3])
        last_state[tid] = (tov, out.states[k])
        fused_err6.append(e6)
        fused_cov.append(out.covs[k])
        if out.n_nations[k] >= 2 or out.name.startswith("stonesoup"):
            fused_err.append(e6[:3])
            rp, _rv = truth[mid].state_at(rep.time_of_validity_ns)
            nation_err[rep.nation.value].append(np.array(rep.position_ecef_m) - rp[0])
    nees = metrics.nees(np.array(fused_err6), np.array(fused_cov)) if fused_err6 else np.array([])
    best_nation = min((metrics.rmse(v) for v in nation_err.values()), default=math.nan)
    gospa_vals, siap_alive, siap_assoc = gospa_series(out, reps, sim, owner) if full else ([], [], [])
    med_us, mean_us, total_us = speed_us(out)
    res = {
        "reports": len(reps),
        "median_update_us": med_us,
        "mean_update_us": mean_us,
        "total_cpu_per_report_us": total_us,
        "fused_tracks": len(kept),
        "duplicates_withdrawn": len(withdrawn),
        "missiles": len(truth),
        "one_track_per_missile": bool(one_each),
        "tracks_with_swap": swaps,
        "position_rmse_m": metrics.rmse(np.array(fused_err)) if fused_err else math.nan,
        "all_updates_position_rmse_m": metrics.rmse(np.array(fused_err6)[:, :3]) if fused_err6 else math.nan,
        "all_updates_position_rmse_vs_owner_m": metrics.rmse(np.array(owner_err)) if owner_err else math.nan,
        "updates_on_another_missiles_track": on_other,
        "best_single_nation_rmse_m": best_nation,
        "average_nees": float(nees.mean()) if len(nees) else math.nan,
        "gospa_mean_m": float(np.mean(gospa_vals)) if gospa_vals else math.nan,
        **(metrics.siap(siap_alive, siap_assoc) if full else {}),
    }
    if full and out.name.startswith("warnshare"):
        _g, alive_c, assoc_c = gospa_series(out, reps, sim, owner, coasting=True)
        res["completeness_coasting"] = metrics.siap(alive_c, assoc_c)["completeness"]
    res["rmse_ratio_vs_best_nation"] = res["position_rmse_m"] / best_nation if best_nation else math.nan
    return res


def gospa_series(out: Output, reps: list, sim: Any, owner: dict, coasting: bool = False) -> tuple[list[float], list, list]:
    """GOSPA and SIAP at 1 s steps: truths in flight against the tracks each contender still
    holds (updated within ``COAST_NS``, the engine's default lost time-out), extrapolated at
    constant velocity. A track's updates are the states it published: after each report and,
    for the engine, in its TRACK_COAST alerts (a silent event's predicted state).

    ``coasting``: the engine's own picture instead: an event is held until its IMPACT or
    TRACK_LOST alert (an event whose predicted flight is under way coasts, silent, after its
    feeds end), at its ballistic prediction from its last fused state."""
    truth = sim.truth
    ended: dict[int, int] = {}
    if coasting:
        for _k, a in out.alerts:
            if a.kind in (AlertKind.IMPACT, AlertKind.TRACK_LOST):
                ended.setdefault(a.event_id, a.issued_ns)
    if not reps:
        return [], [], []
    tovs, track_ids, states = list(out.tovs), list(out.track_ids), list(out.states)
    if not coasting:
        for _k, a in out.alerts:
            if a.kind == AlertKind.TRACK_COAST and a.state is not None:
                tovs.append(a.state.time_of_validity_ns)
                track_ids.append(a.event_id)
                states.append(np.array(a.state.position_ecef_m + a.state.velocity_ecef_mps))
    tovs = np.array(tovs)
    t_start = int(min(tr.launch_ns for tr in truth.values()))
    t_end = int(max(tr.impact_ns for tr in truth.values()))
    latest: dict[int, tuple[int, np.ndarray]] = {}
    order = np.argsort(tovs, kind="stable")
    j = 0
    vals, alive_l, assoc_l = [], [], []
    for t in range(t_start, t_end, NS):
        while j < len(order) and tovs[order[j]] <= t:
            k = order[j]
            if track_ids[k] is not None and states[k] is not None:
                latest[track_ids[k]] = (int(tovs[k]), states[k])
            j += 1
        alive = [m for m, tr in truth.items() if tr.launch_ns + 20 * NS <= t <= tr.impact_ns - 20 * NS]
        if coasting:
            tracks = {tid: np.array(dynamics.predict_state(s.tolist(), (t - tt) / NS))[:3]
                      for tid, (tt, s) in latest.items() if t - tt <= COAST_NS or t < ended.get(tid, 1 << 62)}
        else:
            tracks = {tid: s[:3] + s[3:] * ((t - tt) / NS) for tid, (tt, s) in latest.items() if t - tt <= COAST_NS}
        if not alive and not tracks:
            continue
        tp = np.array([truth[m].state_at(t)[0][0] for m in alive]).reshape(-1, 3)
        ep = np.array(list(tracks.values())).reshape(-1, 3)
        vals.append(metrics.gospa(tp, ep, GOSPA_C_M)["gospa"])
        assoc = {}
        for tid, pos in tracks.items():
            m = owner.get(tid)
            ok = m in alive and np.linalg.norm(truth[m].state_at(t)[0][0] - pos) < GOSPA_C_M
            assoc[tid] = m if ok else None
        alive_l.append(alive)
        assoc_l.append(assoc)
    return vals, alive_l, assoc_l


def lifecycle_scores(out: Output, reps: list, sim: Any) -> dict[str, Any]:
    """Time to first alert, impact error against time since launch, ellipse coverage."""
    truth = sim.truth
    labels, owner = _labels(out, reps)
    first_report: dict[str, int] = {}
    for t, mid, _r in reps:
        first_report.setdefault(mid, t)
    latency, impact_pts, coverage_first, coverage_all, coverage_last = [], [], [], [], []
    by_class: list[tuple[str, str, bool, bool, float]] = []
    seen_launch: set = set()
    last_impact: dict[str, Any] = {}
    for _k, a in out.alerts:
        mid = owner.get(a.event_id)
        if mid is None or mid not in truth:
            continue
        tr = truth[mid]
        if a.kind == AlertKind.LAUNCH_DETECTED and mid not in seen_launch:
            seen_launch.add(mid)
            latency.append((a.issued_ns - first_report[mid]) / NS)
        if a.impact is not None and a.kind in (AlertKind.TRACK_UPDATE, AlertKind.IMPACT_PREDICTED):
            g = a.impact
            err = metrics.ground_error_m(g.lat_deg, g.lon_deg, tr.impact_lat_deg, tr.impact_lon_deg)
            since = (a.state.time_of_validity_ns - tr.launch_ns) / NS if a.state else math.nan
            inside = metrics.in_ellipse(tr.impact_lat_deg, tr.impact_lon_deg, g.lat_deg, g.lon_deg,
                                        g.semi_major_m, g.semi_minor_m, g.orientation_deg)
            impact_pts.append((since, err))
            if a.state is not None:
                by_class.append((tr.missile_class, _phase_of(a.state, tr), a.kind == AlertKind.IMPACT_PREDICTED,
                                 inside, g.semi_major_m))
            if a.kind == AlertKind.IMPACT_PREDICTED:
                coverage_all.append(inside)
                if not any(x[0] == mid for x in coverage_first):
                    coverage_first.append((mid, inside))
            last_impact[mid] = inside
    coverage_last = list(last_impact.values())
    return {
        "first_alert_latency_s": latency,
        "impact_points": impact_pts,
        "coverage_first": [c for _m, c in coverage_first],
        "coverage_all": coverage_all,
        "coverage_last": coverage_last,
        "coverage_by_class": by_class,
    }


def _phase_of(state: Any, tr: Any) -> str:
    """Flight phase of a fused state for the coverage breakdown: boost (truth: before burn-out),
    ascent, or the descent by altitude band."""
    if state.time_of_validity_ns < tr.burnout_ns:
        return "boost"
    if float(np.dot(state.position_ecef_m, state.velocity_ecef_mps)) > 0.0:
        return "ascent"
    return "descent >50 km" if state.alt_m > 50e3 else "descent 20-50 km" if state.alt_m > 20e3 else "descent <20 km"


def coverage_by_class(rows: list[tuple[str, str, bool, bool, float]]) -> dict[str, Any]:
    """Ellipse coverage and median semi-major axis by (class, phase): IMPACT_PREDICTED alerts
    ('issued') and every published prediction (TRACK_UPDATE alerts carry one too)."""
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for cls, phase, issued, inside, major in rows:
        groups[(cls, phase)].append((issued, inside, major))
        groups[(cls, "all")].append((issued, inside, major))
    out = {}
    for (cls, phase), g in sorted(groups.items()):
        iss = [x for x in g if x[0]]
        out[f"{cls} {phase}"] = {
            "issued_coverage": _frac([x[1] for x in iss]) if iss else math.nan,
            "issued_n": len(iss),
            "every_coverage": _frac([x[1] for x in g]),
            "every_n": len(g),
            "median_semi_major_km": float(np.median([x[2] for x in g])) / 1000.0,
        }
    return out


def report_period_s(reps: list) -> float:
    """Median gap between consecutive reports of one national track (its report period)."""
    last: dict = {}
    gaps = []
    for t, _m, r in reps:
        key = (r.nation, r.track_number)
        if key in last:
            gaps.append((t - last[key]) / NS)
        last[key] = t
    return float(np.median(gaps)) if gaps else math.nan


# ------------------------------------------------------------------ main


def run(args: argparse.Namespace) -> int:
    from sims import simulate

    quick = bool(args.quick)
    n_seeds = args.seeds if args.seeds is not None else (1 if quick else 100)
    k_runs = args.timing_runs if getattr(args, "timing_runs", None) is not None else (1 if quick else 3)
    if k_runs < 1:
        print("--timing-runs must be >= 1", file=sys.stderr)
        return 2
    t_start = time.time()
    scen = scenarios(quick)
    summary: dict[str, Any] = {"quick": quick, "seeds": n_seeds, "timing_runs": k_runs, "scenarios": {}}
    all_impacts: list = []
    for sname, sc in scen.items():
        sim = simulate(sc, seed=0)
        reps = to_reports(sim)
        rows, ours = table_rows(reps, sim, k_runs, stonesoup=not args.no_stonesoup)
        life = lifecycle_scores(ours, reps, sim)
        all_impacts += life["impact_points"]
        drop, drop_coast = {}, {}
        for n in NATIONS if not (quick and sname != "salvo8") else ():
            r2 = to_reports(sim, drop=n.value)
            o2 = run_engine(r2)
            s2 = score(o2, r2, sim)
            drop[n.value] = s2["completeness"]
            drop_coast[n.value] = s2["completeness_coasting"]
        period = report_period_s(reps)
        sc_sum = {
            "rows": rows,
            "report_period_s": period,
            "first_alert_latency_s_max": max(life["first_alert_latency_s"], default=math.nan),
            "first_alert_latency_s_median": float(np.median(life["first_alert_latency_s"])) if life["first_alert_latency_s"] else math.nan,
            "completeness_without_nation": drop or {"not run": math.nan},
            "completeness_coasting_without_nation": drop_coast or {"not run": math.nan},
        }
        summary["scenarios"][sname] = sc_sum
        print_table(sname, rows, sc_sum)
        sys.stdout.flush()
    # Monte-Carlo over seeds: ellipse coverage, swaps, one event per missile, NEES
    mc: dict[str, Any] = {}
    jobs = [(sname, seed) for sname in scen for seed in range(1, n_seeds + 1)
            if not (quick and sname != "salvo8")]
    per_seed = _monte_carlo(scen, jobs, max(1, int(args.jobs)))
    for sname in scen:
        runs = [per_seed[(sname, seed)] for seed in range(1, n_seeds + 1) if (sname, seed) in per_seed]
        if not runs:
            continue
        nees_runs = [r["average_nees"] for r in runs]
        nees_naive = [r["average_nees_independent"] for r in runs if not math.isnan(r["average_nees_independent"])]
        # runs are in seed order: the first NAIVE_SEEDS are the memoryless fuser's seeds
        nees_seq_all = [r["average_nees_sequential"] for r in runs]
        nees_seq = nees_seq_all[:NAIVE_SEEDS]
        lo, hi = metrics.nees_bounds(len(nees_runs))
        all_impacts += [p for r in runs for p in r["impact_points"]]
        mc[sname] = {
            "runs": len(runs),
            "ellipse_coverage_first_prediction": _frac([c for r in runs for c in r["coverage_first"]]),
            "ellipse_coverage_all_predictions": _frac([c for r in runs for c in r["coverage_all"]]),
            "ellipse_coverage_last_prediction": _frac([c for r in runs for c in r["coverage_last"]]),
            "runs_without_swap": _frac([r["swap_free"] for r in runs]),
            "runs_one_event_per_missile": _frac([r["one_each"] for r in runs]),
            "average_nees": float(np.nanmean(nees_runs)),
            # over the updates with two or more nations, per run; the mean and the worst run
            "fused_rmse_ratio_vs_best_nation_mean": float(np.nanmean([r["rmse_ratio_vs_best_nation"] for r in runs])),
            "fused_rmse_ratio_vs_best_nation_max": float(np.nanmax([r["rmse_ratio_vs_best_nation"] for r in runs])),
            "median_run_nees": float(np.nanmedian(nees_runs)),
            "runs_nees_in_single_run_bounds": _frac([metrics.nees_bounds(1)[0] <= v <= metrics.nees_bounds(1)[1]
                                                    for v in nees_runs]),
            "average_nees_independent": float(np.mean(nees_naive)) if nees_naive else math.nan,
            "nees_bounds_95_independent": list(metrics.nees_bounds(len(nees_naive))) if nees_naive else [],
            "average_nees_sequential": float(np.mean(nees_seq)) if nees_seq else math.nan,
            "nees_bounds_95_sequential": list(metrics.nees_bounds(len(nees_seq))) if nees_seq else [],
            "average_nees_sequential_all_runs": float(np.mean(nees_seq_all)),
            "nees_bounds_95": [lo, hi],
        }
        print(f"\n{sname}: Monte-Carlo over {len(runs)} seeds")
        for k, v in mc[sname].items():
            print(f"  {k:38s} {v}")
        if getattr(args, "coverage_by_class", False):
            table = coverage_by_class([c for r in runs for c in r["coverage_by_class"]])
            mc[sname]["coverage_by_class"] = table
            print(f"  {'class phase':30s} {'issued':>14s} {'every published':>18s} {'median major km':>16s}")
            for k, v in table.items():
                print(f"  {k:30s} {v['issued_coverage']:8.3f} ({v['issued_n']:4d}) {v['every_coverage']:8.3f} ({v['every_n']:6d}) "
                      f"{v['median_semi_major_km']:12.1f}")
    edges = [0, 60, 120, 180, 240, 300, 400, 500, 700, 1000, 2000, 5000]
    curve = metrics.binned_median([p[0] for p in all_impacts], [p[1] for p in all_impacts], edges)
    summary["impact_error_vs_time"] = [{"from_s": a, "to_s": b, "median_error_m": m, "n": n} for a, b, m, n in curve]
    print("\nimpact error (median) against time since launch")
    for a, b, m, n in curve:
        print(f"  {a:5.0f}-{b:5.0f} s  {m / 1000:8.2f} km  (n={n})")
    summary["monte_carlo"] = mc
    summary["summary"] = must_show(summary)
    summary["elapsed_s"] = time.time() - t_start
    print("\nmust-show figures")
    for k, v in summary["summary"].items():
        print(f"  {k:45s} {v}")
    if args.plot:
        plot(curve, args.plot)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"summary": summary["summary"], "details": summary}, f, indent=2, default=_json)
    return 0


def table_rows(reps: list, sim: Any, k_runs: int, stonesoup: bool) -> tuple[dict[str, Any], Output]:
    """The seed-0 table: every contender timed ``k_runs`` times (``timed_runs``), its quality
    scored on its first run, its speed the best of the runs; the sequential independent fuser
    on the engine's first run's association (scored, not timed); and the engine's first output
    (for the lifecycle scores)."""
    timed = timed_runs(reps, runners(stonesoup), k_runs, sim)
    rows = {name: score(t.first, reps, sim) | speed_fields(t) for name, t in timed.items()}
    # the sequential independent fuser on the engine's association: quality only, no timing
    seq = score(run_sequential(reps, timed["warnshare"].first), reps, sim)
    rows["warnshare-sequential"] = seq | {k: math.nan for k in ("median_update_us", "mean_update_us",
                                                                "total_cpu_per_report_us")}
    return rows, timed["warnshare"].first


def _seed_run(sc: Any, seed: int) -> dict[str, Any]:
    """One Monte-Carlo run: re-simulate with ``seed``, run the engine and the naive fusers
    (memoryless, on the first ``NAIVE_SEEDS`` seeds, and sequential, on every seed; both
    assume independence), score."""
    from sims import simulate

    sim = simulate(sc, seed=seed)
    reps = to_reports(sim)
    o = run_engine(reps)
    s = score(o, reps, sim, full=False)
    life = lifecycle_scores(o, reps, sim)
    # the naive fuser only on the first seeds: it is there to show a failure, not to be measured
    naive = (score(run_engine(reps, FusionConfig(fusion_rule="independent")), reps, sim, full=False)
             if seed <= NAIVE_SEEDS else {"average_nees": math.nan})
    # the sequential one costs a tenth of an engine run (it reuses the engine's association), so
    # it runs on every seed and can face the engine's own band (the average over all runs)
    sequential = score(run_sequential(reps, o), reps, sim, full=False)
    return {
        "impact_points": life["impact_points"],
        "coverage_first": life["coverage_first"],
        "coverage_all": life["coverage_all"],
        "coverage_last": life["coverage_last"],
        "coverage_by_class": life["coverage_by_class"],
        "swap_free": s["tracks_with_swap"] == 0,
        "one_each": s["one_track_per_missile"],
        "average_nees": s["average_nees"],
        "rmse_ratio_vs_best_nation": s["rmse_ratio_vs_best_nation"],
        "average_nees_independent": naive["average_nees"],
        "average_nees_sequential": sequential["average_nees"],
    }


_SCEN: dict[str, Any] = {}


def _seed_job(job: tuple[str, int]) -> tuple[tuple[str, int], dict[str, Any]]:
    return job, _seed_run(_SCEN[job[0]], job[1])


def _monte_carlo(scen: dict[str, Any], jobs: list[tuple[str, int]], n_proc: int) -> dict:
    """Every (scenario, seed) run, in a pool of ``n_proc`` processes, with progress on stderr.
    Results do not depend on the pool: each run is a function of its scenario and seed."""
    _SCEN.clear()
    _SCEN.update(scen)
    out: dict = {}
    t0 = time.time()

    def progress(done: int) -> None:
        rate = done / max(1e-9, time.time() - t0)
        eta = (len(jobs) - done) / rate if rate > 0 else math.nan
        print(f"\rMonte-Carlo {done}/{len(jobs)} runs, {time.time() - t0:.0f} s, about {eta:.0f} s left ",
              end="", file=sys.stderr, flush=True)

    if n_proc <= 1 or len(jobs) <= 1:
        for job in jobs:
            out[job] = _seed_run(scen[job[0]], job[1])
            progress(len(out))
    else:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(n_proc) as pool:
            for job, res in pool.imap_unordered(_seed_job, jobs):
                out[job] = res
                progress(len(out))
    if jobs:
        print(file=sys.stderr)
    return out


def must_show(s: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sname, sc in s["scenarios"].items():
        rows = sc["rows"]
        w = rows["warnshare"]
        ss = rows.get("stonesoup-ekf")
        # speed: the best run's median (the minimum over the timed runs), and every run's
        out[f"{sname}.median_update_us"] = w["median_update_us"]
        out[f"{sname}.median_update_us_runs"] = w.get("median_update_us_runs", [w["median_update_us"]])
        out[f"{sname}.median_of_best_per_report_us"] = w.get("median_of_best_per_report_us", math.nan)
        out[f"{sname}.runs_with_different_output"] = w.get("runs_with_different_output", 0)
        if ss:
            out[f"{sname}.stonesoup_ekf_median_update_us"] = ss["median_update_us"]
            out[f"{sname}.stonesoup_ekf_median_update_us_runs"] = ss.get("median_update_us_runs", [ss["median_update_us"]])
            # best against best; and run i against run i (same round, same machine state)
            out[f"{sname}.speedup_vs_stonesoup_ekf"] = ss["median_update_us"] / w["median_update_us"]
            out[f"{sname}.speedup_vs_stonesoup_ekf_runs"] = [
                a / b for a, b in zip(out[f"{sname}.stonesoup_ekf_median_update_us_runs"],
                                      out[f"{sname}.median_update_us_runs"], strict=True)]
            out[f"{sname}.stonesoup_ekf_runs_with_different_output"] = ss.get("runs_with_different_output", 0)
            out[f"{sname}.gospa_m"] = w["gospa_mean_m"]
            out[f"{sname}.stonesoup_ekf_gospa_m"] = ss["gospa_mean_m"]
            out[f"{sname}.rmse_m"] = w["all_updates_position_rmse_m"]
            out[f"{sname}.stonesoup_ekf_rmse_m"] = ss["all_updates_position_rmse_m"]
            out[f"{sname}.rmse_vs_owner_m"] = w["all_updates_position_rmse_vs_owner_m"]
            out[f"{sname}.stonesoup_ekf_rmse_vs_owner_m"] = ss["all_updates_position_rmse_vs_owner_m"]
            out[f"{sname}.updates_on_another_missiles_track"] = w["updates_on_another_missiles_track"]
            out[f"{sname}.stonesoup_ekf_updates_on_another_missiles_track"] = ss["updates_on_another_missiles_track"]
            if "stonesoup-ci" in rows:
                out[f"{sname}.stonesoup_ci_gospa_m"] = rows["stonesoup-ci"]["gospa_mean_m"]
                out[f"{sname}.stonesoup_ci_rmse_m"] = rows["stonesoup-ci"]["all_updates_position_rmse_m"]
                out[f"{sname}.stonesoup_ci_runs_with_different_output"] = rows["stonesoup-ci"].get(
                    "runs_with_different_output", 0)
        out[f"{sname}.fused_rmse_ratio_vs_best_nation"] = w["rmse_ratio_vs_best_nation"]
        out[f"{sname}.completeness"] = w["completeness"]
        out[f"{sname}.completeness_min_one_nation_removed"] = min(sc["completeness_without_nation"].values())
        out[f"{sname}.completeness_coasting"] = w.get("completeness_coasting", math.nan)
        out[f"{sname}.completeness_coasting_min_one_nation_removed"] = min(
            sc["completeness_coasting_without_nation"].values())
        out[f"{sname}.events"] = w["fused_tracks"]
        out[f"{sname}.missiles"] = w["missiles"]
        out[f"{sname}.first_alert_latency_s_max"] = sc["first_alert_latency_s_max"]
        out[f"{sname}.report_period_s"] = sc["report_period_s"]
    for sname, m in s.get("monte_carlo", {}).items():
        out[f"{sname}.average_nees"] = m["average_nees"]
        out[f"{sname}.fused_rmse_ratio_vs_best_nation_mc_mean"] = m["fused_rmse_ratio_vs_best_nation_mean"]
        out[f"{sname}.median_run_nees"] = m["median_run_nees"]
        out[f"{sname}.average_nees_independent"] = m["average_nees_independent"]
        out[f"{sname}.nees_bounds_95_independent"] = m["nees_bounds_95_independent"]
        out[f"{sname}.average_nees_sequential"] = m["average_nees_sequential"]
        out[f"{sname}.nees_bounds_95_sequential"] = m["nees_bounds_95_sequential"]
        # the must-show's second half: a fuser that assumes independence fails the band
        # (outside it); the textbook one is the sequential fuser, the memoryless one beside it
        out[f"{sname}.sequential_independent_fails_nees_band"] = _outside(
            m["average_nees_sequential"], m["nees_bounds_95_sequential"])
        out[f"{sname}.memoryless_independent_fails_nees_band"] = _outside(
            m["average_nees_independent"], m["nees_bounds_95_independent"])
        # and over every run, against the band the engine faces (nees_bounds_95)
        out[f"{sname}.average_nees_sequential_all_runs"] = m["average_nees_sequential_all_runs"]
        out[f"{sname}.sequential_independent_fails_nees_band_all_runs"] = _outside(
            m["average_nees_sequential_all_runs"], m["nees_bounds_95"])
        out[f"{sname}.nees_bounds_95"] = m["nees_bounds_95"]
        out[f"{sname}.ellipse_coverage_first_prediction"] = m["ellipse_coverage_first_prediction"]
        out[f"{sname}.ellipse_coverage_all_predictions"] = m["ellipse_coverage_all_predictions"]
        out[f"{sname}.runs_without_swap"] = m["runs_without_swap"]
        out[f"{sname}.runs_one_event_per_missile"] = m["runs_one_event_per_missile"]
        out[f"{sname}.monte_carlo_runs"] = m["runs"]
    return out


def print_table(name: str, rows: dict, sc: dict) -> None:
    cols = [
        ("median_update_us", "med us", "{:8.1f}"),
        ("mean_update_us", "mean us", "{:8.1f}"),
        ("total_cpu_per_report_us", "tot us", "{:8.1f}"),
        ("fused_tracks", "tracks", "{:6d}"),
        ("tracks_with_swap", "swaps", "{:5d}"),
        ("gospa_mean_m", "GOSPA m", "{:8.0f}"),
        ("all_updates_position_rmse_m", "RMSE m", "{:7.0f}"),
        ("all_updates_position_rmse_vs_owner_m", "RMSE own", "{:7.0f}"),
        ("updates_on_another_missiles_track", "on other", "{:6d}"),
        ("rmse_ratio_vs_best_nation", "vs best", "{:7.2f}"),
        ("average_nees", "NEES", "{:8.2f}"),
        ("completeness", "compl", "{:5.2f}"),
        ("ambiguity", "ambig", "{:5.2f}"),
        ("spuriousness", "spur", "{:5.2f}"),
    ]
    print(f"\n== {name}: {next(iter(rows.values()))['missiles']} missiles, {next(iter(rows.values()))['reports']} reports")
    print(f"{'contender':24s}" + "".join(f"{h:>9s}" for _k, h, _f in cols))
    for rname, r in rows.items():
        cells = []
        for k, _h, f in cols:
            v = r.get(k)
            try:
                if isinstance(v, float) and math.isnan(v):
                    raise ValueError("no figure")
                cells.append(f"{f.format(v):>9s}")
            except (TypeError, ValueError):
                cells.append(f"{'-':>9s}")
        print(f"{rname:24s}" + "".join(cells))
    r0 = next(iter(rows.values()))
    print("RMSE m: every update against the missile whose report made it; RMSE own: against its track's "
          "majority owner; on other: updates that went to another missile's track")
    if "warnshare-sequential" in rows:
        print("warnshare-sequential: a Kalman filter per event taking every national report as an independent "
              "measurement, on the engine's association (not timed)")
    print(f"time per update: best of {r0.get('timing_runs', 1)} interleaved runs after a warm-up; each run's median (us):")
    for rname, r in rows.items():
        if "median_update_us_runs" not in r:
            continue  # not timed (the sequential fuser)
        runs = " ".join(f"{v:.1f}" for v in r.get("median_update_us_runs", []))
        diff = r.get("runs_with_different_output", 0)
        note = f"; {diff} run(s) with a different output: {r['different_runs']}" if diff else ""
        print(f"  {rname:22s} {runs}  (median of each report's best: {r.get('median_of_best_per_report_us', math.nan):.1f}){note}")
    print(f"first alert latency: median {sc['first_alert_latency_s_median']:.2f} s, max "
          f"{sc['first_alert_latency_s_max']:.2f} s (report period {sc['report_period_s']:.2f} s); "
          f"completeness with one nation removed: {sc['completeness_without_nation']}; "
          f"coasting on the engine's prediction: {sc['completeness_coasting_without_nation']}")


def plot(curve: list, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [(a + b) / 2 for a, b, _m, _n in curve]
    ax.plot(xs, [m / 1000 for _a, _b, m, _n in curve], "o-")
    ax.set_xlabel("time since launch (s)")
    ax.set_ylabel("median impact error (km)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("Predicted impact error against time since launch")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _outside(value: float, bounds: list) -> bool | None:
    """Whether ``value`` lies outside ``[lo, hi]`` (None when there is no figure)."""
    if not bounds or math.isnan(value):
        return None
    return not bounds[0] <= value <= bounds[1]


def _frac(v: list) -> float:
    return float(np.mean(v)) if v else math.nan


def _json(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
