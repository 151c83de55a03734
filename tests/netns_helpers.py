"""Network-namespace plumbing for multi-host tests: hosts, links with delay and loss, processes.

Each host is a network namespace of its own (``ip netns``); each link joins a nation's
namespace to the relay's, point to point, the relay at one address on every link. A link's
delay and loss come from ``tc qdisc ... netem`` when the kernel has netem; when it does not
(some minimal VM kernels are built without it), from a delay line in user space: a process
that owns a TUN device at each end of the link and carries every IPv4 packet across after the
delay, dropping the given fraction at random. Either way TCP sees a real lossy, slow path.

Run as a script, ``python netns_helpers.py wire ...`` is that delay line.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import os
import random
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Private test range, used only inside the namespaces these helpers create.
RELAY_ADDR = "10.213.0.1"
HOST_ADDRS = {"USA": "10.213.0.11", "JPN": "10.213.0.12", "KOR": "10.213.0.13"}

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
NETNS_DIR = Path("/run/netns")


class NetnsUnavailable(Exception):
    """Namespaces cannot be built here (not root, no iproute2 and no way to install it)."""


def _run(argv: Sequence[str], timeout_s: float = 30.0, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def ensure_iproute2() -> None:
    """Make sure ``ip`` and ``tc`` exist, installing iproute2 with apt-get when they do not."""
    if os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces need root")
    if shutil.which("ip") and shutil.which("tc"):
        return
    if not shutil.which("apt-get"):
        raise NetnsUnavailable("iproute2 (ip, tc) is missing and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "iproute2"]):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
        if proc.returncode != 0:
            # a machine that should run these tests but cannot install their tools is a failure
            raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()[-2000:]}")
    if not (shutil.which("ip") and shutil.which("tc")):
        raise RuntimeError("iproute2 was installed but ip or tc is still not on PATH")


def netem_available() -> bool:
    """Whether this kernel has the netem qdisc (tried on a veth pair in a scratch namespace)."""
    ns = f"wsprobe{secrets.token_hex(3)}"
    _run(["ip", "netns", "add", ns])
    try:
        _run(["ip", "-n", ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1"])
        probe = _run(["tc", "-n", ns, "qdisc", "add", "dev", "p0", "root", "netem", "delay", "1ms"], check=False)
        return probe.returncode == 0
    finally:
        _run(["ip", "netns", "del", ns], check=False)


@dataclass(frozen=True)
class LinkSpec:
    """One direction's impairment, applied to both directions of a link."""

    delay_ms: float = 0.0
    loss: float = 0.0  # fraction of packets dropped, 0..1

    @property
    def impaired(self) -> bool:
        return self.delay_ms > 0 or self.loss > 0


class Topology:
    """A relay host and one host per nation, each in its own namespace, joined point to point.

    Use as a context manager: every namespace and process it created is removed on exit,
    also when the body raises. Names carry a random token, so parallel runs do not collide.
    """

    def __init__(self, links: dict[str, LinkSpec], log_dir: Path, *, mode: str = "auto", seed: int = 0) -> None:
        if mode not in ("auto", "netem", "wire"):
            raise ValueError(f"mode must be auto, netem or wire, not {mode!r}")
        self.links = links
        self.log_dir = log_dir
        self.mode = mode
        self.seed = seed
        self.token = secrets.token_hex(3)
        self.relay_ns = f"ws{self.token}-relay"
        self.host_ns = {nation: f"ws{self.token}-{nation.lower()}" for nation in links}
        self.created: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.wire_logs: dict[str, Path] = {}
        self.devices: dict[str, tuple[str, str]] = {}  # nation -> (its end, the relay's end)

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Topology:
        try:
            self.create()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def create(self) -> None:
        ensure_iproute2()
        if self.mode == "auto":
            needs = any(spec.impaired for spec in self.links.values())
            self.mode = "netem" if not needs or netem_available() else "wire"
        for ns in [self.relay_ns, *self.host_ns.values()]:
            _run(["ip", "netns", "add", ns])
            self.created.append(ns)
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        for i, (nation, spec) in enumerate(self.links.items()):
            # interface names: at most 15 characters
            host_dev, relay_dev = f"w{self.token}h{i}", f"w{self.token}r{i}"
            ns = self.host_ns[nation]
            self.devices[nation] = (host_dev, relay_dev)
            if spec.impaired and self.mode == "wire":
                self._start_wire(nation, ns, host_dev, spec, relay_dev, self.seed + i)
            else:
                _run(["ip", "-n", ns, "link", "add", host_dev, "type", "veth", "peer", "name", relay_dev,
                      "netns", self.relay_ns])
            self._address(ns, host_dev, HOST_ADDRS[nation], RELAY_ADDR)
            self._address(self.relay_ns, relay_dev, RELAY_ADDR, HOST_ADDRS[nation])
            if spec.impaired and self.mode == "netem":
                for where, dev in ((ns, host_dev), (self.relay_ns, relay_dev)):
                    _run(["tc", "-n", where, "qdisc", "add", "dev", dev, "root", "netem",
                          "delay", f"{spec.delay_ms:g}ms", "loss", f"{spec.loss * 100:g}%"])

    def destroy(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for ns in reversed(self.created):
            _run(["ip", "netns", "del", ns], check=False)
        self.created.clear()

    # ------------------------------------------------------------------ plumbing
    @staticmethod
    def _address(ns: str, dev: str, local: str, peer: str) -> None:
        _run(["ip", "-n", ns, "addr", "add", f"{local}/32", "peer", f"{peer}/32", "dev", dev])
        _run(["ip", "-n", ns, "link", "set", dev, "up"])

    def _start_wire(self, nation: str, ns: str, host_dev: str, spec: LinkSpec, relay_dev: str, seed: int) -> None:
        log_path = self.log_dir / f"wire-{nation.lower()}.log"
        self.wire_logs[nation] = log_path
        argv = [sys.executable, str(Path(__file__).resolve()), "wire",
                "--netns-a", ns, "--dev-a", host_dev, "--netns-b", self.relay_ns, "--dev-b", relay_dev,
                "--delay-ms", str(spec.delay_ms), "--loss", str(spec.loss), "--seed", str(seed)]
        with open(log_path, "w") as log:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)
        self.procs.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], 15.0)
        line = proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            raise RuntimeError(f"the {nation} delay line did not start: {log_path.read_text()[-2000:]}")

    def netem_stats(self) -> dict[str, str]:
        """`tc -s` statistics of each netem qdisc (sent, dropped), by nation; {} for delay lines."""
        if self.mode != "netem":
            return {}
        stats = {}
        for nation, spec in self.links.items():
            if spec.impaired:
                host_dev, relay_dev = self.devices[nation]
                out = [_run(["tc", "-n", ns, "-s", "qdisc", "show", "dev", dev], check=False).stdout
                       for ns, dev in ((self.host_ns[nation], host_dev), (self.relay_ns, relay_dev))]
                stats[nation] = " | ".join(" ".join(o.split()) for o in out)
        return stats

    # ------------------------------------------------------------------ processes
    def command(self, ns: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def popen(self, ns: str, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start a process in a namespace; it is ended with the topology."""
        proc = subprocess.Popen(self.command(ns, argv), **kwargs)
        self.procs.append(proc)
        return proc

    def run(self, ns: str, argv: Sequence[str], timeout_s: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(ns, argv), capture_output=True, text=True, timeout=timeout_s)


# ---------------------------------------------------------------------- delay line


def _enter_netns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / name, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _open_tun(netns: str, dev: str) -> int:
    """A TUN device named ``dev`` in ``netns``; it lives as long as the returned descriptor."""
    _enter_netns(netns)  # TUNSETIFF creates the device in the caller's namespace
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", dev.encode(), IFF_TUN | IFF_NO_PI))
    os.set_blocking(fd, False)
    return fd


def run_wire(netns_a: str, dev_a: str, netns_b: str, dev_b: str, delay_s: float, loss: float, seed: int) -> int:
    """Carry IPv4 packets between two TUN devices, each way after ``delay_s``, losing ``loss``."""
    fd_a = _open_tun(netns_a, dev_a)
    fd_b = _open_tun(netns_b, dev_b)
    rng = random.Random(seed)
    # constant delay keeps each direction in arrival order: a FIFO per output is enough
    queues: dict[int, deque[tuple[float, bytes]]] = {fd_a: deque(), fd_b: deque()}
    peer = {fd_a: fd_b, fd_b: fd_a}
    counts = {"forwarded": 0, "dropped": 0}
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print("ready", flush=True)
    while not stop:
        now = time.monotonic()
        for out, queue in queues.items():
            while queue and queue[0][0] <= now:
                with contextlib.suppress(OSError):  # a device going down at teardown
                    os.write(out, queue.popleft()[1])
        dues = [q[0][0] for q in queues.values() if q]
        timeout = max(0.0, min(dues) - now) if dues else 0.5
        try:
            readable, _, _ = select.select([fd_a, fd_b], [], [], timeout)
        except InterruptedError:
            continue
        for fd in readable:
            for _ in range(256):
                try:
                    packet = os.read(fd, 65536)
                except (BlockingIOError, OSError):
                    break
                if not packet or packet[0] >> 4 != 4:
                    continue
                if rng.random() < loss:
                    counts["dropped"] += 1
                    continue
                queues[peer[fd]].append((time.monotonic() + delay_s, packet))
                counts["forwarded"] += 1
    print(f"delay line {dev_a}<->{dev_b}: {counts['forwarded']} packets forwarded, "
          f"{counts['dropped']} dropped", file=sys.stderr, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    wire = sub.add_parser("wire", help="a delay line between two namespaces")
    wire.add_argument("--netns-a", required=True)
    wire.add_argument("--dev-a", required=True)
    wire.add_argument("--netns-b", required=True)
    wire.add_argument("--dev-b", required=True)
    wire.add_argument("--delay-ms", type=float, default=0.0)
    wire.add_argument("--loss", type=float, default=0.0)
    wire.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return run_wire(args.netns_a, args.dev_a, args.netns_b, args.dev_b, args.delay_ms / 1e3, args.loss, args.seed)


if __name__ == "__main__":
    sys.exit(main())
