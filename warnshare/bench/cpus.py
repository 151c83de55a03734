"""CPU placement of a benchmark run: the system under test on one core, the load on the others.

On a 2-core machine the server and the load generator otherwise share both cores at the
scheduler's whim: a server woken by a report may be queued behind the generator on the core
the generator runs on, and its caches follow it from core to core. Pinning gives each side a
core of its own, the same placement for every system under test.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator

__all__ = ["Placement", "available_cpus", "placement", "pin_process", "pinned_self", "preexec_pin"]


#: (server cores, load cores); empty tuples mean "leave the scheduler alone".
Placement = tuple[tuple[int, ...], tuple[int, ...]]


def available_cpus() -> tuple[int, ...]:
    """The cores this process may run on (all of them unless it was itself restricted)."""
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return ()


def placement(cpus: Iterable[int] | None = None) -> Placement:
    """The highest available core for the server, every other one for the load; no placement
    with fewer than two cores (nothing to separate)."""
    allowed = tuple(sorted(cpus)) if cpus is not None else available_cpus()
    if len(allowed) < 2:
        return (), ()
    return (allowed[-1],), allowed[:-1]


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


def pin_process(pid: int, cpus: Iterable[int]) -> dict[int, set[int]]:
    """Restrict every thread of ``pid`` to ``cpus`` (``sched_setaffinity`` acts on one thread;
    threads created later inherit their creator's). Returns each thread's previous set."""
    wanted = set(cpus)
    previous: dict[int, set[int]] = {}
    for tid in _threads(pid):
        with contextlib.suppress(OSError):  # a thread may have ended meanwhile
            previous[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, wanted)
    return previous


@contextlib.contextmanager
def pinned_self(cpus: Iterable[int]) -> Iterator[None]:
    """This process's threads on ``cpus`` for the duration (nothing when ``cpus`` is empty)."""
    cpus = tuple(cpus)
    if not cpus:
        yield
        return
    previous = pin_process(os.getpid(), cpus)
    try:
        yield
    finally:
        for tid, mask in previous.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, mask)


def preexec_pin(cpus: Iterable[int]) -> Callable[[], None] | None:
    """A ``Popen(preexec_fn=...)`` that pins the child before it execs, so every thread it ever
    starts (uvicorn's, nats-server's Go runtime) stays on ``cpus``; None for no placement."""
    cpus = tuple(cpus)
    if not cpus:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin
