"""Start each system under test in a process of its own and report where it listens.

``python -m warnshare.bench.servers {relay,ws,tcp}`` binds 127.0.0.1 on an ephemeral port,
prints ``PORT <n>`` on stdout and serves until terminated. ``ServerProcess`` runs that (or
``nats-server``) from the benchmark and watches its CPU time and memory with psutil.
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
import threading
import time
from dataclasses import dataclass, field

from warnshare.bench.cpus import preexec_pin

SYSTEMS = ("relay", "ws", "tcp", "nats")


def _bound_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(4096)
    sock.set_inheritable(True)
    return sock


def _announce(sock: socket.socket) -> None:
    print(f"PORT {sock.getsockname()[1]}", flush=True)


def _install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve_asgi(app: object, sock: socket.socket) -> None:
    """Serve an ASGI app with exactly the uvicorn settings the relay is served with."""
    import uvicorn

    from warnshare.relay.server import uvicorn_options

    options = uvicorn_options("127.0.0.1", 0, log_level="warning")
    options.pop("host")
    options.pop("port")
    server = uvicorn.Server(uvicorn.Config(app, **options))
    _announce(sock)
    server.run(sockets=[sock])


#: ``key=value,...`` of RelayConfig fields the benchmark's relay is started with (experiments:
#: ``frames_per_s=20000``, ``direct_writes=0``); unset, the relay runs with its defaults.
RELAY_CONFIG_ENV = "WARNSHARE_BENCH_RELAY_CONFIG"
#: The path of the SQLite journal the benchmark's relay writes (unset: no journal).
RELAY_JOURNAL_ENV = "WARNSHARE_BENCH_RELAY_JOURNAL"


def relay_config(text: str = "") -> object:
    """The relay's default RelayConfig with ``key=value,...`` fields changed (``fusion.key`` for
    the engine's FusionConfig), each value converted to the field's type."""
    import dataclasses

    from warnshare.relay.app import RelayConfig

    config = RelayConfig()
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = (p.strip() for p in item.partition("="))
        owner_name, _, name = key.rpartition(".")
        if owner_name not in ("", "fusion"):
            raise ValueError(f"{item!r}: only RelayConfig fields and fusion.<FusionConfig field>")
        owner = config.fusion if owner_name else config
        kind = type(getattr(owner, name, None))
        if not sep or kind not in (int, float, bool):
            raise ValueError(f"{item!r}: expected key=value with a numeric or boolean field")
        v = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(float(value))
        owner = dataclasses.replace(owner, **{name: v})
        config = dataclasses.replace(config, fusion=owner) if owner_name else owner
    return config


def make_relay_app() -> object:
    """The relay's ASGI app: its default configuration, or that with ``RELAY_CONFIG_ENV``'s
    fields; journaling to ``RELAY_JOURNAL_ENV``'s path when it is set."""
    import dataclasses

    from warnshare.relay.app import create_app

    config = relay_config(os.environ.get(RELAY_CONFIG_ENV, ""))
    journal = os.environ.get(RELAY_JOURNAL_ENV)
    return create_app(dataclasses.replace(config, journal_path=journal) if journal else config)


def serve_tcp(sock: socket.socket) -> None:
    from warnshare.bench.baselines import TcpForwarder

    _install_uvloop()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        hub = TcpForwarder()
        server = await loop.create_server(hub.protocol, sock=sock)
        _announce(sock)
        async with server:
            await stop.wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m warnshare.bench.servers")
    parser.add_argument("system", choices=("relay", "ws", "tcp"))
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    sock = _bound_socket(args.host)
    if args.system == "tcp":
        serve_tcp(sock)
    elif args.system == "ws":
        from warnshare.bench.baselines import create_ws_forwarder_app

        serve_asgi(create_ws_forwarder_app(), sock)
    else:
        serve_asgi(make_relay_app(), sock)
    return 0


# --------------------------------------------------------------------- parent side


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"server did not listen on {host}:{port} within {timeout_s} s")


@dataclass
class ResourceUse:
    cpu_s: float = 0.0
    wall_s: float = 0.0
    peak_rss_bytes: int = 0
    rss_samples: list[tuple[float, int]] = field(default_factory=list)  # (t since start, rss)

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


class ServerProcess:
    """One system under test in its own process; ``measure`` windows its CPU and memory."""

    def __init__(
        self, system: str, host: str = "127.0.0.1", startup_timeout_s: float = 30.0, cpus: tuple[int, ...] = (),
        journal_path: str | None = None,
    ) -> None:
        self.system = system
        self.journal_path = journal_path  # the relay's journal (None: it keeps none)
        self.host = host
        self.cpus = tuple(cpus)  # the cores the server runs on (empty: wherever the scheduler puts it)
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._ps: object = None
        self._sampler: threading.Thread | None = None
        self._stop_sampling = threading.Event()
        self._use = ResourceUse()
        self._cpu0 = 0.0
        self._t0 = 0.0

    def start(self) -> ServerProcess:
        import psutil

        if self.system == "nats":
            from warnshare.bench.baselines import start_nats_server

            self.port = free_port(self.host)
            self.proc = start_nats_server(self.port, self.host, cpus=self.cpus)
            _wait_port(self.host, self.port, self.proc, self.startup_timeout_s)
        else:
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            env.pop(RELAY_JOURNAL_ENV, None)
            if self.journal_path:
                env[RELAY_JOURNAL_ENV] = self.journal_path
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "warnshare.bench.servers", self.system, "--host", self.host],
                stdout=subprocess.PIPE,
                env=env,
                preexec_fn=preexec_pin(self.cpus),
            )
            assert self.proc.stdout is not None
            deadline = time.monotonic() + self.startup_timeout_s
            line = b""
            while time.monotonic() < deadline:
                line = self.proc.stdout.readline()
                if line.startswith(b"PORT ") or not line:
                    break
            if not line.startswith(b"PORT "):
                self.stop()
                raise RuntimeError(f"{self.system} server did not start (exit {self.proc.poll()})")
            self.port = int(line.split()[1])
            _wait_port(self.host, self.port, self.proc, self.startup_timeout_s)
        self._ps = psutil.Process(self.proc.pid)
        return self

    def begin_measure(self, sample_every_s: float = 0.1) -> None:
        """Start the measurement window: CPU time from here, RSS sampled every ``sample_every_s``."""
        ps = self._ps
        times = ps.cpu_times()  # type: ignore[attr-defined]
        self._cpu0 = times.user + times.system
        self._t0 = time.monotonic()
        self._use = ResourceUse()
        self._stop_sampling.clear()

        def sample() -> None:
            while not self._stop_sampling.wait(sample_every_s):
                with contextlib.suppress(Exception):
                    rss = int(ps.memory_info().rss)  # type: ignore[attr-defined]
                    self._use.rss_samples.append((time.monotonic() - self._t0, rss))

        self._sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
        self._sampler.start()

    def end_measure(self) -> ResourceUse:
        self._stop_sampling.set()
        if self._sampler is not None:
            self._sampler.join(timeout=2.0)
        ps = self._ps
        use = self._use
        with contextlib.suppress(Exception):
            times = ps.cpu_times()  # type: ignore[attr-defined]
            use.cpu_s = times.user + times.system - self._cpu0
            use.wall_s = time.monotonic() - self._t0
            use.peak_rss_bytes = max([r for _, r in use.rss_samples] + [_vm_hwm(ps.pid)])  # type: ignore[attr-defined]
        return use

    def stop(self) -> None:
        self._stop_sampling.set()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5.0)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _vm_hwm(pid: int) -> int:
    """Peak resident set size of a process (Linux VmHWM), 0 where unavailable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
