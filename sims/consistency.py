"""Consistency of the national trackers against truth: report NEES by nation and flight band,
the track bookkeeping (tracks per missile, label switches, missed missiles) that a change of
filter tuning must not disturb, and what a shared sensor does to two nations' errors.

``python -m sims.consistency --scenario srbm-salvo-2022-06-05 --seeds 0,1,2`` prints the tables;
``salvo20`` names the 20-missile salvo the fusion benchmark builds from the 8-SRBM one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy.stats import chi2

from warnshare.geo import ecef_to_geodetic

from .model import SimResult

NS = 1_000_000_000
#: Flight bands a report is scored in, by the truth at its time of validity.
BANDS: tuple[str, ...] = ("boost", "exo", "endo", "low")
EXO_ALT_M = 90e3  # the trackers' own endo-atmospheric threshold
LOW_ALT_M = 20e3
MISASSOCIATION_M = 5e3


def band_of(result: SimResult, missile_id: str, t_ns: int) -> str:
    """``boost`` while the missile's engine may still burn, then by truth altitude: ``exo`` above
    90 km, ``endo`` 20-90 km, ``low`` below 20 km."""
    tr = result.truth[missile_id]
    if t_ns <= tr.burnout_ns:
        return "boost"
    pos, _ = tr.state_at(t_ns)
    alt = float(np.atleast_1d(ecef_to_geodetic(pos[0])[2])[0])
    if alt >= EXO_ALT_M:
        return "exo"
    return "endo" if alt >= LOW_ALT_M else "low"


def report_errors(result: SimResult) -> list[dict[str, Any]]:
    """One row per national report with a truth label: nation, band, 6-D and position NEES,
    position error, and whether it is misassociated (over 5 km from its own missile and nearer
    another: a measurement of one missile taken into another's track, an association fault
    scored apart from the covariance). Final ``lost`` updates repeat a state already scored and
    are left out."""
    rows = []
    for nation, ups in result.national_tracks.items():
        for u in ups:
            if u.lost or u.missile_id not in result.truth:
                continue
            t = u.time_of_validity_ns
            p, v = result.truth[u.missile_id].state_at(t)
            e = np.concatenate([np.asarray(u.position_ecef_m) - p[0], np.asarray(u.velocity_ecef_mps) - v[0]])
            cov = np.asarray(u.covariance)
            own = float(np.linalg.norm(e[:3]))
            wrong = False
            if own > MISASSOCIATION_M:
                pos = np.asarray(u.position_ecef_m)
                others = [_distance(tr, t, pos) for m, tr in result.truth.items()
                          if m != u.missile_id and tr.launch_ns <= t <= tr.impact_ns]
                wrong = min(others, default=np.inf) < own - MISASSOCIATION_M
            rows.append({
                "nation": nation,
                "track_number": u.track_number,
                "band": band_of(result, u.missile_id, t),
                "nees": float(e @ np.linalg.solve(cov, e)),
                "nees_pos": float(e[:3] @ np.linalg.solve(cov[:3, :3], e[:3])),
                "err_pos_m": own,
                "misassociated": wrong,
            })
    return rows


def _distance(tr: Any, t_ns: int, pos: np.ndarray) -> float:
    p, _ = tr.state_at(t_ns)
    return float(np.linalg.norm(pos - p[0]))


def nees_table(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """nation -> band (plus ``flight``: every band but boost, and ``all``) -> count, mean and
    median 6-D NEES, mean position NEES (3 dof), RMS position error, over the reports that are
    not misassociated (``track_stats`` counts those)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["misassociated"]:
            continue
        groups[(r["nation"], r["band"])].append(r)
        groups[(r["nation"], "all")].append(r)
        if r["band"] != "boost":
            groups[(r["nation"], "flight")].append(r)
    out: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for (nation, band), rs in sorted(groups.items()):
        nees = np.array([r["nees"] for r in rs])
        out[nation][band] = {
            "n": len(rs),
            "mean_nees": float(nees.mean()),
            "median_nees": float(np.median(nees)),
            "mean_nees_pos": float(np.mean([r["nees_pos"] for r in rs])),
            "rms_pos_m": float(np.sqrt(np.mean([r["err_pos_m"] ** 2 for r in rs]))),
            # share of reports inside the 95 % chi-square(6) ellipsoid: 0.95 if consistent
            "inside_95": float(np.mean(nees <= chi2.ppf(0.95, 6))),
        }
    return dict(out)


def track_stats(result: SimResult, rows: list[dict[str, Any]] | None = None) -> dict[str, dict[str, int]]:
    """nation -> tracks, missiles tracked, breaks (tracks beyond one per tracked missile), label
    switches (a track whose reports name more than one missile), false tracks (no missile),
    missed (missiles the nation's sensors reported 5+ times but that got no track),
    misassociated reports (see ``report_errors``; ``rows`` are its result if already computed)."""
    wrong: dict[str, int] = defaultdict(int)
    for r in report_errors(result) if rows is None else rows:
        wrong[r["nation"]] += r["misassociated"]
    out = {}
    for nation, ups in result.national_tracks.items():
        labels: dict[int, set[str]] = defaultdict(set)
        for u in ups:
            labels[u.track_number].add(u.missile_id)
        tracked = {m for s in labels.values() for m in s if m}
        seen = set()
        for ms in result.measurements.values():
            if nation in feeds_of(ms.sensor_id, result):
                ids, counts = np.unique(ms.truth_id, return_counts=True)
                seen |= {str(i) for i, c in zip(ids, counts, strict=True) if i and c >= 5}
        per_missile: dict[str, int] = defaultdict(int)
        for s in labels.values():
            for m in s:
                per_missile[m] += 1
        out[nation] = {
            "tracks": len(labels),
            "missiles_tracked": len(tracked),
            "breaks": sum(max(0, c - 1) for m, c in per_missile.items() if m),
            "label_switches": sum(1 for s in labels.values() if len(s) > 1),
            "false_tracks": sum(1 for s in labels.values() if s == {""}),
            "missed": len(seen - tracked),
            "misassociated_reports": wrong.get(nation, 0),
        }
    return out


def pair_errors(result: SimResult, a: str = "JPN", b: str = "USA") -> list[dict[str, Any]]:
    """Reports of nations ``a`` and ``b`` on one missile valid within 0.2 s of each other: each
    one's 6-D NEES, the NEES of their fusion as if independent (information sum), and whether
    both tracks used a sensor they share (their errors then share its noise and bias, which the
    independent fusion double-counts)."""
    by_key = {}
    for u in result.national_tracks.get(b, []):
        if not u.lost and u.missile_id in result.truth:
            by_key[(u.missile_id, round(u.time_of_validity_ns / NS))] = u
    rows = []
    for ua in result.national_tracks.get(a, []):
        if ua.lost or ua.missile_id not in result.truth:
            continue
        ub = by_key.get((ua.missile_id, round(ua.time_of_validity_ns / NS)))
        if ub is None or abs(ub.time_of_validity_ns - ua.time_of_validity_ns) > 0.2 * NS:
            continue
        tr = result.truth[ua.missile_id]
        errs, infos = [], []
        for u in (ua, ub):
            p, v = tr.state_at(u.time_of_validity_ns)
            errs.append(np.concatenate([np.asarray(u.position_ecef_m) - p[0], np.asarray(u.velocity_ecef_mps) - v[0]]))
            infos.append(np.linalg.inv(np.asarray(u.covariance)))
        fused_info = infos[0] + infos[1]
        ef = np.linalg.solve(fused_info, infos[0] @ errs[0] + infos[1] @ errs[1])
        rows.append({
            "shared": bool(_shared(ua.sensor_ids, a, b) and _shared(ub.sensor_ids, a, b)),
            "nees_a": float(errs[0] @ infos[0] @ errs[0]),
            "nees_b": float(errs[1] @ infos[1] @ errs[1]),
            "nees_independent_fusion": float(ef @ fused_info @ ef),
        })
    return rows


def _shared(sensor_ids: Iterable[str], a: str, b: str) -> bool:
    from .sensors import sensor_feeds

    return any({a, b} <= set(sensor_feeds(sid)) for sid in sensor_ids)


def pair_table(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``shared`` / ``apart`` -> count, mean NEES of each nation and of their fusion as if
    independent: above both inputs' when their errors are correlated."""
    out = {}
    for name, flag in (("shared", True), ("apart", False)):
        rs = [r for r in rows if r["shared"] == flag]
        if len(rs) < 3:
            continue
        out[name] = {
            "n": len(rs),
            "mean_nees_a": float(np.mean([r["nees_a"] for r in rs])),
            "mean_nees_b": float(np.mean([r["nees_b"] for r in rs])),
            "mean_nees_independent_fusion": float(np.mean([r["nees_independent_fusion"] for r in rs])),
        }
    return out


def feeds_of(sensor_id: str, result: SimResult) -> set[str]:
    """Nations whose trackers received ``sensor_id``'s reports in this result."""
    from .sensors import sensor_feeds

    return set(sensor_feeds(sensor_id)) & set(result.national_tracks)


def ir_boost_errors(result: SimResult, nation: str = "USA", ir_sensor: str = "USA-SBIRS") -> dict[int, list[dict[str, Any]]]:
    """Per track number, the nation's reports made from the space layer alone (no radar in the
    report's sensors) while the missile boosts: time, 6-D error, state, covariance, NEES, and
    whether it is misassociated (as in ``report_errors``: the track then follows another missile)."""
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for u in result.national_tracks.get(nation, []):
        if u.lost or u.missile_id not in result.truth or tuple(u.sensor_ids) != (ir_sensor,):
            continue
        t = u.time_of_validity_ns
        if band_of(result, u.missile_id, t) != "boost":
            continue
        p, v = result.truth[u.missile_id].state_at(t)
        e = np.concatenate([np.asarray(u.position_ecef_m) - p[0], np.asarray(u.velocity_ecef_mps) - v[0]])
        cov = np.asarray(u.covariance)
        own = float(np.linalg.norm(e[:3]))
        others = [_distance(tr, t, np.asarray(u.position_ecef_m)) for m, tr in result.truth.items()
                  if m != u.missile_id and tr.launch_ns <= t <= tr.impact_ns] if own > MISASSOCIATION_M else []
        out[u.track_number].append({
            "misassociated": min(others, default=np.inf) < own - MISASSOCIATION_M,
            "t_ns": t, "err": e, "z": np.concatenate([u.position_ecef_m, u.velocity_ecef_mps]), "cov": cov,
            "truth": p[0], "nees": float(e @ np.linalg.solve(cov, e)),
            "nees_pos": float(e[:3] @ np.linalg.solve(cov[:3, :3], e[:3])),
        })
    return dict(out)


def refilter_rmse_sq(reports: list[dict[str, Any]], sigma_jerk: float = 10.0) -> list[float]:
    """Squared position errors of a constant-acceleration Kalman filter (white jerk
    ``sigma_jerk`` m/s^3, gravity left to the acceleration state) run over one track's reports as
    if they were independent measurements with their own position covariance: what a re-filter
    of the tracker's output gets. Lower than the reports' own errors means the tracker leaves
    information on the table."""
    x = np.zeros(9)
    p = np.zeros((9, 9))
    out = []
    t_prev = None
    for rep in reports:
        z, r = rep["z"][:3], rep["cov"][:3, :3]
        if t_prev is None:
            x[:3] = z
            p = np.diag([0.0] * 3 + [2000.0**2] * 3 + [300.0**2] * 3)
            p[:3, :3] = r
        else:
            dt = (rep["t_ns"] - t_prev) / NS
            f = np.eye(9)
            f[:3, 3:6] = np.eye(3) * dt
            f[:3, 6:] = np.eye(3) * dt * dt / 2
            f[3:6, 6:] = np.eye(3) * dt
            g = np.concatenate([np.full(3, dt**3 / 6), np.full(3, dt**2 / 2), np.full(3, dt)])
            blocks = np.outer(g[::3], g[::3]) * sigma_jerk**2
            q = np.kron(blocks, np.eye(3))
            x = f @ x
            p = f @ p @ f.T + q
            s = p[:3, :3] + r
            k = np.linalg.solve(s, p[:3, :]).T
            x = x + k @ (z - x[:3])
            p = p - k @ p[:3, :]
        t_prev = rep["t_ns"]
        out.append(float(np.sum((x[:3] - rep["truth"]) ** 2)))
    return out


def refilter_cv_rmse_sq(reports: list[dict[str, Any]], q: float = 100.0) -> list[float]:
    """Squared position errors of the fusion benchmark's Stone Soup anchor run over one track's
    reports alone: each report's full state a measurement with its own covariance, a
    constant-velocity model with white acceleration of spectral density ``q`` m^2/s^3."""
    out = []
    x = p = None
    t_prev = 0
    for rep in reports:
        z, r = rep["z"], rep["cov"]
        if x is None or p is None:
            x, p = z.copy(), r.copy()
        else:
            dt = (rep["t_ns"] - t_prev) / NS
            f = np.eye(6)
            f[:3, 3:] = np.eye(3) * dt
            qm = np.kron(np.array([[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]]), np.eye(3)) * q
            x = f @ x
            p = f @ p @ f.T + qm
            k = np.linalg.solve(p + r, p).T
            x = x + k @ (z - x)
            p = p - k @ p
        t_prev = rep["t_ns"]
        out.append(float(np.sum((x[:3] - rep["truth"]) ** 2)))
    return out


def ir_boost_table(per_track: Iterable[dict[int, list[dict[str, Any]]]], sigma_jerk: float = 10.0) -> dict[str, float]:
    """Space-layer-only boost reports over runs: count, position RMSE, mean 6-D and position
    NEES, the lag-1 correlation of consecutive reports' position errors (a filter's output
    errors are strongly correlated; near 0 means each report is little more than its newest
    fix) and the RMSE two re-filters of the reports get: ``refilter_rmse_sq`` (constant
    acceleration) and ``refilter_cv_rmse_sq`` (the fusion benchmark's anchor model).
    A track's reports from its first misassociated one on are counted apart and left out of the
    figures (``nees_table`` leaves out misassociated reports too)."""
    err2, nees, nees_pos, refilt, refilt_cv = [], [], [], [], []
    num = den_a = den_b = 0.0
    wrong = 0
    for tracks in per_track:
        for all_reps in tracks.values():
            bad = next((k for k, r in enumerate(all_reps) if r["misassociated"]), len(all_reps))
            wrong += len(all_reps) - bad
            reps = all_reps[:bad]
            err2 += [float(r["err"][:3] @ r["err"][:3]) for r in reps]
            nees += [r["nees"] for r in reps]
            nees_pos += [r["nees_pos"] for r in reps]
            for a, b in zip(reps, reps[1:], strict=False):
                if b["t_ns"] - a["t_ns"] <= 3 * NS:
                    num += float(a["err"][:3] @ b["err"][:3])
                    den_a += float(a["err"][:3] @ a["err"][:3])
                    den_b += float(b["err"][:3] @ b["err"][:3])
            refilt += refilter_rmse_sq(reps, sigma_jerk)
            refilt_cv += refilter_cv_rmse_sq(reps)
    if not err2:
        return {"n": 0}
    return {
        "n": len(err2),
        "misassociated": wrong,
        "rms_pos_m": float(np.sqrt(np.mean(err2))),
        "mean_nees": float(np.mean(nees)),
        "mean_nees_pos": float(np.mean(nees_pos)),
        "lag1_corr": float(num / max(np.sqrt(den_a * den_b), 1e-9)),
        "refilter_ca_rms_pos_m": float(np.sqrt(np.mean(refilt))),
        "refilter_cv_rms_pos_m": float(np.sqrt(np.mean(refilt_cv))),
    }


def measure(scenario: Any, seeds: Iterable[int]) -> dict[str, Any]:
    """NEES tables and track bookkeeping of ``scenario`` over ``seeds`` (one simulation each)."""
    from .simulate import simulate

    rows: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    ir_boost: list[dict[int, list[dict[str, Any]]]] = []
    stats: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    seeds = list(seeds)
    truth = None
    for seed in seeds:
        r = simulate(scenario, seed=seed, truth=truth)
        truth = r.truth  # the same for every seed
        mine = report_errors(r)
        rows += mine
        pairs += pair_errors(r, "JPN", "USA")
        ir_boost.append(ir_boost_errors(r))
        for nation, s in track_stats(r, mine).items():
            for k, v in s.items():
                stats[nation][k] += v
    return {"scenario": scenario.name, "seeds": seeds, "nees": nees_table(rows),
            "tracks": {n: dict(s) for n, s in stats.items()}, "jpn_usa_pairs": pair_table(pairs),
            "usa_ir_boost": ir_boost_table(ir_boost)}


def _scenario(name: str) -> Any:
    from .scenario import load_scenario

    if name == "salvo20":
        from warnshare.bench.fusion import SALVO8, salvo20  # the benchmark's own 20-missile salvo

        return salvo20(load_scenario(SALVO8))
    return load_scenario(name)


def _print(res: dict[str, Any]) -> None:
    print(f"{res['scenario']}, seeds {res['seeds']}: report NEES (6-D, consistent = 6; position 3)")
    print(f"  {'nation':<6} {'band':<7} {'n':>6} {'mean':>7} {'median':>7} {'pos':>6} {'in95':>6} {'rms m':>8}")
    for nation, bands in res["nees"].items():
        for band in (*BANDS, "flight", "all"):
            if band in bands:
                b = bands[band]
                print(f"  {nation:<6} {band:<7} {b['n']:>6} {b['mean_nees']:>7.2f} {b['median_nees']:>7.2f} "
                      f"{b['mean_nees_pos']:>6.2f} {b['inside_95']:>6.3f} {b['rms_pos_m']:>8.1f}")
    for name, p in res.get("jpn_usa_pairs", {}).items():
        print(f"  JPN+USA reports {'both using a shared sensor' if name == 'shared' else 'using no common sensor'}: "
              f"n {p['n']}, NEES JPN {p['mean_nees_a']:.2f}, USA {p['mean_nees_b']:.2f}, fused as if "
              f"independent {p['mean_nees_independent_fusion']:.2f}")
    ib = res.get("usa_ir_boost", {})
    if ib.get("n"):
        print(f"  USA space-layer-only boost reports: n {ib['n']} (and {ib['misassociated']} misassociated), rms {ib['rms_pos_m']:.0f} m, NEES "
              f"{ib['mean_nees']:.2f} (position {ib['mean_nees_pos']:.2f}), lag-1 error correlation "
              f"{ib['lag1_corr']:.2f}; re-filtered as measurements: constant acceleration "
              f"{ib['refilter_ca_rms_pos_m']:.0f} m, constant velocity (the benchmark's anchor) "
              f"{ib['refilter_cv_rms_pos_m']:.0f} m")
    print("  tracks (summed over seeds):")
    for nation, s in res["tracks"].items():
        print(f"  {nation:<6} " + ", ".join(f"{k} {v}" for k, v in s.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sims.consistency", description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", action="append", required=True,
                    help="a bundled scenario, a TOML path, or salvo20 (repeatable)")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    results = []
    for name in args.scenario:
        t0 = time.monotonic()
        res = measure(_scenario(name), seeds)
        res["elapsed_s"] = round(time.monotonic() - t0, 1)
        _print(res)
        print(f"  ({res['elapsed_s']} s)\n")
        results.append(res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
