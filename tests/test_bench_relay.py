"""`warnshare bench relay`: histogram arithmetic, synthetic traffic, decoding, and tiny end-to-end
runs of every system (counts delivered, ordering, no loss) — never a timing threshold."""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import pytest

from warnshare.bench import cpus
from warnshare.bench import relay as bench_relay
from warnshare.bench.baselines import TcpFrameParser, nats_server_path, tcp_frame
from warnshare.bench.histogram import SUB_BUCKETS, LatencyHistogram, bucket_bounds, bucket_index
from warnshare.bench.loadgen import Decoder
from warnshare.bench.runner import RunResult, RunSpec, execute
from warnshare.bench.traffic import make_traffic, report_batch_frame, schedule_times
from warnshare.geo import ecef_to_geodetic
from warnshare.protocol import (
    NATIONS,
    Alert,
    AlertBatch,
    AlertKind,
    DataMode,
    Hops,
    Nation,
    ReportBatch,
    decode_node_message,
    encode,
)

# ------------------------------------------------------------------ histogram


def test_bucket_bounds_contain_their_values_with_bounded_relative_error() -> None:
    values = np.unique(np.concatenate([np.arange(0, 5000), np.geomspace(1, 1e12, 5000).astype(np.int64)]))
    idx = bucket_index(values)
    low, high = bucket_bounds(idx)
    assert np.all(low <= values) and np.all(values <= high)
    assert np.all(np.diff(idx) >= 0)  # monotonic: ordering of values is kept
    assert np.all((high - low) <= np.maximum(1, low // SUB_BUCKETS))


def test_percentiles_match_exact_order_statistics_within_precision() -> None:
    rng = np.random.default_rng(7)
    values = rng.lognormal(mean=14.0, sigma=1.2, size=20_000).astype(np.int64)  # ~1 ms scale, in ns
    h = LatencyHistogram()
    h.record_many(values)
    assert h.total == values.size
    assert h.max_ns == values.max() and h.min_ns == values.min()
    ordered = np.sort(values)
    for p in (50.0, 90.0, 99.0, 99.9):
        exact = ordered[math.ceil(values.size * p / 100) - 1]  # nearest rank
        got = h.value_at_percentile(p)
        assert exact <= got <= exact * (1 + 1 / SUB_BUCKETS) + 1, p
    assert h.percentiles()["max"] == values.max()


def test_percentile_of_a_tiny_known_set() -> None:
    h = LatencyHistogram()
    h.record_many([1, 2, 3, 4, 100])
    assert h.value_at_percentile(50) == 3
    assert h.value_at_percentile(80) == 4
    assert h.value_at_percentile(81) == 100
    assert h.value_at_percentile(100) == 100
    assert LatencyHistogram().value_at_percentile(99) == 0


def test_merge_equals_recording_everything_and_json_round_trips() -> None:
    rng = np.random.default_rng(3)
    a_vals, b_vals = rng.integers(1, 10**9, 500), rng.integers(10**6, 10**10, 700)
    a, b, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    a.record_many(a_vals)
    b.record_many(b_vals)
    both.record_many(np.concatenate([a_vals, b_vals]))
    merged = LatencyHistogram.merged([a, b])
    assert merged.percentiles() == both.percentiles()
    assert merged.total == 1200 and merged.min_ns == both.min_ns
    again = LatencyHistogram.from_dict(json.loads(json.dumps(merged.to_dict())))
    assert again.percentiles() == merged.percentiles()
    x, y = again.cdf()
    assert np.all(np.diff(x) > 0) and y[-1] == pytest.approx(1.0)


# ------------------------------------------------------------------ traffic


def test_schedule_is_constant_rate_interleaved_and_ascending() -> None:
    t0 = 10**18
    nodes = schedule_times(t0, rate_per_s=300.0, duration_s=2.0, nodes=3)
    assert [len(n) for n in nodes] == [200, 200, 200]
    merged = np.sort(np.concatenate(nodes))
    assert np.all(np.diff(merged) > 0)  # distinct intended times: (nation, time) names a report
    assert np.allclose(np.diff(merged), 1e9 / 300.0, atol=1)
    assert merged[0] == t0


def test_frames_are_protocol_reports_byte_for_byte_and_physically_plausible() -> None:
    start = time.time_ns()
    traffic = make_traffic(start, rate_per_s=600.0, duration_s=1.0, nodes=3, missiles=4)
    assert traffic.total == 600
    for node in traffic.nodes:
        frame = report_batch_frame(start, node.packed[:17])
        batch = decode_node_message(frame)
        assert isinstance(batch, ReportBatch)
        assert encode(batch) == frame
        assert [r.seq for r in batch.reports] == list(range(1, 18))
        assert {r.nation for r in batch.reports} == {node.nation}
        assert len({r.track_number for r in batch.reports}) == 4  # stable per missile
        for r, t in zip(batch.reports, node.intended_ns.tolist(), strict=False):
            assert r.measured_ns == r.time_of_validity_ns == t
            _, _, alt = ecef_to_geodetic(r.position_ecef_m)
            assert 50e3 < alt < 1000e3
            assert 1000 < float(np.linalg.norm(r.velocity_ecef_mps)) < 5000
    with pytest.raises(ValueError):
        report_batch_frame(start, [])


def test_tcp_frame_parser_splits_a_stream_at_any_cut() -> None:
    payloads = [b"a", b"", b"x" * 300, bytes(range(256))]
    stream = b"".join(tcp_frame(p) for p in payloads)
    for cut in range(len(stream)):
        parser = TcpFrameParser()
        assert parser.feed(stream[:cut]) + parser.feed(stream[cut:]) == payloads


def _alert(alert_id: int, nation: Nation, measured_ns: int, offset_ns: int, kind: AlertKind) -> Alert:
    hops = Hops(
        measured_ns=measured_ns - offset_ns,
        node_sent_ns=measured_ns - offset_ns,
        relay_received_ns=measured_ns,
        fused_ns=measured_ns,
        source_nation=nation,
        clock_offset_ns=offset_ns,
    )
    return Alert(
        alert_id=alert_id, event_id=1, kind=kind, issued_ns=measured_ns, nations=[nation],
        releasable_to=list(NATIONS), data_mode=DataMode.SIMULATED, hops=hops,
    )


def test_decoder_maps_relay_alerts_back_to_reports_undoing_the_clock_offset() -> None:
    traffic = make_traffic(time.time_ns(), rate_per_s=30.0, duration_s=1.0, nodes=3, missiles=2)
    dec = Decoder(traffic)
    jpn = traffic.nodes[1]
    t = jpn.intended_ns.tolist()
    alerts = [
        _alert(1, Nation.JPN, t[0], 0, AlertKind.LAUNCH_DETECTED),
        _alert(2, Nation.JPN, t[0], 0, AlertKind.TRACK_UPDATE),
        _alert(3, Nation.JPN, t[3], 12_345, AlertKind.TRACK_UPDATE),
    ]
    frame = encode(AlertBatch(relay_sent_ns=1, alerts=alerts, conflated=2))
    hits, conflated, sent_ns = dec.alert_batch(frame)
    base = len(traffic.nodes[0])
    fused = [a.hops.fused_ns for a in alerts]
    assert hits == ((base + 0, False, fused[0]), (base + 0, True, fused[1]), (base + 3, True, fused[2]))
    assert conflated == 2 and sent_ns == 1
    assert dec.fuzzy_matches == 0
    # a second subscriber's copy (another relay_sent_ns) gives the same answer, with its own time
    assert dec.alert_batch(encode(AlertBatch(relay_sent_ns=2, alerts=alerts, conflated=2))) == (hits, 2, 2)


def test_a_skewed_node_stamps_its_reports_with_its_clock_and_its_hops_are_read_back() -> None:
    skew = 5_000_000_000
    traffic = make_traffic(time.time_ns(), rate_per_s=30.0, duration_s=1.0, nodes=3, missiles=2, skew_ns=[skew])
    usa = traffic.nodes[0]
    batch = decode_node_message(report_batch_frame(1, usa.packed[:3]))
    assert [r.measured_ns for r in batch.reports] == [t + skew for t in usa.intended_ns.tolist()[:3]]
    other = decode_node_message(report_batch_frame(1, traffic.nodes[1].packed[:1]))
    assert other.reports[0].measured_ns == traffic.nodes[1].intended_ns[0]
    dec = Decoder(traffic)
    t = usa.intended_ns.tolist()
    estimate = skew + 40_000  # the relay's offset estimate, 40 us off the true skew
    # on the relay's clock: the node's times minus the estimate
    alert = _alert(1, Nation.USA, t[2] + skew, estimate, AlertKind.TRACK_UPDATE)
    hits, _, _ = dec.alert_batch(encode(AlertBatch(relay_sent_ns=1, alerts=[alert], conflated=0)))
    assert hits == ((2, True, alert.hops.fused_ns),)
    summary = dec.hop_summary()["USA"]
    assert summary["offset_error_p50_us"] == pytest.approx(40.0)
    assert summary["uplink_p50_ms"] == pytest.approx(estimate / 1e6)


def test_clock_skew_summary_compares_the_skewed_node_hops_with_synchronised_clocks() -> None:
    synced = _fake("rate100_subs10", "relay", 0, 1_000_000)
    synced.spec = RunSpec("rate100_subs10", "relay", 100.0, 10, 1.0, 0.1)
    skewed = _fake("clock_skew", "relay", 0, 1_000_000)
    skewed.spec = RunSpec("clock_skew", "relay", 100.0, 10, 1.0, 0.1, skew_s=5.0)
    hops = {"node_p50_ms": 0.1, "uplink_p50_ms": 0.3, "relay_p50_ms": 0.4,
            "offset_error_p50_us": 20.0, "offset_error_max_abs_us": 30.0}
    synced.hops = {"USA": dict(hops)}
    skewed.hops = {"USA": dict(hops, uplink_p50_ms=0.9)}
    sk = bench_relay.summarize([synced, skewed], ["relay"])["clock_skew"]
    assert sk["met"] and sk["max_abs_hop_p50_diff_ms"] == pytest.approx(0.6)
    skewed.hops = {"USA": dict(hops, uplink_p50_ms=1.4)}  # the offset estimate 1.1 ms off
    assert not bench_relay.summarize([synced, skewed], ["relay"])["clock_skew"]["met"]
    skewed.hops = {}
    assert not bench_relay.summarize([synced, skewed], ["relay"])["clock_skew"]["met"]


# ------------------------------------------------------------------ end to end


def _tiny(system: str, **kw: object) -> RunResult:
    spec = RunSpec(
        scenario="test", system=system, rate=kw.pop("rate", 150.0), subscribers=kw.pop("subscribers", 3),
        duration_s=0.6, warmup_s=0.2, missiles=2, drain_timeout_s=5.0, **kw,
    )
    return execute(spec)


def _assert_complete(res: RunResult) -> None:
    assert res.ok, res.error
    n = res.expected_per_subscriber
    assert n == 120  # 150/s for 0.8 s
    assert res.reports_sent == n
    assert res.delivered_min == n and res.lost == 0 and res.duplicates == 0
    assert res.drained
    # every delivery after the warm-up is one latency sample, on every healthy subscriber
    assert res.latency.total == res.subscribers_healthy * 90
    assert 0 < res.latency.value_at_percentile(50) <= res.latency.value_at_percentile(99) <= res.latency.max_ns
    assert res.server_peak_rss_bytes > 0


@pytest.mark.parametrize("system", ["tcp", "ws"])
def test_baseline_delivers_every_report_to_every_subscriber(system: str) -> None:
    _assert_complete(_tiny(system))


@pytest.mark.skipif(nats_server_path() is None, reason="nats-server is not installed")
def test_nats_baseline_delivers_every_report_to_every_subscriber() -> None:
    _assert_complete(_tiny("nats"))


def test_relay_turns_every_report_into_an_alert_for_every_subscriber() -> None:
    res = _tiny("relay")
    _assert_complete(res)
    assert res.acked == res.reports_sent  # the relay acknowledged every report
    assert res.time_requests > 0  # and the load generator answered its clock exchange
    assert res.lossless
    # the fan-out and downlink hops, read off the frames, add up to less than the whole path
    d = res.downlink
    assert 0 <= d["fanout_p50_ms"] <= d["fanout_p99_ms"] and 0 < d["downlink_p50_ms"] <= d["downlink_p99_ms"]
    assert d["fanout_p50_ms"] + d["downlink_p50_ms"] < res.latency.max_ns / 1e6


def test_a_stalled_subscriber_receives_nothing_and_the_others_everything() -> None:
    res = _tiny("tcp", subscribers=3, stalled=1)
    assert res.ok, res.error
    assert res.subscribers_healthy == 2
    assert res.delivered_min == res.expected_per_subscriber and res.lost == 0
    assert res.stalled_delivered == [0]


# ------------------------------------------------------------------ planning and summary


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench_relay.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_plan_repeats_the_must_show_points_and_adds_only_new_sweep_points() -> None:
    specs = bench_relay.plan(_args("--repeats", "2", "--no-stall"), ["relay", "tcp"])
    must = [s for s in specs if s.scenario.startswith("rate")]
    assert len(must) == 2 * 2 * 2
    keys = [(s.system, s.rate, s.subscribers) for s in specs if s.scenario == "sweep"]
    assert len(keys) == len(set(keys))
    assert ("relay", 1000.0, 100) not in keys and ("relay", 3000.0, 10) in keys
    quick = bench_relay.plan(_args("--quick"), ["relay", "tcp"])
    assert {s.scenario for s in quick} == {"rate1000_subs100", "rate100_subs10", "stall", "clock_skew"}
    (skewed,) = [s for s in quick if s.scenario == "clock_skew"]
    assert skewed.system == "relay" and skewed.skew_s == 5.0 and (skewed.rate, skewed.subscribers) == (100.0, 10)
    assert not any(s.scenario == "clock_skew" for s in bench_relay.plan(_args("--quick", "--no-skew"), ["relay"]))


def _fake(scenario: str, system: str, repeat: int, p99_ns: int, **kw: object) -> RunResult:
    spec = RunSpec(scenario, system, 1000.0, 10, 1.0, 0.1, repeat=repeat, stalled=kw.pop("stalled", 0))
    r = RunResult(spec=spec, expected_per_subscriber=10, reports_sent=10, acked=10, drained=True)
    r.latency.record_many([p99_ns // 2] * 99 + [p99_ns])
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_summary_ratios_pair_runs_by_repeat_and_judge_the_worst() -> None:
    results = []
    for rep, (relay, tcp, ws) in enumerate([(2_000_000, 1_000_000, 9_000_000), (5_000_000, 1_000_000, 9_000_000)]):
        results += [
            _fake("rate1000_subs100", "relay", rep, relay),
            _fake("rate1000_subs100", "tcp", rep, tcp),
            _fake("rate1000_subs100", "ws", rep, ws),
        ]
    s = bench_relay.summarize(results, ["relay", "tcp", "ws"])["rate1000_subs100"]
    # p99s are read off the histogram, good to 1/128
    assert s["ratio_to_tcp_runs"] == pytest.approx([2.0, 5.0], rel=0.01)
    assert s["ratio_to_tcp"] == pytest.approx(3.5, rel=0.01)
    assert s["ratio_to_tcp_worst"] == pytest.approx(5.0, rel=0.01)
    assert s["met_tcp"] is False and s["met_ws"] is True
    assert s["ratio_to_nats"] is None


def test_summary_fails_a_lossy_relay_run_whatever_its_latency() -> None:
    results = [
        _fake("rate100_subs10", "relay", 0, 1_000_000, lost=3),
        _fake("rate100_subs10", "tcp", 0, 1_000_000),
    ]
    s = bench_relay.summarize(results, ["relay", "tcp"])
    assert s["rate100_subs10"]["ratio_to_tcp"] == pytest.approx(1.0)
    assert s["rate100_subs10"]["met"] is False
    assert s["repeats"]["relay_runs_lossy"] == 1 and s["repeats"]["met"] is False


def test_stall_summary_compares_with_and_without() -> None:
    without = _fake("stall", "relay", 0, 2_000_000, server_peak_rss_bytes=100 << 20)
    with_ = _fake("stall", "relay", 0, 2_600_000, stalled=1, server_peak_rss_bytes=(100 << 20) + (4 << 20))
    st = bench_relay.summarize([without, with_], ["relay"])["stalled_subscriber"]
    assert st["p99_ratio"] == pytest.approx(1.3, rel=0.02)
    assert st["rss_bounded"] is True and st["met"] is True


def test_cli_writes_json_summary_markdown_and_plots(tmp_path, capsys) -> None:
    args = _args(
        "--systems", "tcp,ws", "--duration", "0.3", "--warmup", "0.1", "--repeats", "1",
        "--no-sweeps", "--no-stall", "--no-saturation", "--no-progress",
        "--json", str(tmp_path / "r.json"), "--out", str(tmp_path / "out"),
    )
    assert bench_relay.run(args) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert {"machine", "config", "summary", "runs"} <= set(data)
    assert len(data["runs"]) == 4 and all(r["lossless"] for r in data["runs"])
    assert (tmp_path / "out" / "REPORT.md").read_text().startswith("# warnshare relay benchmark")
    assert (tmp_path / "out" / "latency_cdf.png").stat().st_size > 0
    table = capsys.readouterr().out
    assert "rate1000_subs100" in table and "tcp" in table


def test_profile_summary_shares_inclusive_and_self_samples() -> None:
    from warnshare.bench.profile import summarize_collapsed

    lines = [
        "main (x.py:1);ingest (warnshare/relay/app.py:10);fuse (warnshare/fusion/engine.py:5) 6",
        "main (x.py:1);writer (warnshare/relay/hub.py:3) 4",
        "garbage line",
    ]
    text = summarize_collapsed(lines)
    assert text.startswith("10 samples")
    inclusive, self_part = text.split("self")
    assert "60.0%  ingest (warnshare/relay/app.py:10)" in inclusive
    assert "main (x.py:1)" not in inclusive  # in every sample: says nothing
    assert "40.0%  writer (warnshare/relay/hub.py:3)" in self_part
    assert summarize_collapsed([]) == "no samples\n"


def test_summary_survives_failed_runs() -> None:
    failed = _fake("rate1000_subs100", "relay", 0, 1_000_000)
    failed.ok, failed.error = False, "RuntimeError: boom"
    failed.latency = LatencyHistogram()
    results = [failed, _fake("rate1000_subs100", "tcp", 0, 1_000_000), _fake("rate1000_subs100", "ws", 0, 1_000_000)]
    s = bench_relay.summarize(results, ["relay", "tcp", "ws"])
    assert s["rate1000_subs100"]["relay_p99_ms"] is None and s["rate1000_subs100"]["met"] is False
    assert s["repeats"]["runs_meeting_ratio_targets"] == 0 and s["repeats"]["relay_runs_failed"] == 1


def test_saturation_ramp_stops_at_the_first_failure_and_searches_down_below_the_ramp() -> None:
    def fake_runner(spec: RunSpec, host: str, progress: object) -> RunResult:
        r = _fake(spec.scenario, spec.system, 0, 1_000_000)
        r.spec = spec
        r.offered_rate = spec.rate
        r.fell_behind = spec.scenario == "saturation" and spec.rate > capacity
        return r

    base = ("--systems", "relay", "--no-sweeps", "--no-stall", "--repeats", "1", "--no-progress")
    capacity = 12_000.0
    got = bench_relay.run_all(_args(*base), ["relay"], runner=fake_runner)
    sat = [r.spec.rate for r in got if r.spec.scenario == "saturation"]
    assert sat == [2000.0, 5000.0, 10000.0, 12500.0]
    assert bench_relay.summarize(got, ["relay"])["saturation"]["rate_per_s"] == 10000.0
    capacity = 600.0
    got = bench_relay.run_all(_args(*base), ["relay"], runner=fake_runner)
    sat = [r.spec.rate for r in got if r.spec.scenario == "saturation"]
    assert sat == [2000.0, 1000.0, 500.0]
    summary = bench_relay.summarize(got, ["relay"])["saturation"]
    assert summary["rate_per_s"] == 500.0 and summary["met"] is False


# ------------------------------------------------------------------ CPU placement


def test_placement_gives_the_server_one_core_and_the_load_the_rest() -> None:
    assert cpus.placement([0, 1]) == ((1,), (0,))
    assert cpus.placement([3, 0, 2, 5]) == ((5,), (0, 2, 3))
    assert cpus.placement([0]) == ((), ())  # one core: nothing to separate
    assert cpus.placement([]) == ((), ())


def _both_cores() -> tuple[int, int]:
    allowed = cpus.available_cpus()
    if len(allowed) < 2:
        pytest.skip("needs two cores")
    return allowed[-1], allowed[0]


def test_pinned_self_moves_every_thread_and_restores_each_one() -> None:
    import os
    import threading

    _, load = _both_cores()
    before = os.sched_getaffinity(0)
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, args=(10.0,), daemon=True)
    t.start()
    try:
        with cpus.pinned_self([load]):
            assert os.sched_getaffinity(0) == {load}
            assert os.sched_getaffinity(t.native_id) == {load}  # a thread started before
        assert os.sched_getaffinity(0) == before and os.sched_getaffinity(t.native_id) == before
    finally:
        stop.set()
        t.join(5.0)


@pytest.mark.parametrize("system", ["tcp", pytest.param("nats", marks=pytest.mark.skipif(
    nats_server_path() is None, reason="nats-server is not installed"))])
def test_a_pinned_server_runs_every_thread_on_its_core(system: str) -> None:
    import os

    from warnshare.bench.servers import ServerProcess

    server_cpu, _ = _both_cores()
    with ServerProcess(system, cpus=(server_cpu,)) as server:
        assert server.proc is not None
        tids = [int(t) for t in os.listdir(f"/proc/{server.proc.pid}/task")]
        assert tids and all(os.sched_getaffinity(t) == {server_cpu} for t in tids)


def test_a_pinned_run_delivers_everything_and_the_plan_pins_every_run_alike() -> None:
    server_cpu, load_cpu = _both_cores()
    _assert_complete(_tiny("relay", server_cpus=(server_cpu,), load_cpus=(load_cpu,)))
    specs = bench_relay.plan(_args("--quick", "--pin"), ["relay", "tcp", "ws"])
    assert {(s.server_cpus, s.load_cpus) for s in specs} == {cpus.placement()}
    unpinned = bench_relay.plan(_args("--quick", "--no-pin"), ["relay", "tcp"])
    assert {(s.server_cpus, s.load_cpus) for s in unpinned} == {((), ())}


def test_a_saturation_step_passes_only_if_every_run_of_it_does() -> None:
    runs: list[tuple[float, int]] = []

    def flaky_runner(spec: RunSpec, host: str, progress: object) -> RunResult:
        r = _fake(spec.scenario, spec.system, 0, 1_000_000)
        r.spec = spec
        r.offered_rate = spec.rate
        if spec.scenario == "saturation":
            runs.append((spec.rate, spec.repeat))
            # 10,000/s holds in its first run and falls behind in its second
            r.fell_behind = spec.rate > 10_000.0 or (spec.rate == 10_000.0 and spec.repeat == 1)
        return r

    base = ("--systems", "relay", "--no-sweeps", "--no-stall", "--repeats", "1", "--no-progress")
    got = bench_relay.run_all(_args(*base, "--saturation-repeats", "3"), ["relay"], runner=flaky_runner)
    # every run of the passing steps; the failing step stops at its first failing run
    assert runs == [(2000.0, 0), (2000.0, 1), (2000.0, 2), (5000.0, 0), (5000.0, 1), (5000.0, 2),
                    (10000.0, 0), (10000.0, 1)]
    summary = bench_relay.summarize(got, ["relay"])["saturation"]
    assert summary["rate_per_s"] == 5000.0 and summary["runs_per_step"] == 3
    assert summary["ceiling_found"] is True
    assert [s["passed"] for s in summary["steps"] if s["rate_per_s"] == 10000.0] == [True, False]


def test_a_journaled_relay_run_delivers_everything_and_journals_every_report(monkeypatch) -> None:
    import shutil
    from pathlib import Path
    from types import SimpleNamespace

    from warnshare.bench import runner
    from warnshare.relay.journal import Journal

    kept: list[str] = []
    # the run's journal is removed after it: kept here instead, to be read
    monkeypatch.setattr(runner, "shutil", SimpleNamespace(rmtree=lambda path, **kw: kept.append(path)))
    try:
        res = _tiny("relay", journal=True)
        _assert_complete(res)
        assert res.acked == res.reports_sent and res.spec.label.endswith("+journal")
        # the run's relay journaled every report it acknowledged, in a journal of its own
        (journal_dir,) = kept
        journal = Journal(Path(journal_dir) / "relay.sqlite3")
        seqs = journal.db.execute("SELECT sum(last_seq - first_seq + 1) FROM inputs WHERE kind = 'batch'")
        assert seqs.fetchone()[0] == res.reports_sent
        journal.close()
        _tiny("tcp", journal=True)  # a baseline keeps no journal
        assert len(kept) == 1
    finally:
        for path in kept:
            shutil.rmtree(path, ignore_errors=True)
    specs = bench_relay.plan(_args("--quick", "--journal"), ["relay", "tcp"])
    assert all(s.journal for s in specs) and {s.journaled for s in specs} == {True, False}
    assert not any(s.journal for s in bench_relay.plan(_args("--quick"), ["relay"]))
