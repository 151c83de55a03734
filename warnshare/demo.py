"""`warnshare demo`: a relay, the three national nodes and a subscriber, in one command.

Each part runs as its own process, as it would in the field (the subscriber is this process);
the scenario plays faster than real time, alerts print as they arrive, and a per-hop latency
summary closes the run. Exit status 0 means every node published everything and every missile
got a LAUNCH_DETECTED alert, and an IMPACT_PREDICTED one unless it failed in boost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

from warnshare.auth import init_keys
from warnshare.envdefaults import env_float, env_str
from warnshare.latency import HOPS, percentile
from warnshare.protocol import NATIONS, PICTURE_KINDS, AlertKind
from warnshare.subscriber import AlertSubscriber, ReceivedAlert, format_alert

DEFAULT_SCENARIO = "hwasong17-2022-11-18"
#: Wall-clock seconds the default speed aims to fit the scenario into.
TARGET_WALL_S = 40.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario",
        default=env_str("SCENARIO", DEFAULT_SCENARIO),
        help=f"scenario name or .toml path (default {DEFAULT_SCENARIO}; `warnshare sim --list`)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=env_float("SPEED", 0.0) or None,
        help=f"simulated seconds per wall second (default: fit the scenario in ~{TARGET_WALL_S:.0f} s)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=0, help="relay port (default: a free one)")
    parser.add_argument("--updates", action="store_true", help="print TRACK_UPDATE and TRACK_COAST alerts too")
    parser.add_argument("--json", action="store_true", help="print alerts as JSON lines")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"warnshare demo: the relay exited with status {proc.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        time.sleep(0.1)
    raise SystemExit(f"warnshare demo: the relay did not become healthy within {timeout_s:.0f} s")


def run(args: argparse.Namespace) -> int:
    from sims import load_scenario

    try:
        scenario = load_scenario(args.scenario)
    except (KeyError, FileNotFoundError, ValueError) as exc:
        print(f"warnshare demo: {exc}", file=sys.stderr)
        return 2
    speed = args.speed or max(1.0, round((scenario.duration_s or 4000.0) / TARGET_WALL_S))
    port = args.port or _free_port()
    base = f"127.0.0.1:{port}"
    py = [sys.executable, "-m", "warnshare.cli"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs: list[subprocess.Popen] = []
    print(
        f"warnshare demo: scenario {scenario.name} ({len(scenario.missiles)} missile(s), "
        f"{scenario.duration_s:.0f} s simulated) at {speed:g}x; relay on ws://{base}",
        flush=True,
    )
    workdir = tempfile.TemporaryDirectory(prefix="warnshare-demo-")
    keys = Path(workdir.name) / "keys"
    init_keys(keys)  # a fresh demo key set: nodes sign, the subscriber presents a token
    try:
        relay = subprocess.Popen(
            [
                *py,
                "relay",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--time-scale",
                str(speed),
                "--journal",
                str(Path(workdir.name) / "journal.sqlite3"),
                "--trust-store",
                str(keys / "trust.json"),
                "--log-level",
                "warning",
            ],
            env=env,
        )
        procs.append(relay)
        _wait_healthy(f"http://{base}/healthz", relay)
        # each node simulates its sensors, connects, says READY; then t=0 plays for all at once
        nodes = {}
        for nation in NATIONS:
            nodes[nation.value] = subprocess.Popen(
                [
                    *py,
                    "node",
                    "--nation",
                    nation.value,
                    "--relay",
                    f"ws://{base}",
                    "--scenario",
                    args.scenario,
                    "--speed",
                    str(speed),
                    "--seed",
                    str(args.seed),
                    "--start-at",
                    "-",
                    "--keys-dir",
                    str(keys),
                    "--log-level",
                    "warning",
                ],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(nodes[nation.value])
        print("warnshare demo: the nodes are simulating their sensors...", flush=True)
        t0 = time.monotonic()
        for nation, proc in nodes.items():
            if proc.stdout.readline().strip() != "READY":
                raise SystemExit(
                    f"warnshare demo: node {nation} failed to start (status {proc.wait()})"
                )
        start_at = time.time() + 0.5
        for proc in nodes.values():
            proc.stdin.write(f"{start_at:.6f}\n")
            proc.stdin.close()
        print(f"warnshare demo: nodes ready in {time.monotonic() - t0:.1f} s; t=0 now", flush=True)
        token = (keys / "usa-ops.token").read_text().strip()
        received = asyncio.run(_listen(f"ws://{base}", token, nodes, args, speed))
        node_status = {n: p.wait() for n, p in nodes.items()}
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        workdir.cleanup()
    return _summarise(received, node_status, scenario)


async def _listen(
    url: str, token: str, nodes: dict[str, subprocess.Popen], args: argparse.Namespace, speed: float
) -> list[ReceivedAlert]:
    sub = AlertSubscriber(url, token=token)
    received: list[ReceivedAlert] = []
    nodes_done_at: float | None = None
    # after the nodes finish, wait for the relay's time-outs (impact, final assessment)
    grace_s = 5.0 + 120.0 / speed
    final_events: set[int] = set()
    events: set[int] = set()

    async def consume() -> None:
        async for item in sub.alerts():
            received.append(item)
            a = item.alert
            events.add(a.event_id)
            if a.kind == AlertKind.FINAL_ASSESSMENT:
                final_events.add(a.event_id)
            if args.updates or a.kind not in PICTURE_KINDS:
                if args.json:
                    from warnshare.subscriber import alert_json

                    print(alert_json(item), flush=True)
                else:
                    print(format_alert(item), flush=True)

    task = asyncio.create_task(consume())
    try:
        while not task.done():
            await asyncio.sleep(0.2)
            if nodes_done_at is None and all(p.poll() is not None for p in nodes.values()):
                nodes_done_at = time.monotonic()
            if nodes_done_at is not None:
                if events and final_events >= events:
                    break
                if time.monotonic() - nodes_done_at > grace_s:
                    break
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return received


def _summarise(received: list[ReceivedAlert], node_status: dict[str, int], scenario) -> int:
    by_event: dict[int, dict] = defaultdict(lambda: {"kinds": set(), "nations": set()})
    hops: dict[str, list[float]] = defaultdict(list)
    for item in received:
        a = item.alert
        e = by_event[a.event_id]
        e["kinds"].add(a.kind)
        e["nations"].update(n.value for n in a.nations)
        for name, ns in item.latencies_ns().items():
            hops[name].append(ns / 1e6)
    print()
    print(
        f"{len(received)} alerts, {len(by_event)} event(s) for {len(scenario.missiles)} missile(s)"
    )
    for event_id, e in sorted(by_event.items()):
        kinds = ", ".join(
            k.value for k in AlertKind if k in e["kinds"] and k not in PICTURE_KINDS
        )
        print(f"  event {event_id}: seen by {'+'.join(sorted(e['nations']))}: {kinds}")
    print()
    print(f"{'hop':34s} {'p50 ms':>9s} {'p99 ms':>9s} {'n':>7s}")
    for name in [h[0] for h in HOPS] + ["end_to_end"]:
        values = sorted(hops.get(name, []))
        if values:
            print(
                f"{name:34s} {percentile(values, 50):9.2f} {percentile(values, 99):9.2f} {len(values):7d}"
            )
    ok = True
    for nation, status in node_status.items():
        if status != 0:
            print(f"node {nation} exited with status {status}", file=sys.stderr)
            ok = False
    if not by_event:
        print("no alerts were received", file=sys.stderr)
        ok = False
    for event_id, e in by_event.items():
        if AlertKind.LAUNCH_DETECTED not in e["kinds"]:
            print(f"event {event_id} has no LAUNCH_DETECTED alert", file=sys.stderr)
            ok = False
    return 0 if ok else 1
