"""The relay's journal: every input the engine saw, and every alert it issued, in SQLite (WAL).

An input row is a batch (the exact payload bytes a node sent, which seqs of it were new,
the clock offset used and the relay's stamps), a tick or a run of the due impact predictions
(``predict``; both with their ``now_ns``), or a step of the relay's wall clock (``clock_step``,
its size in ``clock_offset_ns``). A batch is committed
before it is acknowledged and before its alerts reach any subscriber, so a ``kill -9`` loses
nothing that anyone was told about: the node re-sends what was not acknowledged, and replaying
the inputs through a fresh engine rebuilds the same state and the same alerts. The relay's
epoch (which numbering its alert ids are, told to subscribers) is kept here too, so a restarted
relay goes on with the same one.

Batches are written into an open transaction and made durable together by ``commit`` (group
commit): the relay commits once per group of a node's frames that it takes together, before
their ack and their alerts leave. A commit costs more than the inserts of a batch, so a relay
that falls behind its input commits less often per batch, not more.

The WAL is checkpointed into the database by a thread of its own (``Checkpointer``), not by
the commit that happens to cross SQLite's threshold: that commit would stop the relay's event
loop for the copy and its fsync (up to 12 ms measured, every ~4 MB of journal). A checkpoint
that runs beside the writer never catches up with it under sustained load, though, and SQLite
starts the WAL over only once one has: so when the WAL passes ``wal_restart_bytes`` the writer
finishes the job itself after a commit (the thread has copied all but the last fraction of a
second), and the file is cut back to that size when the WAL starts over.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

INPUT_KINDS = ("batch", "tick", "predict", "clock_step")
SCHEMA = """
CREATE TABLE IF NOT EXISTS inputs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN (""" + ", ".join(f"'{k}'" for k in INPUT_KINDS) + """)),
    node_id TEXT,
    nation TEXT,
    payload BLOB,
    first_seq INTEGER,
    last_seq INTEGER,
    clock_offset_ns INTEGER,
    clock_rtt_ns INTEGER,
    received_ns INTEGER,
    fused_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id INTEGER PRIMARY KEY,
    event_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class InputRecord:
    kind: str
    node_id: str | None
    nation: str | None
    payload: bytes | None
    first_seq: int | None
    last_seq: int | None
    clock_offset_ns: int
    clock_rtt_ns: int
    received_ns: int
    fused_ns: int


log = logging.getLogger("warnshare.relay.journal")


class Checkpointer:
    """Copies the WAL's committed pages into the database every ``interval_s``, on its own
    connection and thread (SQLite runs the copy and the fsync without the GIL). A passive
    checkpoint never blocks the writer; the writer starts the WAL over once one has caught up."""

    def __init__(self, path: Path, interval_s: float) -> None:
        self.path = path
        self.interval_s = interval_s
        self.checkpoints = 0
        #: Pages in the WAL at the last checkpoint, and whether one finished since the writer
        #: last looked (its own checkpoint then has only the pages written meanwhile to copy).
        self.wal_pages = 0
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="journal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    ((_busy, self.wal_pages, _copied),) = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                    self.finished.set()
                except sqlite3.Error:  # never the end of the journal: the next one retries
                    log.exception("journal checkpoint failed")
        finally:
            db.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class Journal:
    """Append-only input and alert log. One writer (the relay's event loop)."""

    def __init__(
        self, path: str | Path, checkpoint_interval_s: float = 0.5, wal_restart_bytes: int = 64 << 20
    ) -> None:
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit survives the process being killed (the WAL is in the OS's hands);
        # only a power cut between checkpoints could lose the newest commits.
        self.db.execute("PRAGMA synchronous=NORMAL")
        # no checkpoint inside a commit: the Checkpointer does them, from the first commit on
        self.db.execute("PRAGMA wal_autocheckpoint=0")
        self.db.execute(f"PRAGMA journal_size_limit={int(wal_restart_bytes)}")
        self.checkpoint_interval_s = checkpoint_interval_s
        page = self.db.execute("PRAGMA page_size").fetchone()[0]
        self._restart_pages = wal_restart_bytes // page
        self.checkpointer: Checkpointer | None = None
        #: Checkpoints the writer ran itself to let a large WAL start over.
        self.writer_checkpoints = 0
        #: A transaction is open: batches written since the last ``commit``.
        self.open = False
        self._migrate()
        self.db.executescript(SCHEMA)

    def epoch(self, new: str) -> str:
        """The relay's epoch kept in this journal; ``new`` is kept and returned if it has none
        (a new journal, or one written before epochs: its alert ids go on, but no subscriber
        can have been told an epoch for them)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        if row is not None:
            return row[0]
        with self._transaction():
            self.db.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?)", (new,))
        return new

    def _migrate(self) -> None:
        """A journal written before ``predict`` or ``clock_step`` inputs existed: its CHECK
        constraint refuses them, and SQLite cannot alter a constraint, so the table is copied
        into the new one."""
        row = self.db.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='inputs'").fetchone()
        if row is None or all(f"'{kind}'" in row[0] for kind in INPUT_KINDS):
            return
        with self._transaction():
            self.db.execute("ALTER TABLE inputs RENAME TO inputs_before_migration")
            self.db.execute(SCHEMA.split(";")[0])
            self.db.execute("INSERT INTO inputs SELECT * FROM inputs_before_migration")
            self.db.execute("DROP TABLE inputs_before_migration")

    def record_batch(
        self,
        *,
        node_id: str,
        nation: str,
        payload: bytes,
        first_seq: int,
        last_seq: int,
        clock_offset_ns: int,
        clock_rtt_ns: int,
        received_ns: int,
        fused_ns: int,
        alerts: list,
    ) -> None:
        """Write one batch and its alerts into the open transaction (opened here if none is):
        durable at the next ``commit``."""
        if not self.open:
            self.db.execute("BEGIN")
            self.open = True
        # a batch is all or nothing within its group
        self.db.execute("SAVEPOINT batch")
        try:
            self._insert_batch(node_id, nation, payload, first_seq, last_seq, clock_offset_ns,
                               clock_rtt_ns, received_ns, fused_ns, alerts)
        except BaseException:
            self.db.execute("ROLLBACK TO batch")
            self.db.execute("RELEASE batch")
            raise
        self.db.execute("RELEASE batch")

    def _insert_batch(
        self, node_id: str, nation: str, payload: bytes, first_seq: int, last_seq: int,
        clock_offset_ns: int, clock_rtt_ns: int, received_ns: int, fused_ns: int, alerts: list,
    ) -> None:
        self.db.execute(
            "INSERT INTO inputs (kind, node_id, nation, payload, first_seq, last_seq, clock_offset_ns,"
            " clock_rtt_ns, received_ns, fused_ns) VALUES ('batch', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                node_id,
                nation,
                payload,
                first_seq,
                last_seq,
                clock_offset_ns,
                clock_rtt_ns,
                received_ns,
                fused_ns,
            ),
        )
        self._insert_alerts(alerts)

    def commit(self) -> None:
        """Make every batch written since the last commit durable (nothing to do if none was)."""
        if self.open:
            self.db.execute("COMMIT")
            self.open = False
            cp = self._checkpoints()
            if cp.wal_pages > self._restart_pages and cp.finished.is_set():
                # The thread's checkpoint has just caught up to within what was written while it
                # ran; nobody writes while the writer checkpoints, so this one completes (or, if
                # the thread's next has begun, returns at once) and the WAL can start over.
                cp.finished.clear()
                self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.writer_checkpoints += 1

    def record_tick(
        self, now_ns: int, fused_ns: int, alerts: list, kind: str = "tick", step_ns: int = 0
    ) -> None:
        """A clock input: a ``tick``, a ``predict`` (the engine's ``predict_due``) or a
        ``clock_step`` of the relay's wall clock (its size in the ``clock_offset_ns`` column),
        committed at once (after the batches before it: inputs stay in the order the engine saw
        them)."""
        self.commit()
        with self._transaction():
            self.db.execute(
                "INSERT INTO inputs (kind, received_ns, fused_ns, clock_offset_ns, clock_rtt_ns) VALUES (?, ?, ?, ?, 0)",
                (kind, now_ns, fused_ns, step_ns),
            )
            self._insert_alerts(alerts)
        self._checkpoints()

    def _checkpoints(self) -> Checkpointer:
        """From the first commit on, the WAL is checkpointed in the background."""
        if self.checkpointer is None:
            self.checkpointer = Checkpointer(self.path, self.checkpoint_interval_s)
        return self.checkpointer

    def _insert_alerts(self, alerts: list) -> None:
        if alerts:
            self.db.executemany(
                "INSERT INTO alerts (alert_id, event_id, kind, body) VALUES (?, ?, ?, ?)",
                [(a.alert_id, a.event_id, a.kind.value, a.msgpack) for a in alerts],
            )

    def _transaction(self):
        db = self.db

        class _Tx:
            def __enter__(self) -> None:
                db.execute("BEGIN")

            def __exit__(self, exc_type, exc, tb) -> None:
                db.execute("COMMIT" if exc_type is None else "ROLLBACK")

        return _Tx()

    def inputs(self) -> Iterator[InputRecord]:
        cur = self.db.execute(
            "SELECT kind, node_id, nation, payload, first_seq, last_seq, clock_offset_ns, clock_rtt_ns,"
            " received_ns, fused_ns FROM inputs ORDER BY id"
        )
        for row in cur:
            yield InputRecord(*row)

    def alert_bodies(
        self, after_alert_id: int = 0, limit: int | None = None
    ) -> list[tuple[int, bytes]]:
        sql = "SELECT alert_id, body FROM alerts WHERE alert_id > ? ORDER BY alert_id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return list(self.db.execute(sql, (after_alert_id,)))

    def counts(self) -> dict[str, int]:
        inputs = self.db.execute("SELECT count(*) FROM inputs").fetchone()[0]
        alerts = self.db.execute("SELECT count(*) FROM alerts").fetchone()[0]
        return {"inputs": inputs, "alerts": alerts}

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.db.close()
