"""The docker compose demo, brought up for real: build, start, subscribe from the host, tear down.

A private Docker engine comes from ``../shared/tools/docker-sandbox`` beside the repository (it
installs what it needs with apt-get and builds a local base image, since no registry is
reachable). The test builds the image with ``docker compose build``, starts the relay, connects
to the relay's port published on 127.0.0.1 with a WebSocket client, starts the three national
nodes and the alert logger, and checks what arrives: one event per missile, fused from all three
nations, every alert carrying ordered per-hop timestamps. ``down -v`` and the sandbox's stop run
in finalisers, also when the test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shlex
import statistics
import subprocess
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from tests.deploy_checks import connected_nations, describe, events_from_alerts
from warnshare.protocol import NATIONS, AlertBatch, AlertKind, decode_relay_to_subscriber

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SANDBOX = REPO.parent / "shared" / "tools" / "docker-sandbox"
COMPOSE_FILE = REPO / "docker-compose.yml"
NODE_SERVICES = ("usa", "jpn", "kor")
KEYS_DIR = "/var/lib/warnshare/keys"

#: Several missiles, so that "one event per missile" is a real check; played fast.
SCENARIO = "srbm-salvo-2022-06-05"
SPEED = 50.0
#: `up` of the nodes to all three connected: container start and the nodes' sensor simulation
#: (3-5 s alone; 15-20 s on a 2-core machine busy with other work).
CONNECT_WAIT_S = 60.0


def _run(argv: list[str], env: dict[str, str], timeout_s: float, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{shlex.join(argv)} exited with {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
    return proc


def _parse_exports(text: str) -> dict[str, str]:
    """The sandbox prints `export NAME=VALUE` lines, values shell-quoted."""
    env = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            env[name] = value
    return env


@pytest.fixture(scope="module")
def docker_env() -> Iterator[dict[str, str]]:
    """Environment for `docker` commands talking to a freshly started private engine."""
    if not SANDBOX.is_file():
        pytest.skip(f"no Docker sandbox script at {SANDBOX} (it sits beside the repository in CI)")
    if os.geteuid() != 0:
        pytest.skip("the Docker sandbox runs a private dockerd and needs root")
    t0 = time.monotonic()
    try:
        proc = subprocess.run([str(SANDBOX), "start"], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"docker-sandbox start failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        env = {**os.environ, **_parse_exports(proc.stdout)}
        missing = {"DOCKER_HOST", "DOCKER_CONFIG", "PYTHON_IMAGE"} - env.keys()
        assert not missing, f"docker-sandbox start printed no {sorted(missing)}: {proc.stdout!r}"
        print(f"docker sandbox started in {time.monotonic() - t0:.1f} s")
        yield env
    finally:
        stop = subprocess.run([str(SANDBOX), "stop"], capture_output=True, text=True, timeout=300)
        if stop.returncode != 0:
            print(f"docker-sandbox stop failed ({stop.returncode}):\n{stop.stderr[-4000:]}")


@pytest.fixture
def compose(docker_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[list[str], dict[str, str]]]:
    """`docker compose` for a project of this test's own; taken down (with volumes) afterwards."""
    project = f"warnshare-test-{secrets.token_hex(3)}"
    cmd = ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", project]
    env = {
        **docker_env,
        "WARNSHARE_SCENARIO": SCENARIO,
        "WARNSHARE_SPEED": f"{SPEED:g}",
        "WARNSHARE_HOST_PORT": "0",  # a free host port: never collide with a running demo
    }
    try:
        yield cmd, env
    finally:
        logs = _run([*cmd, "logs", "--no-color", "--timestamps"], env, 60, check=False)
        (tmp_path / "compose.log").write_text(logs.stdout + logs.stderr)
        print(f"--- docker compose logs (all of them in {tmp_path / 'compose.log'}) ---\n{logs.stdout[-5000:]}")
        down = _run([*cmd, "down", "-v", "--remove-orphans", "--timeout", "10"], env, 120, check=False)
        if down.returncode != 0:
            print(f"docker compose down failed:\n{down.stderr[-4000:]}")


def _service_states(cmd: list[str], env: dict[str, str]) -> dict[str, tuple[str, int]]:
    """service -> (state, exit code) of every container of the project, running or not."""
    out = _run([*cmd, "ps", "-a", "--format", "json"], env, 60).stdout.strip()
    rows = json.loads(out) if out.startswith("[") else [json.loads(line) for line in out.splitlines() if line]
    return {r["Service"]: (r["State"], int(r.get("ExitCode") or 0)) for r in rows}


async def _collect(port: str, token: str, cmd: list[str], env: dict[str, str], deadline_s: float) -> list[tuple[dict, int]]:
    """Alerts (as dicts, with their frame's relay_sent_ns) from the nodes' start until fusion is done."""
    received: list[tuple[dict, int]] = []
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/alerts", additional_headers=headers,
                                      max_size=64 << 20, open_timeout=10) as ws:
            await _receive_until_done(ws, port, cmd, env, deadline_s, received)
    except websockets.ConnectionClosed as exc:
        raise AssertionError(f"the relay's alert stream closed after {len(received)} alerts: {exc}") from None
    return received


async def _receive_until_done(ws, port: str, cmd: list[str], env: dict[str, str], deadline_s: float,
                              received: list[tuple[dict, int]]) -> None:
    """Start the nodes and the logger, then take alerts until fusion is done (or the deadline)."""
    # Subscribed before the nodes start, so that nothing is missed. WARNSHARE_START_AT unset, as
    # in the README: the three nodes agree through the relay to play the scenario from one
    # instant, 2 s after the last of them has simulated its sensors and connected (auto).
    up = await asyncio.create_subprocess_exec(
        *cmd, "up", "-d", *NODE_SERVICES, "alerts", env={**env, "WARNSHARE_START_AT": ""},
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    up_out, _ = await asyncio.wait_for(up.communicate(), 300)
    assert up.returncode == 0, f"docker compose up failed:\n{up_out.decode()[-4000:]}"
    connected: set[str] = set()
    until = time.monotonic() + CONNECT_WAIT_S
    while time.monotonic() < until and connected < {"USA", "JPN", "KOR"}:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/nodes", timeout=10) as r:
            connected = connected_nations(json.load(r))
        await asyncio.sleep(0.5)
    assert connected >= {"USA", "JPN", "KOR"}, (
        f"only {sorted(connected)} connected within {CONNECT_WAIT_S:.0f} s")
    deadline = time.monotonic() + deadline_s
    nodes_done_at: float | None = None
    next_poll = 0.0
    # After the nodes finish, the relay's time-outs (impact, final assessment) still run.
    grace_s = 10.0 + 300.0 / SPEED
    while time.monotonic() < deadline:
        try:
            frame = await asyncio.wait_for(ws.recv(), 1.0)
        except TimeoutError:
            frame = None
        if frame is not None:
            msg = decode_relay_to_subscriber(frame)
            if isinstance(msg, AlertBatch):
                received.extend((a.model_dump(mode="json"), msg.relay_sent_ns) for a in msg.alerts)
        now = time.monotonic()
        if nodes_done_at is None and now >= next_poll:
            next_poll = now + 2.0
            states = _service_states(cmd, env)
            if all(states.get(s, ("", 0))[0] == "exited" for s in NODE_SERVICES):
                nodes_done_at = now
        if nodes_done_at is not None:
            events = {a["event_id"] for a, _ in received}
            final = {a["event_id"] for a, _ in received if a["kind"] == AlertKind.FINAL_ASSESSMENT}
            if (events and final >= events) or now - nodes_done_at > grace_s:
                break


def _missile_count(name: str) -> int:
    from sims import load_scenario

    return len(load_scenario(name).missiles)


@pytest.mark.timeout(900)
def test_compose_demo_fuses_alerts_from_all_three_nations(compose: tuple[list[str], dict[str, str]]) -> None:
    cmd, env = compose
    t0 = time.monotonic()
    _run([*cmd, "config", "--quiet"], env, 60)
    _run([*cmd, "build"], env, 600)
    t_built = time.monotonic()
    print(f"docker compose build: {t_built - t0:.1f} s")
    _run([*cmd, "up", "-d", "--wait", "relay"], env, 180)
    print(f"relay healthy after {time.monotonic() - t_built:.1f} s")
    published = _run([*cmd, "port", "relay", "8000"], env, 60).stdout.strip()
    host, _, port = published.rpartition(":")
    assert host == "127.0.0.1", f"the relay must be published on loopback only, not {published!r}"

    # Keys are made at run time into a volume, never baked into the image ...
    baked = _run(["docker", "run", "--rm", "--entrypoint", "ls", "warnshare:local", "-A", KEYS_DIR], env, 60)
    assert baked.stdout.strip() == "", f"the image holds key material: {baked.stdout!r}"
    # ... and the relay insists on them: signed nodes, subscribers with a token.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
        assert json.load(r)["authentication"] is True
    token = _run([*cmd, "run", "--rm", "--no-deps", "--entrypoint", "cat", "keys", f"{KEYS_DIR}/jpn-ops.token"],
                 env, 60).stdout.strip()
    assert token
    # Each service holds only its share: the relay public keys and token hashes, no secret.
    relay_keys = _run([*cmd, "exec", "-T", "relay", "ls", "-A", KEYS_DIR], env, 60).stdout.split()
    assert relay_keys == ["trust.json"], relay_keys

    received = asyncio.run(_collect(port, token, cmd, env, deadline_s=300))
    t_done = time.monotonic()

    states = _service_states(cmd, env)
    for service in NODE_SERVICES:
        assert states[service] == ("exited", 0), f"node {service}: {states.get(service)}"
    assert states["keys"] == ("exited", 0), f"keys: {states.get('keys')}"
    for service in NODE_SERVICES:  # ... and a node its own nation's signing key only
        held = _run([*cmd, "run", "--rm", "--no-deps", "--entrypoint", "ls", service, "-A", KEYS_DIR], env, 60)
        assert held.stdout.split() == [f"{service}.key"], (service, held.stdout)
    assert states["relay"][0] == "running", f"relay: {states['relay']}"
    assert received, "no alert reached the host subscriber"

    # One event per missile (duplicates the relay withdrew aside), each announced, all three
    # nations feeding the fusion.
    live, duplicates = events_from_alerts(a for a, _ in received)
    summary = f"live: {describe(live)} | withdrawn duplicates: {describe(duplicates)}"
    assert len(live) == _missile_count(SCENARIO), summary
    for event in live.values():
        assert AlertKind.LAUNCH_DETECTED in event.kinds, summary
    all_three = {n.value for n in NATIONS}
    assert any(e.nations >= all_three for e in live.values()), f"no event fused from all three: {summary}"
    sources = {a["hops"]["source_nation"] for a, _ in received}
    assert sources == all_three, f"alerts were triggered by reports from {sorted(sources)} only"

    # Latency figures: every hop stamped, in order along the path.
    hops_ms: dict[str, list[float]] = defaultdict(list)
    for alert, relay_sent_ns in received:
        h = alert["hops"]
        stamps = [h["measured_ns"], h["node_sent_ns"], h["relay_received_ns"], h["fused_ns"], relay_sent_ns]
        assert all(s > 0 for s in stamps), h
        assert h["measured_ns"] <= h["node_sent_ns"], h  # both on the node's clock
        # node times are mapped onto the relay's clock by an offset estimate, good to half its RTT
        assert h["relay_received_ns"] - h["node_sent_ns"] >= -(h["clock_rtt_ns"] // 2 + 1), h
        assert h["relay_received_ns"] <= h["fused_ns"] <= relay_sent_ns, h
        hops_ms["node_sent→relay_received"].append((h["relay_received_ns"] - h["node_sent_ns"]) / 1e6)
        hops_ms["relay_received→fused"].append((h["fused_ns"] - h["relay_received_ns"]) / 1e6)
        hops_ms["fused→relay_sent"].append((relay_sent_ns - h["fused_ns"]) / 1e6)

    logger = _run([*cmd, "logs", "--no-color", "alerts"], env, 60).stdout
    assert AlertKind.LAUNCH_DETECTED.value in logger, f"the alert logger printed no fused alert:\n{logger[-3000:]}"

    print(f"{len(received)} alerts, {len(live)} events ({len(duplicates)} duplicates withdrawn); build {t_built - t0:.1f} s, "
          f"up to last alert {t_done - t_built:.1f} s")
    for hop, values in hops_ms.items():
        print(f"  {hop:28s} median {statistics.median(values):8.3f} ms  max {max(values):8.3f} ms")
