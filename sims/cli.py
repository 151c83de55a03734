"""`warnshare sim`: list, run, export and plot scenarios without a relay."""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .model import NATIONS, SimResult
from .scenario import list_fault_overlays, list_scenarios, load_scenario
from .sensors import sensor_feeds

NS = 1_000_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--list", action="store_true", help="name the bundled scenarios and fault overlays")
    g.add_argument("--scenario", metavar="NAME", help="a bundled scenario (NAME+OVERLAY adds faults)")
    g.add_argument("--scenario-file", metavar="PATH", help="a scenario TOML file (see docs/SCENARIOS.md)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--nations", default=",".join(NATIONS), help="comma-separated nations to simulate (default all)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--out", metavar="FILE", help="write truth, measurements and national tracks as JSON (.json or .json.gz)")
    parser.add_argument("--plot", metavar="FILE.png", help="render altitude against downrange and the ground tracks")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def _utc(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / NS, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-4] + "Z"


def summary(result: SimResult) -> dict[str, Any]:
    """What `warnshare sim --scenario` prints: per missile, its flight and who saw it when."""
    sc = result.scenario
    missiles = []
    for mid, tr in result.truth.items():
        seen = []
        for ms in result.measurements.values():
            hit = ms.times_ns[ms.truth_id == mid]
            if len(hit):
                seen.append({
                    "sensor": ms.sensor_id, "nation": ms.nation,
                    "fed_to": [n for n in sensor_feeds(ms.sensor_id) if n in result.national_tracks],
                    "reports": int(len(hit)),
                    "first_s": round((int(hit[0]) - tr.launch_ns) / NS, 1),
                    "last_s": round((int(hit[-1]) - tr.launch_ns) / NS, 1),
                })
        seen.sort(key=lambda s: (s["first_s"], s["sensor"]))
        tracks = {}
        for nation, ups in result.national_tracks.items():
            mine = [u for u in ups if u.missile_id == mid]
            if mine:
                tracks[nation] = {
                    "first_available_s": round((mine[0].available_ns - tr.launch_ns) / NS, 1),
                    "last_valid_s": round((max(u.time_of_validity_ns for u in mine) - tr.launch_ns) / NS, 1),
                    "updates": len(mine),
                    "track_numbers": sorted({u.track_number for u in mine}),
                }
        missiles.append({
            "missile_id": mid,
            "class": tr.missile_class,
            "launch_utc": _utc(tr.launch_ns),
            "launch_lat_deg": round(tr.launch_lat_deg, 3),
            "launch_lon_deg": round(tr.launch_lon_deg, 3),
            "apogee_km": round(tr.apogee_m / 1e3, 1),
            "range_km": round(tr.range_m / 1e3, 1),
            "flight_time_s": round(tr.flight_time_s, 1),
            "impact_lat_deg": round(tr.impact_lat_deg, 3),
            "impact_lon_deg": round(tr.impact_lon_deg, 3),
            "breakup_s": None if tr.breakup_ns is None else round((tr.breakup_ns - tr.launch_ns) / NS, 1),
            "published_flight_time_s": tr.published_flight_time_s,
            "seen_by": seen,
            "national_tracks": tracks,
        })
    return {
        "scenario": sc.name,
        "description": sc.description,
        "start_utc": _utc(sc.start_ns),
        "seed": result.seed,
        "nations": list(result.national_tracks),
        "faults": [{"kind": f.kind, "nation": f.nation, "start_s": f.start_s, "end_s": f.end_s, **f.params} for f in sc.faults],
        "missiles": missiles,
    }


def _print_summary(s: dict[str, Any]) -> None:
    print(f"{s['scenario']}  (t=0 {s['start_utc']}, seed {s['seed']})")
    for m in s["missiles"]:
        extra = f", published {m['published_flight_time_s']:.0f} s" if m["published_flight_time_s"] else ""
        brk = f", breaks up at {m['breakup_s']:.0f} s" if m["breakup_s"] is not None else ""
        print(f"\n  {m['missile_id']} {m['class']} launched {m['launch_utc']} from "
              f"{m['launch_lat_deg']:.3f}N {m['launch_lon_deg']:.3f}E{brk}")
        print(f"    apogee {m['apogee_km']:.1f} km, range {m['range_km']:.1f} km, flight {m['flight_time_s']:.0f} s{extra}; "
              f"impact {m['impact_lat_deg']:.3f}N {m['impact_lon_deg']:.3f}E")
        for nation in s["nations"]:
            sensors = [x for x in m["seen_by"] if nation in x["fed_to"]]
            t = m["national_tracks"].get(nation)
            if not sensors and not t:
                print(f"    {nation}: not seen")
                continue
            head = f"national track from {t['first_available_s']:.0f} s" if t else "no national track"
            print(f"    {nation}: {head}")
            for x in sensors:
                shared = f", {x['nation']}'s" if x["nation"] != nation else ""
                print(f"      {x['sensor']:<26} {x['first_s']:7.0f} s - {x['last_s']:7.0f} s  ({x['reports']} reports{shared})")
    for f in s["faults"]:
        print(f"  fault: {f}")


def _arrays(a: np.ndarray) -> list:
    return a.tolist()


def export(result: SimResult) -> dict[str, Any]:
    """The --out document (format in docs/SCENARIOS.md)."""
    truth = {}
    for mid, tr in result.truth.items():
        truth[mid] = {
            "class": tr.missile_class,
            "times_ns": _arrays(tr.times_ns),
            "position_ecef_m": _arrays(np.round(tr.position_ecef_m, 3)),
            "velocity_ecef_mps": _arrays(np.round(tr.velocity_ecef_mps, 4)),
            "thrusting": _arrays(tr.thrusting),
            "launch_ns": tr.launch_ns, "impact_ns": tr.impact_ns, "burnout_ns": tr.burnout_ns,
            "breakup_ns": tr.breakup_ns,
            "launch_lat_deg": tr.launch_lat_deg, "launch_lon_deg": tr.launch_lon_deg,
            "impact_lat_deg": tr.impact_lat_deg, "impact_lon_deg": tr.impact_lon_deg,
            "apogee_m": tr.apogee_m, "range_m": tr.range_m, "flight_time_s": tr.flight_time_s,
        }
    meas = {}
    for sid, ms in result.measurements.items():
        meas[sid] = {
            "nation": ms.nation, "kind": ms.kind,
            "site_lat_deg": None if np.isnan(ms.site_lat_deg) else ms.site_lat_deg,
            "site_lon_deg": None if np.isnan(ms.site_lon_deg) else ms.site_lon_deg,
            "site_alt_m": ms.site_alt_m,
            "columns": ["range_m", "azimuth_deg", "elevation_deg"] if ms.kind == "radar" else ["lat_deg", "lon_deg", "alt_m"],
            "times_ns": _arrays(ms.times_ns), "values": _arrays(ms.values), "sigma": _arrays(ms.sigma),
            "truth_id": _arrays(ms.truth_id),
        }
    tracks = {}
    for nation, ups in result.national_tracks.items():
        tracks[nation] = [{
            "track_number": u.track_number, "missile_id": u.missile_id,
            "time_of_validity_ns": u.time_of_validity_ns, "available_ns": u.available_ns,
            "position_ecef_m": list(u.position_ecef_m), "velocity_ecef_mps": list(u.velocity_ecef_mps),
            "covariance": _arrays(u.covariance), "track_quality": u.track_quality, "boosting": u.boosting,
            "lost": u.lost, "flight_phase": u.flight_phase, "launch_estimate": u.launch_estimate,
            "impact_estimate": u.impact_estimate, "sensor_ids": list(u.sensor_ids),
        } for u in ups]
    return {"format": "warnshare-sim/1", "summary": summary(result), "truth": truth,
            "measurements": meas, "national_tracks": tracks}


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except BrokenPipeError:
        # `warnshare sim ... | head`: the reader left; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(args: argparse.Namespace) -> int:
    from .model import ScenarioError

    if args.list:
        for name in list_scenarios():
            sc = load_scenario(name)
            text = " ".join(sc.description.split())
            first = text.split(". ")[0].rstrip(".") + "." if text else ""
            print(f"{name:<24} {first}")
        print("\nfault overlays (append +NAME to a scenario name):")
        for name in list_fault_overlays():
            print(f"  {name}")
        return 0
    target = args.scenario or args.scenario_file
    if not target:
        print("warnshare sim: give --list, --scenario NAME or --scenario-file PATH", file=sys.stderr)
        return 2
    try:
        scenario = load_scenario(target)
    except ScenarioError as e:
        print(f"warnshare sim: {e}", file=sys.stderr)
        return 2
    nations = [n.strip().upper() for n in args.nations.split(",") if n.strip()]
    bad = [n for n in nations if n not in NATIONS]
    if bad:
        print(f"warnshare sim: unknown nation(s) {bad}; expected {list(NATIONS)}", file=sys.stderr)
        return 2
    from .simulate import simulate

    t0 = time.monotonic()

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"[{time.monotonic() - t0:5.1f} s] {msg}", file=sys.stderr, flush=True)

    result = simulate(scenario, seed=args.seed, nations=nations, progress=progress)
    s = summary(result)
    if args.out:
        progress(f"writing {args.out}")
        text = json.dumps(export(result))
        path = Path(args.out)
        if path.suffix == ".gz":
            with gzip.open(path, "wt", encoding="utf-8") as f:
                f.write(text)
        else:
            path.write_text(text)
    if args.plot:
        progress(f"plotting {args.plot}")
        from .plot import plot_result

        plot_result(result, args.plot)
    progress("done")
    # the summary last, so a reader that stops early (`| head`) costs no file
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        _print_summary(s)
    return 0
