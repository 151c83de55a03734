"""`warnshare bench relay`: the relay's alert-path latency and throughput against raw baselines.

Every run starts the system under test in a process of its own and drives it from this
process with an open-loop load (see loadgen.py). The plan: the issue's must-show points
(1,000 reports/s to 100 subscribers, 100 reports/s to 10) for every system, repeated; sweeps
over rate and subscriber count; a saturation ramp for the relay; and the relay with one
stalled subscriber among ten, next to the same load without it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from warnshare.bench import report
from warnshare.bench.baselines import nats_server_path
from warnshare.bench.cpus import placement
from warnshare.bench.histogram import LatencyHistogram
from warnshare.bench.runner import RunResult, RunSpec, execute

SYSTEMS = ("relay", "tcp", "ws", "nats")
MUST_A = (1000.0, 100)  # reports/s, subscribers
MUST_B = (100.0, 10)
SATURATION_TARGET = 20_000.0
#: When the first step of the ramp fails, the rate is halved down to this before giving up.
SATURATION_FLOOR = 200.0
STALL_P99_RATIO = 1.5
#: Clock-skew runs: one node this far ahead (s); each hop the alerts report for it must stay
#: within SKEW_HOP_TOLERANCE_MS of the same hop with synchronised clocks (medians).
SKEW_S = 5.0
SKEW_HOP_TOLERANCE_MS = 1.0
#: Memory counts as bounded when the stalled subscriber raises the relay's peak RSS, over the
#: same run without it, by no more than this (bytes) or this fraction, whichever is larger.
RSS_EXTRA_ALLOWED_BYTES = 16 << 20
RSS_EXTRA_ALLOWED_FRACTION = 0.10
#: Whether runs pin the server and the load to separate cores unless told (--pin / --no-pin).
#: Measured interleaved on this 2-core machine (docs/BENCHMARKS.md, "CPU placement"): with other
#: work running, unpinned relay runs at 1,000 reports/s x100 lost the core to it (p99 median
#: 98 ms, 2 of 18 fell behind) where pinned ones held 17 ms, the TCP floor unchanged. On the
#: machine alone (15:49 UTC, 3 repeats each way) pinning made the TCP floor faster (p99 1.99 vs
#: 2.67 ms) and the relay, held off the second core its sockets' kernel work could use, slower
#: (8.65 vs 7.44 ms): ratio 4.35 vs 2.65. So the default is the scheduler's placement, as a
#: machine to itself has it; pin on a shared one.
PIN_DEFAULT = False


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="the must-show points once, short runs, two saturation steps (< 1 minute)")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help="comma list of relay,tcp,ws,nats (nats is skipped when nats-server is absent)")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds per run (default 5; quick 1.5)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of load before measuring (default 3; quick 1): a fresh relay "
                        "needs about 2 s to reach its steady state; the warm-up's latencies are "
                        "reported apart as the cold start")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of the must-show points (default 5; quick 1)")
    parser.add_argument("--rates", type=_floats, default=None,
                        help="rate sweep, reports/s, at --sweep-subscribers (default 100,300,1000,3000,10000)")
    parser.add_argument("--sweep-subscribers", type=int, default=10)
    parser.add_argument("--subscriber-counts", type=_ints, default=None,
                        help="subscriber sweep at --sweep-rate (default 1,10,30,100)")
    parser.add_argument("--sweep-rate", type=float, default=1000.0)
    parser.add_argument("--no-sweeps", action="store_true", help="only the must-show points")
    parser.add_argument("--saturation-rates", type=_floats, default=None,
                        help="relay saturation ramp, reports/s, run upward until one fails "
                        "(default 2000,5000,10000,12500,15000,17500,20000,25000,30000; quick "
                        "2000,20000); when the first step fails, the rate is halved until one passes")
    parser.add_argument("--saturation-repeats", type=int, default=None, metavar="N",
                        help="runs of each saturation step; a step passes only if every run does, "
                        "and the ramp stops at the first run that does not (default: --repeats)")
    parser.add_argument("--saturation-subscribers", type=int, default=10)
    parser.add_argument("--no-saturation", action="store_true")
    parser.add_argument("--stall-rate", type=float, default=1000.0)
    parser.add_argument("--stall-subscribers", type=int, default=10)
    parser.add_argument("--stall-duration", type=float, default=None,
                        help="seconds of the stall runs (default 2x --duration)")
    parser.add_argument("--no-stall", action="store_true")
    parser.add_argument("--skew", type=float, default=SKEW_S, metavar="S",
                        help=f"clock-skew runs: the relay at {MUST_B[0]:g} reports/s to {MUST_B[1]} "
                        f"subscribers with one node's clock S seconds ahead, against the same point's "
                        f"first relay run with synchronised clocks (default {SKEW_S:g})")
    parser.add_argument("--no-skew", action="store_true")
    parser.add_argument("--missiles", type=int, default=8, help="synthetic missiles each nation reports")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="write all results here")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR", help="Markdown report and PNG plots here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--nice", type=int, default=0, metavar="N",
                        help="change the benchmark's niceness by N (negative needs root) before "
                        "starting anything; the servers inherit it. On a machine shared with other "
                        "work, -10 lets the systems under test, not the neighbours, set the numbers")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=PIN_DEFAULT,
                        help="CPU placement: every system's server process on the highest core, the "
                        "benchmark (publishers and subscribers) on the others, the same for every "
                        "system; no effect with fewer than 2 cores (default: %(default)s)")
    parser.add_argument("--journal", action="store_true",
                        help="the relay journals every batch to a fresh SQLite journal in each run, "
                        "as it is deployed (docker-compose.yml, `warnshare relay`); without it the "
                        "relay keeps none, and its ratios are of the fusion and the fan-out alone")
    parser.add_argument("--profile", action="store_true",
                        help="one extra relay run at 1,000 reports/s to 100 subscribers under py-spy; "
                        "its summary goes to DIR/relay_profile.txt (needs --out and py-spy)")


# --------------------------------------------------------------------------- planning


def run_seconds(args: argparse.Namespace) -> tuple[float, float]:
    """Measured and warm-up seconds of every run: as given, else 5 and 3 (quick 1.5 and 1)."""
    duration = args.duration if args.duration is not None else (1.5 if args.quick else 5.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 3.0)
    return duration, warmup


def must_show_repeats(args: argparse.Namespace) -> int:
    """Repeats of the must-show points: as given, else 5 (quick 1)."""
    return args.repeats if args.repeats is not None else (1 if args.quick else 5)


def plan(args: argparse.Namespace, systems: Sequence[str]) -> list[RunSpec]:
    """The fixed runs, in execution order (the saturation ramp is decided as it goes)."""
    quick = args.quick
    duration, warmup = run_seconds(args)
    repeats = must_show_repeats(args)
    common = {"duration_s": duration, "warmup_s": warmup, "missiles": args.missiles,
              "drain_timeout_s": drain_timeout(args, duration), **run_options(args)}
    specs: list[RunSpec] = []
    for rep in range(repeats):
        for scenario, (rate, subs) in (("rate1000_subs100", MUST_A), ("rate100_subs10", MUST_B)):
            for system in systems:
                specs.append(RunSpec(scenario, system, rate, subs, repeat=rep, seed=1 + rep, **common))
    if not (quick or args.no_sweeps):
        done = {(s.system, s.rate, s.subscribers) for s in specs}
        rates = args.rates or [100.0, 300.0, 1000.0, 3000.0, 10000.0]
        counts = args.subscriber_counts or [1, 10, 30, 100]
        points = [(r, args.sweep_subscribers) for r in rates] + [(args.sweep_rate, c) for c in counts]
        for rate, subs in points:
            for system in systems:
                if (system, rate, subs) not in done:
                    done.add((system, rate, subs))
                    specs.append(RunSpec("sweep", system, rate, subs, **common))
    if not args.no_stall and "relay" in systems:
        stall_s = args.stall_duration if args.stall_duration is not None else (duration if quick else 2 * duration)
        stall = dict(common, duration_s=stall_s, drain_timeout_s=drain_timeout(args, stall_s))
        for stalled in (0, 1):
            specs.append(RunSpec("stall", "relay", args.stall_rate, args.stall_subscribers, stalled=stalled, **stall))
    if not getattr(args, "no_skew", False) and "relay" in systems and repeats:
        # compared with the first repeat's relay run at the same point, clocks synchronised
        skew = getattr(args, "skew", SKEW_S)
        specs.append(RunSpec("clock_skew", "relay", MUST_B[0], MUST_B[1], skew_s=skew, seed=1, **common))
    return specs


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """RunSpec's fields that every run of this invocation shares: CPU placement, the journal."""
    return {**cpu_placement(args), "journal": bool(getattr(args, "journal", False))}


def cpu_placement(args: argparse.Namespace) -> dict[str, tuple[int, ...]]:
    """RunSpec's CPU fields for every run of this invocation (empty without ``--pin``)."""
    server, load = placement() if getattr(args, "pin", False) else ((), ())
    return {"server_cpus": server, "load_cpus": load}


def drain_timeout(args: argparse.Namespace, duration_s: float) -> float:
    """How long after the last send to wait for deliveries: long enough to tell a late report
    from a lost one (the wait also ends after 2 s without any delivery)."""
    return max(3.0, duration_s) if args.quick else max(10.0, 2.0 * duration_s)


def saturation_rates(args: argparse.Namespace) -> list[float]:
    if args.no_saturation:
        return []
    if args.saturation_rates:
        return sorted(args.saturation_rates)
    return [2000.0, 20000.0] if args.quick else [
        2000.0, 5000.0, 10000.0, 12500.0, 15000.0, 17500.0, 20000.0, 25000.0, 30000.0
    ]


def saturation_repeats(args: argparse.Namespace) -> int:
    """Runs per saturation step: as many as the must-show points' repeats unless told."""
    if args.saturation_repeats is not None:
        return max(1, args.saturation_repeats)
    return max(1, must_show_repeats(args))


# --------------------------------------------------------------------------- summary


def _p99s(results: Sequence[RunResult], scenario: str, system: str) -> dict[int, float]:
    """p99 (ms) per repeat of the runs that delivered anything (an empty run has no p99)."""
    return {r.spec.repeat: r.p99_ms for r in results
            if r.ok and r.latency.total and r.spec.scenario == scenario and r.spec.system == system}


def _ratio_block(results: Sequence[RunResult], scenario: str) -> dict[str, Any] | None:
    runs = [r for r in results if r.spec.scenario == scenario and r.spec.system == "relay"]
    if not runs:
        return None
    relay = _p99s(results, scenario, "relay")
    out: dict[str, Any] = {
        "relay_p99_ms": statistics.median(relay.values()) if relay else None,
        "relay_p99_ms_runs": list(relay.values()),
        "relay_runs": len(runs),
        "relay_lossless": all(r.lossless for r in runs),
        "relay_fell_behind": sum(r.fell_behind for r in runs),
    }
    for base in ("tcp", "ws", "nats"):
        other = _p99s(results, scenario, base)
        pairs = [relay[k] / other[k] for k in relay if k in other and other[k] > 0]
        out[f"{base}_p99_ms"] = statistics.median(other.values()) if other else None
        out[f"ratio_to_{base}"] = statistics.median(pairs) if pairs else None
        out[f"ratio_to_{base}_worst"] = max(pairs) if pairs else None
        out[f"ratio_to_{base}_runs"] = pairs
    return out


def summarize(results: Sequence[RunResult], systems: Sequence[str]) -> dict[str, Any]:
    """The issue's must-show figures, as ratios against baselines measured in the same run."""
    summary: dict[str, Any] = {}
    a = _ratio_block(results, "rate1000_subs100")
    if a:
        a["target"] = "relay p99 <= 3x raw-TCP p99 and <= bare-WebSocket p99"
        complete = a["relay_lossless"] and len(a["relay_p99_ms_runs"]) == a["relay_runs"]
        a["met_tcp"] = complete and a["ratio_to_tcp_worst"] is not None and a["ratio_to_tcp_worst"] <= 3.0
        a["met_ws"] = complete and a["ratio_to_ws_worst"] is not None and a["ratio_to_ws_worst"] <= 1.0
        a["met"] = a["met_tcp"] and a["met_ws"]
        summary["rate1000_subs100"] = a
    b = _ratio_block(results, "rate100_subs10")
    if b:
        b["target"] = "relay p99 <= 1.5x raw-TCP p99"
        complete = b["relay_lossless"] and len(b["relay_p99_ms_runs"]) == b["relay_runs"]
        b["met_tcp"] = complete and b["ratio_to_tcp_worst"] is not None and b["ratio_to_tcp_worst"] <= 1.5
        b["met"] = b["met_tcp"]
        summary["rate100_subs10"] = b

    relay_must = [r for r in results if r.spec.system == "relay" and r.spec.scenario.startswith("rate")]
    if relay_must:
        reps = sorted({r.spec.repeat for r in relay_must})
        meeting = 0
        for k in reps:
            ok = True
            for scenario, block, factor in (("rate1000_subs100", a, 3.0), ("rate100_subs10", b, 1.5)):
                if not block:
                    continue
                runs = [r for r in results if r.spec.scenario == scenario and r.spec.repeat == k]
                rel = {r.spec.system: r.p99_ms for r in runs if r.ok and r.latency.total}
                ok = ok and all(r.lossless for r in runs if r.spec.system == "relay")
                ok = ok and "relay" in rel and "tcp" in rel and rel["relay"] <= factor * rel["tcp"]
                if scenario == "rate1000_subs100" and ok and "ws" in rel:
                    ok = rel["relay"] <= rel["ws"]
            meeting += bool(ok)
        summary["repeats"] = {
            "count": len(reps),
            "relay_runs": len(relay_must),
            "relay_runs_failed": sum(not r.ok for r in relay_must),
            "relay_runs_fell_behind": sum(r.fell_behind for r in relay_must if r.ok),
            "relay_runs_lossy": sum(not r.lossless for r in relay_must),
            "runs_meeting_ratio_targets": meeting,
        }
        rp = summary["repeats"]
        rp["met"] = rp["relay_runs_fell_behind"] == 0 and rp["relay_runs_lossy"] == 0 and meeting == len(reps)

    sat = sorted((r for r in results if r.spec.scenario == "saturation"),
                 key=lambda r: (r.spec.rate, r.spec.repeat))
    if sat:
        # a rate passes when every one of its runs did (the ramp stops at the first that did not)
        rates = sorted({r.spec.rate for r in sat})
        passing = [q for q in rates if all(_saturation_pass(r) for r in sat if r.spec.rate == q)]
        best = max(passing, default=0.0)
        summary["saturation"] = {
            "subscribers": sat[0].spec.subscribers,
            "rate_per_s": best,
            "target_per_s": SATURATION_TARGET,
            "met": best >= SATURATION_TARGET,
            "ceiling_found": len(passing) < len(rates),
            "runs_per_step": max(r.spec.repeat for r in sat) + 1,
            "steps": [
                {
                    "rate_per_s": r.spec.rate,
                    "repeat": r.spec.repeat,
                    "passed": _saturation_pass(r),
                    "offered_rate_per_s": round(r.offered_rate, 1),
                    "lost": r.lost,
                    "conflated": r.conflated,
                    "acked": r.acked,
                    "sent": r.reports_sent,
                    "fell_behind": r.fell_behind,
                    "p99_ms": r.p99_ms,
                    "server_cpu_percent": round(r.server_cpu_percent, 1),
                    "error": r.error,
                }
                for r in sat
            ],
        }

    stall = {r.spec.stalled: r for r in results if r.spec.scenario == "stall" and r.ok}
    if 1 in stall:
        w = stall[1]
        wo = stall.get(0)
        peak = w.server_peak_rss_bytes
        base = wo.server_peak_rss_bytes if wo else 0
        allowed = max(RSS_EXTRA_ALLOWED_BYTES, RSS_EXTRA_ALLOWED_FRACTION * base)
        summary["stalled_subscriber"] = {
            "subscribers": w.spec.subscribers,
            "rate_per_s": w.spec.rate,
            "healthy_lost": w.lost,
            "healthy_conflated": w.conflated,
            "healthy_delivered_min": w.delivered_min,
            "expected_per_subscriber": w.expected_per_subscriber,
            "p99_ms_with": w.p99_ms if w.latency.total else None,
            "p99_ms_without": wo.p99_ms if wo and wo.latency.total else None,
            "p99_ratio": (w.p99_ms / wo.p99_ms) if w.latency.total and wo and wo.latency.total else None,
            "rss_peak_mb_with": peak / 1e6,
            "rss_peak_mb_without": wo.server_peak_rss_bytes / 1e6 if wo else None,
            "rss_growth_mb_with": w.rss_growth_bytes / 1e6,
            "rss_growth_mb_without": wo.rss_growth_bytes / 1e6 if wo else None,
            "rss_bounded": wo is not None and peak - base <= allowed,
            "stalled_received": w.stalled_delivered,
            "stalled_close_codes": w.stalled_close_codes,
        }
        st = summary["stalled_subscriber"]
        st["met"] = (
            st["healthy_lost"] == 0
            and st["p99_ratio"] is not None
            and st["p99_ratio"] <= STALL_P99_RATIO
            and st["rss_bounded"]
        )
    cold = {}
    for scenario in ("rate1000_subs100", "rate100_subs10"):
        for system in systems:
            runs = [r for r in results if r.ok and r.spec.scenario == scenario and r.spec.system == system]
            merged = LatencyHistogram.merged(r.warmup_latency for r in runs)
            if merged.total:
                cold.setdefault(scenario, {})[system] = {
                    "warmup_s": runs[0].spec.warmup_s,
                    **{k: v / 1e6 for k, v in merged.percentiles().items()},
                }
    if cold:
        summary["cold_start_ms"] = cold
    skew = _skew_block(results)
    if skew:
        summary["clock_skew"] = skew
    hops = {}
    for scenario in ("rate1000_subs100", "rate100_subs10"):
        # the run with the median p99 (of an odd count; the upper middle of an even one)
        runs = sorted((r for r in results if r.ok and r.hops and r.latency.total and r.spec.system == "relay"
                       and r.spec.scenario == scenario), key=lambda r: r.p99_ms)
        run = runs[len(runs) // 2] if runs else None
        if run is not None:
            hops[scenario] = {"repeat": run.spec.repeat, "p99_ms": run.p99_ms, "p50_ms": run.percentiles_ms.get("p50"),
                              **_hops_over_nations(run.hops), **run.downlink}
    if hops:
        summary["relay_hops_ms"] = hops
    summary["systems"] = list(systems)
    return summary


def _hops_over_nations(hops: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each hop's p50 and p99 (ms), the median over the source nations."""
    keys = [k for k in next(iter(hops.values()), {}) if k.endswith("_ms")]
    return {k: statistics.median(h[k] for h in hops.values() if k in h) for k in keys}


def _skew_block(results: Sequence[RunResult]) -> dict[str, Any] | None:
    """The hops the relay reports for a node whose clock is ahead, against the same hops with
    synchronised clocks (the node's one-way uplink is where a wrong offset would show)."""
    from warnshare.bench.loadgen import HOP_NAMES
    from warnshare.protocol import NATIONS

    skewed = next((r for r in results if r.spec.scenario == "clock_skew" and r.spec.skew_s), None)
    synced = next((r for r in results if r.spec.system == "relay" and not r.spec.skew_s and r.spec.repeat == 0
                   and (r.spec.rate, r.spec.subscribers) == (MUST_B[0], MUST_B[1])
                   and r.spec.scenario in ("clock_skew", "rate100_subs10")), None)
    if skewed is None or synced is None:
        return None
    nation = NATIONS[0].value  # the first node is the one whose clock is off
    a, b = skewed.hops.get(nation), synced.hops.get(nation)
    out: dict[str, Any] = {
        "skew_s": skewed.spec.skew_s,
        "nation": nation,
        "rate_per_s": skewed.spec.rate,
        "subscribers": skewed.spec.subscribers,
        "tolerance_ms": SKEW_HOP_TOLERANCE_MS,
        "hops_skewed": a,
        "hops_synced": b,
        "p99_ms_skewed": skewed.p99_ms if skewed.latency.total else None,
        "p99_ms_synced": synced.p99_ms if synced.latency.total else None,
        "lossless": skewed.lossless and synced.lossless,
    }
    if not (a and b):
        out["met"] = False
        return out
    diffs = {name: a[f"{name}_p50_ms"] - b[f"{name}_p50_ms"] for name in HOP_NAMES}
    out["hop_p50_diff_ms"] = diffs
    out["max_abs_hop_p50_diff_ms"] = max(abs(d) for d in diffs.values())
    out["offset_error_us"] = a["offset_error_p50_us"]
    out["offset_error_max_abs_us"] = a["offset_error_max_abs_us"]
    out["met"] = bool(out["lossless"] and out["max_abs_hop_p50_diff_ms"] <= SKEW_HOP_TOLERANCE_MS)
    return out


def _saturation_pass(r: RunResult) -> bool:
    """No report lost, no growing backlog, and the generator really offered the rate."""
    return r.ok and r.lossless and not r.fell_behind and r.offered_rate >= 0.95 * r.spec.rate


# --------------------------------------------------------------------------- progress


class Progress:
    """A plain-text progress bar on stderr (one line per run when stderr is not a terminal)."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total = total
        self.done = 0
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.label = ""
        self._last = 0.0

    def start(self, label: str) -> None:
        self.label = label
        self.update(0.0, force=True)

    def update(self, fraction: float, force: bool = False) -> None:
        if not self.enabled or not (self.tty or force):
            return
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        pos = (self.done + fraction) / max(1, self.total)
        width = 30
        fill = int(round(pos * width))
        elapsed = int(now - self.t0)
        line = (f"[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} "
                f"{elapsed // 60}m{elapsed % 60:02d}s  {self.label}")
        if self.tty:
            sys.stderr.write("\r" + line[:119].ljust(119))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def finish_run(self, result: RunResult) -> None:
        self.done += 1
        if not self.enabled:
            return
        if not result.ok:
            msg = f"{result.spec.label}: FAILED {result.error}"
        else:
            msg = f"{result.spec.label}: p99 {result.p99_ms:.2f} ms, lost {result.lost}"
        if self.tty:
            sys.stderr.write("\r" + msg[:119].ljust(119) + "\n")
        else:
            sys.stderr.write("  " + msg + "\n")
        self.update(0.0, force=self.tty)

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    versions = {}
    for pkg in ("uvicorn", "websockets", "fastapi", "starlette", "uvloop", "msgpack", "pydantic", "nats-py"):
        try:
            from importlib.metadata import version

            versions[pkg] = version(pkg)
        except Exception:
            versions[pkg] = None
    nats = nats_server_path()
    nats_version = None
    if nats:
        import subprocess

        try:
            nats_version = subprocess.run([nats, "--version"], capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return {
        "started_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "source": _source_revision(),
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": round(os.getloadavg()[0], 2),
        "packages": versions,
        "nats_server": nats_version,
    }


_AUTOGROUP = Path("/proc/self/autogroup")


def _autogroup_nice(nice: int) -> int | None:
    """Linux with autogroup scheduling weighs sessions against each other and applies a
    process's niceness only inside its session, so the session's group gets it too.
    Returns the group's previous niceness (None without autogroup), to restore at the end:
    the group outlives this process."""
    if not _AUTOGROUP.exists():
        return None
    previous = int(_AUTOGROUP.read_text().split()[-1])
    _AUTOGROUP.write_text(str(nice))
    return previous


def _source_revision() -> str | None:
    """The git commit the benchmarked code comes from, ``+dirty`` when the tree has edits."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("+dirty" if dirty else "")) or None


# --------------------------------------------------------------------------- main


def run_all(
    args: argparse.Namespace,
    systems: Sequence[str],
    runner: Callable[..., RunResult] = execute,
) -> list[RunResult]:
    specs = plan(args, systems)
    sat_rates = saturation_rates(args) if "relay" in systems else []
    sat_reps = saturation_repeats(args)
    progress = Progress(len(specs) + len(sat_rates) * sat_reps, enabled=not args.no_progress)
    results: list[RunResult] = []
    for spec in specs:
        progress.start(spec.label + (f" (repeat {spec.repeat + 1})" if spec.scenario.startswith("rate") else ""))
        res = runner(spec, host=args.host, progress=progress.update)
        results.append(res)
        progress.finish_run(res)
    duration, warmup = run_seconds(args)

    def saturation_step(rate: float) -> bool:
        """Every run of the step, until one fails: whether the step held in all of them."""
        for k in range(sat_reps):
            spec = RunSpec("saturation", "relay", rate, args.saturation_subscribers, duration_s=duration,
                           warmup_s=warmup, repeat=k, missiles=args.missiles,
                           drain_timeout_s=drain_timeout(args, duration), **run_options(args))
            progress.start(spec.label + f" (saturation, run {k + 1} of {sat_reps})")
            res = runner(spec, host=args.host, progress=progress.update)
            results.append(res)
            progress.finish_run(res)
            if not _saturation_pass(res):
                return False
        return True

    for i, rate in enumerate(sat_rates):
        if saturation_step(rate):
            continue
        progress.total = progress.done  # the ramp stops at the first failure
        if i == 0:
            # below the whole ramp: halve down to a floor so the summary still has a figure
            rate /= 2
            while rate >= SATURATION_FLOOR:
                progress.total += sat_reps
                if saturation_step(rate):
                    break
                rate /= 2
        break
    progress.close()
    return results


def profile_relay(args: argparse.Namespace) -> tuple[RunResult | None, str]:
    """A separate, profiled relay run (its latencies are not used: sampling perturbs them)."""
    from warnshare.bench.profile import py_spy_path

    if args.out is None:
        return None, "--profile needs --out DIR"
    if py_spy_path() is None:
        return None, "profile skipped: py-spy is not installed (pip install py-spy)"
    duration, warmup = run_seconds(args)
    spec = RunSpec("profile", "relay", MUST_A[0], MUST_A[1], duration_s=duration, warmup_s=warmup,
                   missiles=args.missiles, drain_timeout_s=max(3.0, duration), **run_options(args))
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.no_progress:
        print(f"profiling {spec.label} with py-spy ...", file=sys.stderr)
    res = execute(spec, host=args.host, profile_to=args.out / "relay_profile.txt")
    if not res.profile:
        return res, f"profile failed: {res.error or 'py-spy wrote nothing'}"
    return res, (f"py-spy profile of the relay at {spec.label}: {Path(res.profile).name} "
                 f"(that run, perturbed by sampling: p99 {res.p99_ms:.1f} ms, relay CPU {res.server_cpu_percent:.0f}%)")


def notes_for(results: Sequence[RunResult], systems: Sequence[str], skipped: Sequence[str]) -> list[str]:
    notes = list(skipped)
    lag = [r for r in results if r.ok and r.send_lag.value_at_percentile(99) > 5_000_000]
    if lag:
        notes.append(
            f"The load generator sent late (p99 send lag > 5 ms) in {len(lag)} run(s); that lateness "
            "is inside the latencies (open loop), so those points partly measure the load side."
        )
    busy = max((r.load_average for r in results), default=0.0)
    if busy > 1.0:
        notes.append(
            f"Load average reached {busy:.1f} at the start of a run on this 2-core machine: other work "
            "was running, so absolute numbers are noisy; ratios are of runs taken back to back."
        )
    failed = [r for r in results if not r.ok]
    for r in failed[:5]:
        notes.append(f"{r.spec.label} ({r.spec.scenario}) failed: {r.error}")
    return notes


def run(args: argparse.Namespace) -> int:
    wanted = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SYSTEMS]
    if unknown:
        print(f"unknown system(s): {', '.join(unknown)} (choose from {', '.join(SYSTEMS)})", file=sys.stderr)
        return 2
    skipped = []
    if "nats" in wanted and nats_server_path() is None:
        wanted.remove("nats")
        skipped.append("NATS skipped: nats-server is not on PATH (Debian: apt-get install nats-server).")
        print(skipped[-1], file=sys.stderr)
    if "relay" in wanted:
        try:
            import warnshare.relay.app  # noqa: F401
        except ImportError as exc:
            print(f"relay not available ({exc}); benchmarking the baselines only", file=sys.stderr)
            wanted.remove("relay")
            skipped.append(f"relay skipped: {exc}")
    if not wanted:
        print("nothing to benchmark", file=sys.stderr)
        return 2
    group_nice: int | None = None
    if args.nice:
        try:
            os.nice(args.nice)
            group_nice = _autogroup_nice(args.nice)
        except OSError as exc:
            print(f"--nice {args.nice}: {exc}; running at the default priority", file=sys.stderr)
            args.nice = 0
    try:
        return _run(args, wanted, skipped)
    finally:
        if group_nice is not None:
            with contextlib.suppress(OSError):
                _AUTOGROUP.write_text(str(group_nice))


def _run(args: argparse.Namespace, wanted: list[str], skipped: list[str]) -> int:
    machine = machine_info()
    machine["niceness"] = os.nice(0)
    server_cpus, load_cpus = cpu_placement(args).values()
    machine["cpu_placement"] = ({"server": list(server_cpus), "load": list(load_cpus)} if server_cpus
                                else "none (the scheduler's)")
    if _AUTOGROUP.exists():
        machine["autogroup"] = _AUTOGROUP.read_text().strip()
    t0 = time.monotonic()
    results = run_all(args, wanted)
    if args.json is not None:  # the runs are kept even if anything below fails
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "runs": [r.to_dict() for r in results]}, default=str))
    summary = summarize(results, wanted)
    summary["wall_s"] = round(time.monotonic() - t0, 1)
    notes = notes_for(results, wanted, skipped)
    if args.profile and "relay" in wanted:
        _, note = profile_relay(args)
        notes.append(note)

    print(report.text_table(results))
    text = report.summary_text(summary)
    if text:
        print()
        print("Must show (ratios against baselines measured in this run):")
        print(text)
    for n in notes:
        print(f"note: {n}")

    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not k.startswith("_")}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(
            {"machine": machine, "config": config, "summary": summary, "notes": notes,
             "runs": [r.to_dict() for r in results]},
            indent=1, default=str,
        ))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        plots = [
            report.plot_cdf(results, args.out / "latency_cdf.png", [
                ("rate1000_subs100", "1,000 reports/s, 100 subscribers"),
                ("rate100_subs10", "100 reports/s, 10 subscribers"),
            ]),
            report.plot_load(results, args.out / "p99_vs_load.png", args.sweep_subscribers, args.sweep_rate),
            report.plot_stall(results, args.out / "stall_memory.png"),
        ]
        report.write_markdown(args.out / "REPORT.md", results, summary, machine, config,
                              [p for p in plots if p is not None], notes)
        print(f"report: {args.out / 'REPORT.md'}", file=sys.stderr)
    return 0 if all(r.ok for r in results) else 1
