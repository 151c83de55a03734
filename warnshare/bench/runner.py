"""One benchmark run: start the system in its own process, play the load, reduce to figures.

``execute(spec)`` returns a ``RunResult`` whatever happens (an error is recorded, not raised),
so a sweep always finishes and reports what it could measure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from warnshare.bench.cpus import pinned_self
from warnshare.bench.histogram import LatencyHistogram
from warnshare.bench.loadgen import LoadResult, run_load
from warnshare.bench.profile import start_py_spy, summarize_collapsed
from warnshare.bench.servers import ServerProcess
from warnshare.bench.traffic import Traffic, make_traffic

#: Time between the connections being open and the schedule's start: building the schedule
#: takes about 7 us per report.
LEAD_BASE_S = 0.25
LEAD_PER_REPORT_S = 12e-6
#: A run "fell behind" when its last fifth's median latency exceeds its first fifth's by this
#: factor and this margin (a backlog that grows), when that median is above BEHIND_STANDING_NS
#: (a backlog that stays), or when delivery did not complete.
BEHIND_FACTOR = 2.0
BEHIND_MARGIN_NS = 20_000_000
BEHIND_STANDING_NS = 200_000_000


@dataclass(frozen=True)
class RunSpec:
    scenario: str
    system: str
    rate: float
    subscribers: int
    duration_s: float
    warmup_s: float
    repeat: int = 0
    stalled: int = 0
    nodes: int = 3
    missiles: int = 8
    seed: int = 1
    drain_timeout_s: float = 10.0
    #: The first node's clock is this far ahead of the host's (s): it stamps its reports and
    #: answers the relay's clock exchange with it.
    skew_s: float = 0.0
    #: CPU placement (cpus.py): the server's cores and the load's; empty, the scheduler decides.
    server_cpus: tuple[int, ...] = ()
    load_cpus: tuple[int, ...] = ()
    #: The relay journals every batch (a fresh SQLite journal per run), as it is deployed;
    #: no effect on the baselines.
    journal: bool = False

    @property
    def journaled(self) -> bool:
        return self.journal and self.system == "relay"

    @property
    def label(self) -> str:
        stall = f" +{self.stalled} stalled" if self.stalled else ""
        skew = f" node clock {self.skew_s:+g} s" if self.skew_s else ""
        journal = " +journal" if self.journaled else ""
        return f"{self.system} {self.rate:g}/s x{self.subscribers}{journal}{stall}{skew}"

    @property
    def skew_ns(self) -> tuple[int, ...]:
        return (int(self.skew_s * 1e9),) if self.skew_s else ()


@dataclass
class RunResult:
    spec: RunSpec
    ok: bool = True
    error: str = ""
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    send_lag: LatencyHistogram = field(default_factory=LatencyHistogram)
    warmup_latency: LatencyHistogram = field(default_factory=LatencyHistogram)  # cold start
    reports_sent: int = 0
    frames_sent: int = 0
    acked: int = 0
    subscribers_healthy: int = 0
    delivered_min: int = 0
    delivered_total: int = 0
    expected_per_subscriber: int = 0
    lost: int = 0  # (report, healthy subscriber) pairs never delivered
    duplicates: int = 0
    conflated: int = 0
    stalled_delivered: list[int] = field(default_factory=list)
    stalled_close_codes: list[int | None] = field(default_factory=list)
    offered_rate: float = 0.0
    delivered_rate: float = 0.0  # messages per second summed over healthy subscribers
    drained: bool = False
    drain_s: float = 0.0
    head_p50_ns: int = 0
    tail_p50_ns: int = 0
    fell_behind: bool = False
    server_cpu_percent: float = 0.0
    server_peak_rss_bytes: int = 0
    server_rss_samples: list[tuple[float, int]] = field(default_factory=list)
    load_cpu_percent: float = 0.0
    load_average: float = 0.0
    time_requests: int = 0
    publisher_errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    bytes_per_message: float = 0.0  # payload bytes received per delivered report, per subscriber
    messages_per_frame: float = 0.0  # deliveries per WebSocket/TCP/NATS message received
    profile: str = ""  # path of the py-spy summary, when the run was profiled
    #: Per source nation, the hops read off the relay's alerts (``Decoder.hop_summary``).
    hops: dict[str, dict[str, float]] = field(default_factory=dict)
    #: The relay's fan-out and downlink hops (``loadgen.downlink_hops``).
    downlink: dict[str, float] = field(default_factory=dict)

    @property
    def percentiles_ms(self) -> dict[str, float]:
        return {k: v / 1e6 for k, v in self.latency.percentiles().items()}

    @property
    def p99_ms(self) -> float:
        return self.latency.value_at_percentile(99.0) / 1e6

    @property
    def lossless(self) -> bool:
        return self.ok and self.lost == 0 and self.conflated == 0 and (
            self.spec.system != "relay" or self.acked == self.reports_sent
        )

    @property
    def rss_growth_bytes(self) -> int:
        """Peak RSS in the last half of the run minus the peak in the first half."""
        s = self.server_rss_samples
        if len(s) < 4:
            return 0
        half = s[-1][0] / 2
        first = max(r for t, r in s if t <= half)
        last = max(r for t, r in s if t > half)
        return last - first

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items()
               if k not in ("latency", "send_lag", "warmup_latency", "spec")}
        out["spec"] = asdict(self.spec)
        out["latency_ms"] = {k: round(v, 4) for k, v in self.percentiles_ms.items()}
        out["latency_histogram"] = self.latency.to_dict()
        out["send_lag_ms"] = {k: round(v / 1e6, 4) for k, v in self.send_lag.percentiles().items()}
        out["warmup_latency_ms"] = {k: round(v / 1e6, 4) for k, v in self.warmup_latency.percentiles().items()}
        out["lossless"] = self.lossless
        out["rss_growth_bytes"] = self.rss_growth_bytes
        out["server_rss_samples"] = [(round(t, 2), r) for t, r in self.server_rss_samples]
        return out


def _install_uvloop_runner() -> Callable[[Any], Any]:
    try:
        import uvloop

        return uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run


def _reduce(spec: RunSpec, load: LoadResult, res: RunResult) -> None:
    healthy = load.healthy
    hists = []
    head, tail = [], []
    for r in healthy:
        s = np.frombuffer(r.samples, dtype=np.int64) if len(r.samples) else np.zeros(0, np.int64)
        h = LatencyHistogram()
        h.record_many(s)
        hists.append(h)
        k = s.size // 5
        if k:
            head.append(s[:k])
            tail.append(s[-k:])
    res.latency = LatencyHistogram.merged(hists)
    for r in healthy:
        res.warmup_latency.record_many(np.frombuffer(r.warmup_samples, dtype=np.int64))
    res.send_lag.record_many(np.frombuffer(load.send_lag_ns, dtype=np.int64))
    res.reports_sent = load.sends
    res.frames_sent = load.frames_sent
    res.acked = load.acked
    res.subscribers_healthy = len(healthy)
    res.expected_per_subscriber = load.total_reports
    res.delivered_min = min((r.delivered for r in healthy), default=0)
    res.delivered_total = sum(r.delivered for r in healthy)
    res.lost = load.total_reports * len(healthy) - res.delivered_total
    res.duplicates = sum(r.duplicates for r in healthy)
    res.conflated = sum(r.conflated for r in healthy)
    res.stalled_delivered = [r.delivered for r in load.stalled]
    res.stalled_close_codes = [r.closed_code for r in load.stalled]
    span = (load.last_send_ns - load.first_send_ns) / 1e9
    res.offered_rate = (load.sends - 1) / span if span > 0 else 0.0
    last_recv = max((r.last_recv_ns for r in healthy), default=0)
    window = (last_recv - load.start_ns) / 1e9
    res.delivered_rate = res.delivered_total / window if window > 0 else 0.0
    res.drained = load.drained
    res.drain_s = load.drain_s
    res.time_requests = load.time_requests
    res.hops = load.hops
    res.downlink = load.downlink
    res.publisher_errors = load.publisher_errors[:10]
    if head:
        res.head_p50_ns = int(np.median(np.concatenate(head)))
        res.tail_p50_ns = int(np.median(np.concatenate(tail)))
    growing = res.tail_p50_ns > max(BEHIND_FACTOR * res.head_p50_ns, res.head_p50_ns + BEHIND_MARGIN_NS)
    res.fell_behind = growing or res.tail_p50_ns > BEHIND_STANDING_NS or not load.drained


def execute(
    spec: RunSpec,
    host: str = "127.0.0.1",
    progress: Callable[[float], None] | None = None,
    profile_to: Path | None = None,
) -> RunResult:
    """Run one spec against a fresh server process; never raises for a failed run.

    With ``profile_to``, py-spy samples the server through the schedule and a summary of
    where it spent its time is written there (the raw stacks next to it). With the spec's CPU
    placement, this process (the load) runs on ``load_cpus`` for the run, the server on
    ``server_cpus``.
    """
    with pinned_self(spec.load_cpus):
        return _execute(spec, host, progress, profile_to)


def _execute(
    spec: RunSpec, host: str, progress: Callable[[float], None] | None, profile_to: Path | None
) -> RunResult:
    res = RunResult(spec=spec)
    t_wall = time.monotonic()
    with contextlib.suppress(OSError):
        res.load_average = round(os.getloadavg()[0], 2)
    journal_dir = tempfile.mkdtemp(prefix="warnshare-bench-journal-") if spec.journaled else None
    server = ServerProcess(spec.system, host=host, cpus=spec.server_cpus,
                           journal_path=journal_dir and os.path.join(journal_dir, "relay.sqlite3"))
    try:
        server.start()
        n_reports = int(spec.rate * (spec.duration_s + spec.warmup_s))

        def traffic_at(start_ns: int) -> Traffic:
            return make_traffic(
                start_ns, spec.rate, spec.duration_s + spec.warmup_s, spec.nodes, spec.missiles, spec.seed,
                skew_ns=spec.skew_ns,
            )

        spy: list[subprocess.Popen[bytes]] = []

        def started() -> None:
            server.begin_measure()
            if profile_to is not None and server.proc is not None:
                spy.append(start_py_spy(server.proc.pid, spec.duration_s + spec.warmup_s,
                                        profile_to.with_suffix(".raw")))

        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        load = _install_uvloop_runner()(
            run_load(
                spec.system,
                host,
                server.port,
                traffic_at,
                spec.subscribers,
                stalled=spec.stalled,
                warmup_s=spec.warmup_s,
                drain_timeout_s=spec.drain_timeout_s,
                progress=progress,
                on_started=started,
                lead_s=LEAD_BASE_S + LEAD_PER_REPORT_S * n_reports,
                nodes=spec.nodes,
                skew_ns=spec.skew_ns,
            )
        )
        use = server.end_measure()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        busy = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        res.load_cpu_percent = 100.0 * busy / max(1e-9, time.monotonic() - t0)
        res.server_cpu_percent = use.cpu_percent
        res.server_peak_rss_bytes = use.peak_rss_bytes
        res.server_rss_samples = use.rss_samples
        _reduce(spec, load, res)
        res.bytes_per_message = sum(r.bytes for r in load.healthy) / max(1, res.delivered_total)
        res.messages_per_frame = res.delivered_total / max(1, sum(r.frames for r in load.healthy))
        if spy and profile_to is not None:
            spy[0].wait(timeout=30)
            raw = profile_to.with_suffix(".raw")
            if raw.exists():
                header = f"py-spy profile of {spec.label} ({spec.scenario}), {spec.duration_s + spec.warmup_s:g} s\n"
                profile_to.write_text(header + summarize_collapsed(raw.read_text().splitlines()))
                res.profile = str(profile_to)
    except Exception as exc:  # a failed run is a result, not the end of the benchmark
        res.ok = False
        res.error = f"{type(exc).__name__}: {exc}"
    finally:
        server.stop()
        if journal_dir:
            shutil.rmtree(journal_dir, ignore_errors=True)
    res.wall_s = time.monotonic() - t_wall
    return res
