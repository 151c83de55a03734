"""The reliability figures for docs/RELIABILITY.md: ``python -m warnshare.bench.reliability``.

1. Backpressure: the relay (its own process) under a steady open-loop load with ten subscribers,
   with and without one of them stalled at the TCP level; healthy subscribers' p99 latency, the
   ratio of the two, alerts lost at healthy subscribers, the stalled one's close code, and the
   relay's RSS over the run. Runs alternate (without, with) ``--repeats`` times; the ratio is
   of the medians, so a noisy neighbour on a shared machine shows up in both.
2. Trust: a relay with a trust store is sent forged, spoofed and replayed hellos and batches;
   the count of those it accepted (must be 0) and the count of genuine reports it accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import websockets
from nacl.signing import SigningKey

from warnshare.auth import NodeKey, init_keys
from warnshare.bench.runner import RunResult, RunSpec, execute
from warnshare.node import NodePublisher
from warnshare.protocol import (
    NATIONS,
    FlightPhase,
    Nation,
    ReportBatch,
    SignedBatch,
    TrackReport,
    decode_relay_to_node,
    encode,
    unpack,
)

RATIO_TARGET = 1.2


# ---------------------------------------------------------------------------- backpressure


def stall_pairs(rate: float, subscribers: int, duration_s: float, repeats: int, concurrent: bool) -> list[tuple[RunResult, RunResult]]:
    """(without, with) a stalled subscriber, ``repeats`` times. Concurrent: both relays (each in
    its own process, with its own load) run at the same time, so whatever else the machine is
    doing weighs on both alike; otherwise one after the other."""
    pairs = []
    for k in range(repeats):
        specs = [RunSpec("stall", "relay", rate, subscribers, duration_s, warmup_s=1.0, repeat=k, stalled=stalled,
                         drain_timeout_s=max(10.0, 2 * duration_s)) for stalled in (0, 1)]
        if concurrent:
            with ThreadPoolExecutor(2) as pool:
                runs = list(pool.map(execute, specs))
        else:
            runs = [execute(spec) for spec in specs]
        for spec, res in zip(specs, runs, strict=True):
            print(f"  {spec.label} #{k}: ok={res.ok} p99 {res.p99_ms:.2f} ms, lost {res.lost}, conflated {res.conflated}, "
                  f"peak RSS {res.server_peak_rss_bytes / 1e6:.0f} MB, stalled close {res.stalled_close_codes} {res.error}",
                  flush=True)
        pairs.append((runs[0], runs[1]))
    return pairs


def stall_summary(pairs: list[tuple[RunResult, RunResult]]) -> dict[str, Any]:
    without = [a.p99_ms for a, _ in pairs if a.ok and a.delivered_total]
    with_ = [b.p99_ms for _, b in pairs if b.ok and b.delivered_total]
    p_wo = statistics.median(without) if without else float("nan")
    p_w = statistics.median(with_) if with_ else float("nan")
    paired = [b.p99_ms / a.p99_ms for a, b in pairs if a.ok and b.ok and a.delivered_total and b.delivered_total]
    runs = [r for pair in pairs for r in pair]
    return {
        "healthy_p99_ms_without_stall": round(p_wo, 3),
        "healthy_p99_ms_with_stall": round(p_w, 3),
        "p99_ms_runs_without": [round(x, 3) for x in without],
        "p99_ms_runs_with": [round(x, 3) for x in with_],
        "ratio": round(p_w / p_wo, 3) if without and with_ else None,
        "paired_ratios": [round(x, 3) for x in paired],
        "median_paired_ratio": round(statistics.median(paired), 3) if paired else None,
        "ratio_target": RATIO_TARGET,
        "alerts_lost_at_healthy_subscribers": sum(r.lost for r in runs),
        "conflated_at_healthy_subscribers": sum(r.conflated for r in runs),
        "reports_sent": sum(r.reports_sent for r in runs),
        "reports_acked": sum(r.acked for r in runs),
        "stalled_close_codes": [c for _, b in pairs for c in b.stalled_close_codes],
        "stalled_delivered": [d for _, b in pairs for d in b.stalled_delivered],
        "relay_peak_rss_mb": {"without": [round(a.server_peak_rss_bytes / 1e6, 1) for a, _ in pairs],
                              "with": [round(b.server_peak_rss_bytes / 1e6, 1) for _, b in pairs]},
        "relay_rss_growth_mb_with_stall": [round(b.rss_growth_bytes / 1e6, 2) for _, b in pairs],
        "errors": [r.error for r in runs if r.error],
    }


# ----------------------------------------------------------------------------------- trust


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _report(seq: int, nation: Nation, t_ns: int) -> TrackReport:
    return TrackReport(
        seq=seq, nation=nation, track_number=7, time_of_validity_ns=t_ns, measured_ns=t_ns,
        position_ecef_m=[-3_100_000.0 + 1000 * seq, 4_000_000.0, 3_990_000.0 + 800 * seq],
        velocity_ecef_mps=[1000.0, -300.0, 800.0], covariance=[1e5 if i in (0, 6, 11) else (400.0 if i in (15, 18, 20) else 0.0) for i in range(21)],
        track_quality=10, flight_phase=FlightPhase.MIDCOURSE, releasable_to=list(NATIONS),
    )


async def _attempt(url: str, frames: list[bytes]) -> tuple[bool, int | None]:
    """Send frames on a fresh connection; (welcomed, acked seq or None when no ack came)."""
    welcomed, acked = False, None
    try:
        async with websockets.connect(f"{url}/v1/ingest", compression=None, open_timeout=10) as ws:
            for f in frames:
                await ws.send(f)
            for _ in range(50):
                msg = decode_relay_to_node(await asyncio.wait_for(ws.recv(), 3))
                if msg.type == "welcome":
                    welcomed = True
                    if len(frames) == 1:
                        break
                elif msg.type == "ack":
                    acked = msg.acked_seq
                    break
                elif msg.type == "error":
                    break
    except (websockets.ConnectionClosed, TimeoutError):
        pass
    return welcomed, acked


async def _trust_trial(url: str, keys: Path, rounds: int) -> dict[str, Any]:
    key = {n: NodeKey.load(keys / f"{n.value.lower()}.key") for n in NATIONS}
    forged = replayed = accepted_bad = 0
    genuine = 0
    for k in range(rounds):
        node_id = f"kor-trust-{k}"
        good = NodePublisher(url, Nation.KOR, node_id, key=key[Nation.KOR])
        # a genuine hello and batch, kept for replaying
        hello = encode(good._hello())
        batch = good._batch_frame(ReportBatch(sent_ns=time.time_ns(), reports=[_report(1, Nation.KOR, time.time_ns())]))
        ok, acked = await _attempt(url, [hello, batch])
        genuine += acked or 0
        # forgeries: a rogue key under a trusted key id; JPN's key speaking for KOR; a tampered payload
        rogue = NodePublisher(url, Nation.KOR, node_id, key=NodeKey(Nation.KOR, SigningKey.generate()))
        h = rogue._hello()
        h = h.model_copy(update={"auth": h.auth.model_copy(update={"key_id": key[Nation.KOR].key_id})})
        spoof = NodePublisher(url, Nation.JPN, node_id, key=key[Nation.JPN])
        spoof.nation = Nation.KOR
        frame = SignedBatch.model_validate(unpack(good._batch_frame(ReportBatch(sent_ns=time.time_ns(), reports=[_report(2, Nation.KOR, time.time_ns())]))))
        tampered = encode(frame.model_copy(update={"payload": encode(ReportBatch(sent_ns=time.time_ns(), reports=[_report(2, Nation.KOR, time.time_ns() + 1)]))}))
        unsigned = NodePublisher(url, Nation.KOR, node_id)
        for frames, wants_welcome in (([encode(h)], True), ([encode(spoof._hello())], True), ([encode(unsigned._hello())], True),
                                      ([encode(good._hello()), tampered], False)):
            forged += 1
            ok, acked = await _attempt(url, frames)
            accepted_bad += int(ok if wants_welcome else acked is not None)
        # replays: the captured hello again (same nonce), the captured batch on a new session,
        # a hello signed two minutes ago
        stale = NodePublisher(url, Nation.KOR, node_id, key=key[Nation.KOR], clock=lambda: time.time_ns() - 120_000_000_000)
        for frames, wants_welcome in (([hello], True), ([encode(good._hello()), batch], False), ([encode(stale._hello())], True)):
            replayed += 1
            ok, acked = await _attempt(url, frames)
            accepted_bad += int(ok if wants_welcome else acked is not None)
    async with httpx.AsyncClient(base_url=url.replace("ws://", "http://")) as http:
        nodes = (await http.get("/v1/nodes")).json()
        metrics = (await http.get("/metrics")).text
    held = sum(n["reports_accepted"] for n in nodes)
    rejected = {line.split('"')[1]: float(line.split()[-1]) for line in metrics.splitlines()
                if line.startswith("warnshare_frames_rejected_total{")}
    return {
        "forged_attempts": forged,
        "replayed_attempts": replayed,
        "forged_or_replayed_accepted": accepted_bad,
        "genuine_reports_sent": rounds,
        "genuine_reports_accepted": genuine,
        "reports_the_relay_holds": held,
        "rejected_by_code": rejected,
    }


def trust_trial(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        init_keys(tmp)
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "warnshare.cli", "relay", "--port", str(port), "--journal", "none",
             "--trust-store", str(Path(tmp) / "trust.json"), "--log-level", "error"],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the relay did not start")
                time.sleep(0.05)
            return asyncio.run(_trust_trial(f"ws://127.0.0.1:{port}", Path(tmp), rounds))
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


# ------------------------------------------------------------------------------------ main


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}", "load_average_at_start": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m warnshare.bench.reliability", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0, help="reports/s offered by three nodes")
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trust-rounds", type=int, default=20)
    parser.add_argument("--sequential", action="store_true", help="run each pair one after the other, not side by side")
    parser.add_argument("--out", default="", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    started = time.time()
    out: dict[str, Any] = {"machine": machine(), "settings": vars(args)}
    print(f"backpressure: {args.rate:g} reports/s, {args.subscribers} subscribers, {args.repeats} x (without, with) a stalled one", flush=True)
    out["backpressure"] = stall_summary(stall_pairs(args.rate, args.subscribers, args.duration, args.repeats, not args.sequential))
    print(f"trust: {args.trust_rounds} rounds of forged and replayed hellos and batches", flush=True)
    out["trust"] = trust_trial(args.trust_rounds)
    out["wall_s"] = round(time.time() - started, 1)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    bp, tr = out["backpressure"], out["trust"]
    # side by side, each pair shares the machine's moment: judge the median of the pairs' ratios
    ratio = bp["ratio"] if args.sequential else bp["median_paired_ratio"]
    good = (ratio is not None and ratio <= RATIO_TARGET and bp["alerts_lost_at_healthy_subscribers"] == 0
            and tr["forged_or_replayed_accepted"] == 0)
    print(f"\nhealthy p99 {bp['healthy_p99_ms_without_stall']} ms -> {bp['healthy_p99_ms_with_stall']} ms with a stalled "
          f"subscriber (medians); ratio {ratio} (target <= {RATIO_TARGET}); alerts lost {bp['alerts_lost_at_healthy_subscribers']}; "
          f"forged/replayed accepted {tr['forged_or_replayed_accepted']} of {tr['forged_attempts'] + tr['replayed_attempts']}")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
