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


def measure(scenario: Any, seeds: Iterable[int]) -> dict[str, Any]:
    """NEES tables and track bookkeeping of ``scenario`` over ``seeds`` (one simulation each)."""
    from .simulate import simulate

    rows: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    stats: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    seeds = list(seeds)
    truth = None
    for seed in seeds:
        r = simulate(scenario, seed=seed, truth=truth)
        truth = r.truth  # the same for every seed
        mine = report_errors(r)
        rows += mine
        pairs += pair_errors(r, "JPN", "USA")
        for nation, s in track_stats(r, mine).items():
            for k, v in s.items():
                stats[nation][k] += v
    return {"scenario": scenario.name, "seeds": seeds, "nees": nees_table(rows),
            "tracks": {n: dict(s) for n, s in stats.items()}, "jpn_usa_pairs": pair_table(pairs)}


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
