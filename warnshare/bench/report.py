"""Reports of a relay benchmark: the stdout table, the Markdown report and the PNG plots."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from warnshare.bench.histogram import LatencyHistogram
from warnshare.bench.runner import RunResult

SYSTEM_NAMES = {
    "relay": "warnshare relay",
    "tcp": "raw TCP fan-out (floor)",
    "ws": "bare WebSocket forwarder",
    "nats": "NATS core",
}
SYSTEM_COLOURS = {"relay": "#d62728", "tcp": "#2ca02c", "ws": "#1f77b4", "nats": "#9467bd"}
SYSTEM_ORDER = ("relay", "tcp", "ws", "nats")


def _group_key(r: RunResult) -> tuple:
    s = r.spec
    return (s.scenario, s.rate, s.subscribers, s.stalled, SYSTEM_ORDER.index(s.system) if s.system in SYSTEM_ORDER else 9, s.system)


def grouped(results: Iterable[RunResult]) -> list[list[RunResult]]:
    """Runs of the same scenario, system, load and stall together (the repeats of one point)."""
    groups: dict[tuple, list[RunResult]] = {}
    for r in results:
        groups.setdefault(_group_key(r), []).append(r)
    return [groups[k] for k in sorted(groups, key=lambda k: (str(k[0]), *k[1:5]))]


def _ms(ns: float) -> str:
    ms = ns / 1e6
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    return f"{ms:.2f}"


def group_row(runs: Sequence[RunResult]) -> dict[str, Any]:
    """One table row: percentiles of all the group's samples merged, plus per-run p99 spread."""
    ok = [r for r in runs if r.ok]
    s = runs[0].spec
    row: dict[str, Any] = {
        "scenario": s.scenario,
        "system": s.system,
        "rate": s.rate,
        "subscribers": s.subscribers,
        "stalled": s.stalled,
        "runs": len(runs),
        "failed": len(runs) - len(ok),
    }
    if not ok:
        row["error"] = runs[0].error
        return row
    merged = LatencyHistogram.merged(r.latency for r in ok)
    p99s = [r.p99_ms for r in ok]
    row.update(
        {
            "percentiles_ns": merged.percentiles(),
            "p99_ms_runs": p99s,
            "p99_ms_median": statistics.median(p99s),
            "delivered_min": min(r.delivered_min for r in ok),
            "expected": ok[0].expected_per_subscriber,
            "lost": sum(r.lost for r in ok),
            "duplicates": sum(r.duplicates for r in ok),
            "conflated": sum(r.conflated for r in ok),
            "behind": sum(r.fell_behind for r in ok),
            "server_cpu": statistics.median(r.server_cpu_percent for r in ok),
            "server_rss_mb": max(r.server_peak_rss_bytes for r in ok) / 1e6,
            "send_lag_p99_ms": max(r.send_lag.value_at_percentile(99) for r in ok) / 1e6,
            "load_cpu": statistics.median(r.load_cpu_percent for r in ok),
            "bytes_per_message": statistics.median(r.bytes_per_message for r in ok),
            "messages_per_frame": statistics.median(r.messages_per_frame for r in ok),
        }
    )
    return row


_COLUMNS = (
    "scenario", "system", "rate/s", "subs", "runs", "p50", "p90", "p99", "p99.9", "max",
    "p99 runs", "delivered", "lost", "dup", "behind", "srv CPU%", "srv RSS MB", "B/msg", "msg/frame", "gen lag p99",
)


def _cells(row: dict[str, Any]) -> list[str]:
    subs = f"{row['subscribers']}" + (f" ({row['stalled']} stalled)" if row["stalled"] else "")
    head = [row["scenario"], row["system"], f"{row['rate']:g}", subs, str(row["runs"])]
    if "percentiles_ns" not in row:
        return head + ["FAILED: " + row.get("error", "")[:60]] + [""] * (len(_COLUMNS) - len(head) - 1)
    p = row["percentiles_ns"]
    runs = row["p99_ms_runs"]
    spread = f"{min(runs):.2f}-{max(runs):.2f}" if len(runs) > 1 else f"{runs[0]:.2f}"
    return head + [
        _ms(p["p50"]), _ms(p["p90"]), _ms(p["p99"]), _ms(p["p99.9"]), _ms(p["max"]),
        spread,
        f"{row['delivered_min']}/{row['expected']}",
        str(row["lost"]),
        str(row["duplicates"]),
        f"{row['behind']}/{row['runs'] - row['failed']}",
        f"{row['server_cpu']:.0f}",
        f"{row['server_rss_mb']:.0f}",
        f"{row['bytes_per_message']:.0f}",
        f"{row['messages_per_frame']:.1f}",
        f"{row['send_lag_p99_ms']:.1f}",
    ]


def text_table(results: Iterable[RunResult]) -> str:
    """Aligned plain-text table, latencies in ms (all of a point's repeats merged)."""
    rows = [_COLUMNS] + [tuple(_cells(group_row(g))) for g in grouped(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def markdown_table(results: Iterable[RunResult]) -> str:
    rows = [_cells(group_row(g)) for g in grouped(results)]
    out = ["| " + " | ".join(_COLUMNS) + " |", "|" + "|".join("---" for _ in _COLUMNS) + "|"]
    out += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(out)


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def summary_lines(summary: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, target, measured, met) rows of the must-show summary."""
    out = []
    a = summary.get("rate1000_subs100")
    if a:
        out.append((
            "1,000 reports/s, 100 subscribers: relay p99 / raw-TCP p99",
            "<= 3",
            f"{_fmt(a['ratio_to_tcp'])} (worst run {_fmt(a['ratio_to_tcp_worst'])}; relay p99 {_fmt(a['relay_p99_ms'])} ms, TCP {_fmt(a['tcp_p99_ms'])} ms)",
            _fmt(a["met_tcp"]),
        ))
        out.append((
            "1,000 reports/s, 100 subscribers: relay p99 / bare-WebSocket p99",
            "<= 1",
            f"{_fmt(a['ratio_to_ws'])} (WebSocket forwarder p99 {_fmt(a['ws_p99_ms'])} ms)",
            _fmt(a["met_ws"]),
        ))
        out.append((
            "1,000 reports/s, 100 subscribers: relay p99 / NATS p99",
            "(reference)",
            f"{_fmt(a['ratio_to_nats'])} (NATS p99 {_fmt(a['nats_p99_ms'])} ms)",
            "-",
        ))
    b = summary.get("rate100_subs10")
    if b:
        out.append((
            "100 reports/s, 10 subscribers: relay p99 / raw-TCP p99",
            "<= 1.5",
            f"{_fmt(b['ratio_to_tcp'])} (worst run {_fmt(b['ratio_to_tcp_worst'])}; relay p99 {_fmt(b['relay_p99_ms'])} ms, TCP {_fmt(b['tcp_p99_ms'])} ms)",
            _fmt(b["met_tcp"]),
        ))
    s = summary.get("saturation")
    if s:
        out.append((
            f"Saturation ingest, {s['subscribers']} subscribers, no loss, no growing backlog",
            f">= {s['target_per_s']:,} reports/s",
            f"{s['rate_per_s']:,.0f} reports/s"
            + (f" (each step {s['runs_per_step']} runs, all passing)" if s.get("runs_per_step", 1) > 1 else "")
            + ("" if s["ceiling_found"] else " (every step passed)"),
            _fmt(s["met"]),
        ))
    r = summary.get("repeats")
    if r:
        out.append((
            f"The same across {r['count']} repeats: relay runs that fell behind / lost reports",
            "0 / 0",
            f"{r['relay_runs_fell_behind']} / {r['relay_runs_lossy']} of {r['relay_runs']}; ratio targets met in {r['runs_meeting_ratio_targets']} of {r['count']} repeats",
            _fmt(r["met"]),
        ))
    st = summary.get("stalled_subscriber")
    if st:
        out.append((
            "1 stalled subscriber of 10: healthy subscribers' reports lost",
            "0",
            str(st["healthy_lost"]),
            _fmt(st["healthy_lost"] == 0),
        ))
        out.append((
            "1 stalled subscriber of 10: healthy p99 with / without",
            "<= 1.5",
            f"{_fmt(st['p99_ratio'])} ({_fmt(st['p99_ms_with'])} / {_fmt(st['p99_ms_without'])} ms)",
            _fmt(st["p99_ratio"] is not None and st["p99_ratio"] <= 1.5),
        ))
        out.append((
            "1 stalled subscriber of 10: relay memory bounded",
            "peak <= without + max(16 MB, 10%)",
            f"peak {_fmt(st['rss_peak_mb_with'], 0)} MB (without: {_fmt(st['rss_peak_mb_without'], 0)} MB); "
            f"growth in the 2nd half {_fmt(st['rss_growth_mb_with'], 1)} MB (without: {_fmt(st['rss_growth_mb_without'], 1)} MB)",
            _fmt(st["rss_bounded"]),
        ))
    sk = summary.get("clock_skew")
    if isinstance(sk, dict):
        if sk.get("hop_p50_diff_ms"):
            d = sk["hop_p50_diff_ms"]
            a, b = sk["hops_skewed"], sk["hops_synced"]
            measured = (
                f"largest difference {sk['max_abs_hop_p50_diff_ms']:.3f} ms: uplink {b['uplink_p50_ms']:.3f} -> "
                f"{a['uplink_p50_ms']:.3f}, node {d['node']:+.3f}, relay {d['relay']:+.3f} ms; "
                f"offset estimate off by {sk['offset_error_us']:+.0f} us (max {sk['offset_error_max_abs_us']:.0f} us)"
            )
        else:
            measured = "no hops recorded for the skewed node"
        out.append((
            f"Clock skew: {sk['nation']} node {sk['skew_s']:+g} s, its per-hop medians vs synchronised clocks",
            f"within {sk['tolerance_ms']:g} ms",
            measured,
            _fmt(sk["met"]),
        ))
    for scenario, h in summary.get("relay_hops_ms", {}).items():
        out.append((
            f"Where the time goes ({scenario}, the median run, repeat {h.get('repeat', 0) + 1}): hops read off the relay's alerts",
            "(reference)",
            f"node send -> relay receive p50 {h['uplink_p50_ms']:.2f} / p99 {h['uplink_p99_ms']:.2f} ms; "
            f"relay receive -> fused (validation, fusion) p50 {h['relay_p50_ms']:.2f} / p99 {h['relay_p99_ms']:.2f} ms; "
            + (f"fused -> relay sent (fan-out) p50 {h['fanout_p50_ms']:.2f} / p99 {h['fanout_p99_ms']:.2f} ms; "
               f"relay sent -> subscriber receive p50 {h['downlink_p50_ms']:.2f} / p99 {h['downlink_p99_ms']:.2f} ms; "
               if "downlink_p99_ms" in h else "")
            + f"end to end p50 {_fmt(h['p50_ms'])} / p99 {_fmt(h['p99_ms'])} ms",
            "-",
        ))
    for scenario, by_system in summary.get("cold_start_ms", {}).items():
        relay = by_system.get("relay")
        tcp = by_system.get("tcp")
        if relay:
            out.append((
                f"Cold start ({scenario}): the first {relay['warmup_s']:g} s into a fresh relay",
                "(reference)",
                f"p50 {relay['p50']:.1f} / p99 {relay['p99']:.1f} / max {relay['max']:.1f} ms"
                + (f" (TCP p99 {tcp['p99']:.1f} ms)" if tcp else ""),
                "-",
            ))
    return out


def summary_text(summary: dict[str, Any]) -> str:
    lines = summary_lines(summary)
    if not lines:
        return ""
    w0 = max(len(x[0]) for x in lines)
    w1 = max(len(x[1]) for x in lines)
    return "\n".join(f"{m:>4}  {f.ljust(w0)}  {t.ljust(w1)}  {v}" for f, t, v, m in lines)


def summary_markdown(summary: dict[str, Any]) -> str:
    out = ["| figure | target | measured | met |", "|---|---|---|---|"]
    out += [f"| {f} | {t} | {v} | {m} |" for f, t, v, m in summary_lines(summary)]
    return "\n".join(out)


# --------------------------------------------------------------------------- plots


def plot_cdf(results: Sequence[RunResult], path: Path, panels: Sequence[tuple[str, str]]) -> Path | None:
    """Latency CDF per system, one panel per (scenario, title); log latency, logit probability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [(s, t) for s, t in panels if any(r.spec.scenario == s and r.ok for r in results)]
    if not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(6.5 * len(present), 5.6), squeeze=False)
    for ax, (scenario, title) in zip(axes[0], present, strict=True):
        for system in SYSTEM_ORDER:
            runs = [r for r in results if r.spec.scenario == scenario and r.spec.system == system and r.ok]
            merged = LatencyHistogram.merged(r.latency for r in runs)
            if merged.total == 0:
                continue
            x, y = merged.cdf()
            keep = (y > 0) & (y < 1)
            p99 = merged.value_at_percentile(99) / 1e6
            ax.plot(x[keep] / 1e6, y[keep], color=SYSTEM_COLOURS[system], lw=2,
                    label=f"{SYSTEM_NAMES[system]} (p99 {p99:.2f} ms)")
        ax.set_xscale("log")
        ax.set_yscale("logit")
        ax.set_ylim(0.01, 0.9999)
        ax.set_yticks([0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999])
        ax.set_yticklabels(["1%", "10%", "50%", "90%", "99%", "99.9%", "99.99%"])
        ax.set_xlabel("node send (intended) to subscriber receive, ms (log)")
        ax.set_ylabel("fraction of deliveries at or below")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=9, frameon=False)
    fig.suptitle("Latency CDF per system (all repeats merged)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _p99_by(results: Sequence[RunResult], system: str, pick: Any, key: str) -> tuple[list[float], list[float]]:
    points: dict[float, list[float]] = {}
    for r in results:
        if r.ok and r.spec.system == system and r.spec.stalled == 0 and pick(r):
            points.setdefault(getattr(r.spec, key), []).append(r.p99_ms)
    xs = sorted(points)
    return xs, [statistics.median(points[x]) for x in xs]


def plot_load(
    results: Sequence[RunResult], path: Path, sweep_subscribers: int, sweep_rate: float
) -> Path | None:
    """p99 against offered rate (fixed subscribers) and against subscribers (fixed rate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.0))
    drew = False
    for system in SYSTEM_ORDER:
        xs, ys = _p99_by(
            results, system,
            lambda r: r.spec.subscribers == sweep_subscribers and r.spec.scenario != "saturation", "rate",
        )
        if xs:
            drew = True
            ax1.plot(xs, ys, "o-", color=SYSTEM_COLOURS[system], lw=2, label=SYSTEM_NAMES[system])
        xs, ys = _p99_by(results, system, lambda r: r.spec.rate == sweep_rate, "subscribers")
        if xs:
            ax2.plot(xs, ys, "o-", color=SYSTEM_COLOURS[system], lw=2, label=SYSTEM_NAMES[system])
    sat = sorted((r for r in results if r.spec.scenario == "saturation" and r.ok), key=lambda r: r.spec.rate)
    if sat:
        drew = True
        ax1.plot([r.spec.rate for r in sat], [r.p99_ms for r in sat], "s--", color=SYSTEM_COLOURS["relay"], lw=1.2,
                 label="relay, saturation ramp (x = lost or behind)")
        bad = [r for r in sat if not r.lossless or r.fell_behind]
        if bad:
            ax1.plot([r.spec.rate for r in bad], [r.p99_ms for r in bad], "x", color="black", ms=10, mew=2)
    if not drew:
        plt.close(fig)
        return None
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("p99 latency, ms (log; median of repeats)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=9, loc="upper left")
    ax1.set_xlabel("offered load, reports/s (log)")
    ax1.set_title(f"p99 against load, {sweep_subscribers} subscribers")
    ax2.set_xlabel("subscribers (log)")
    ax2.set_title(f"p99 against subscribers, {sweep_rate:g} reports/s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_stall(results: Sequence[RunResult], path: Path) -> Path | None:
    """The relay's resident memory through the stall scenario, with and without the stalled reader."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in results if r.spec.scenario.startswith("stall") and r.ok and r.server_rss_samples]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for r in runs:
        t = [s[0] for s in r.server_rss_samples]
        m = [s[1] / 1e6 for s in r.server_rss_samples]
        what = "with 1 stalled subscriber" if r.spec.stalled else "all subscribers reading"
        ax.plot(t, m, lw=2, ls="-" if r.spec.stalled else "--", label=f"{r.spec.label}: {what}")
    ax.set_xlabel("seconds since the schedule started")
    ax.set_ylabel("relay resident memory, MB")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9, loc="lower right")
    ax.set_title("Relay memory with a subscriber that stops reading\n(the lines overlap when the stalled reader costs nothing)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _placement_text(placement: Any) -> str:
    if isinstance(placement, dict):
        return f"servers on CPU {placement.get('server')}, load on CPU {placement.get('load')}"
    return str(placement or "none")


def write_markdown(
    path: Path,
    results: Sequence[RunResult],
    summary: dict[str, Any],
    machine: dict[str, Any],
    config: dict[str, Any],
    plots: Sequence[Path],
    notes: Sequence[str] = (),
) -> Path:
    lines = [
        "# warnshare relay benchmark",
        "",
        f"Run {machine.get('started_utc', '')} on {machine.get('nproc')} CPU(s) "
        f"({machine.get('cpu_model')}), Python {machine.get('python')}, "
        f"load average at start {machine.get('load_average')}, niceness {machine.get('niceness', 0)}, "
        f"CPU placement {_placement_text(machine.get('cpu_placement'))}; source {machine.get('source')}.",
        "",
        "Latency is node send (intended, open-loop schedule) to subscriber receive, same host clock, "
        "in milliseconds; every repeat of a point is merged into one histogram. `p99 runs` is the "
        "spread of the per-run p99; `behind` counts runs whose backlog grew or did not drain; "
        "`B/msg` is payload bytes a subscriber received per report delivered (the relay sends "
        "alerts, the baselines forward the report frames), `msg/frame` how many of them came "
        "in one WebSocket/TCP/NATS message (coalescing); `gen lag p99` is how late the load "
        "generator itself sent (already inside the latency).",
        "",
        "## Must show",
        "",
        summary_markdown(summary),
        "",
        "## All runs",
        "",
        markdown_table(results),
        "",
    ]
    for p in plots:
        lines += [f"![{p.stem}]({p.name})", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Configuration", "", "```", *(f"{k}: {v}" for k, v in config.items()), "```", ""]
    path.write_text("\n".join(lines))
    return path
