"""The apply journal: an sqlite file that records every step of a live apply before and after it happens,
so that a crash (even SIGKILL) never leaves a half-applied plan without a record, and `--resume` knows
which migrations are done, which never started and which were in flight.

Each write is its own committed transaction (WAL, synchronous=FULL). Host names only, never URIs; every
text is scrubbed of URI passwords on the way in, whatever the caller passed.

Schema (version 1):
    runs(id, plan_fingerprint, cluster_fingerprint, cluster_json, started_at, finished_at, status, pid)
        status: running | done | stopped (a migration failed; later waves not started)
    migrations(run_id, idx, vm, source, destination, wave, mode, state, attempts, started_at, finished_at,
               abort_at, rung, message, stats_json)
        idx: position in plan.migrations; mode: live | storage | cold;
        state: pending | running | done | failed | aborted | unknown
        abort_at: wall-clock time (UTC) at which the ladder aborts the job, for a resume that finds it running
    steps(id, run_id, idx, at, step, phase, outcome, detail_json)
        phase: begin | end | note; outcome (end only): ok | error
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from advisor.config import Config
from advisor.core import Cluster, Plan, fingerprint_of
from advisor.errors import InputError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    plan_fingerprint TEXT NOT NULL,
    cluster_fingerprint TEXT NOT NULL,
    cluster_json TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    pid INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS migrations (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    idx INTEGER NOT NULL,
    vm TEXT NOT NULL,
    source TEXT NOT NULL,
    destination TEXT NOT NULL,
    wave INTEGER NOT NULL,
    mode TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at TEXT,
    finished_at TEXT,
    abort_at TEXT,
    rung TEXT,
    message TEXT NOT NULL DEFAULT '',
    stats_json TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, idx)
);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    idx INTEGER,
    at TEXT NOT NULL,
    step TEXT NOT NULL,
    phase TEXT NOT NULL,
    outcome TEXT,
    detail_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS steps_by_migration ON steps(run_id, idx);
"""

# scheme://user:password@host -> scheme://user@host, wherever a URI appears in a text
_URI_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^@\s/]*@")


class MigrationState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # ended with the VM on its source
    ABORTED = "aborted"  # the ladder's last rung: the VM runs on its source
    UNKNOWN = "unknown"  # reconciliation could not say where the VM is: needs a person


class RunStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Run:
    id: int
    plan_fingerprint: str
    cluster_fingerprint: str
    cluster: Cluster
    started_at: datetime
    status: RunStatus
    pid: int


@dataclass(frozen=True)
class MigrationRecord:
    idx: int
    vm: str
    source: str
    destination: str
    wave: int
    mode: str
    state: MigrationState
    attempts: int
    abort_at: datetime | None
    rung: str | None
    message: str
    stats: dict[str, Any]


@dataclass(frozen=True)
class StepRecord:
    idx: int | None
    at: datetime
    step: str
    phase: str
    outcome: str | None
    detail: dict[str, Any]


def scrub(text: str) -> str:
    """`text` with the password of any URI in it removed."""
    return _URI_PASSWORD.sub(r"\1@", text)


def plan_fingerprint(plan: Plan) -> str:
    return fingerprint_of(plan.to_dict())


def now() -> datetime:
    return datetime.now(UTC)


JOURNAL_FILE = "journal.sqlite"


def journal_path(cfg: Config, out_dir: Path, override: Path | None = None) -> Path:
    if override is not None:
        return override
    return Path(cfg.apply.journal) if cfg.apply.journal else out_dir / JOURNAL_FILE


def last_moves(path: Path) -> dict[str, datetime]:
    """VM -> when its last completed migration finished, for the planner's anti-ping-pong (`plan.sticky_h`).
    No journal yet means no VM has moved."""
    if not path.exists():
        return {}
    journal = Journal(path)
    try:
        return journal.last_moves()
    finally:
        journal.close()


class Journal:
    """One journal file; safe to share between the threads of one apply."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            version = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise InputError(f"{path}: not an apply journal ({e})") from None
        if version != str(SCHEMA_VERSION):
            raise InputError(f"{path}: journal schema {version} is not supported (expected {SCHEMA_VERSION})")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- runs ----------------------------------------------------------------------------------------

    def begin_run(self, plan: Plan, cluster: Cluster, modes: Mapping[int, str]) -> int:
        """A new run of `plan` on `cluster` (the live state preflight accepted), every migration pending."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO runs (plan_fingerprint, cluster_fingerprint, cluster_json, started_at, status,"
                " pid) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    plan_fingerprint(plan),
                    cluster.fingerprint(),
                    json.dumps(cluster.to_dict()),
                    now().isoformat(),
                    RunStatus.RUNNING.value,
                    os.getpid(),
                ),
            )
            run_id = int(cur.lastrowid or 0)
            db.executemany(
                "INSERT INTO migrations (run_id, idx, vm, source, destination, wave, mode, state)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (run_id, i, m.vm, m.source, m.destination, m.wave, modes[i], MigrationState.PENDING.value)
                    for i, m in enumerate(plan.migrations)
                ],
            )
            self._step(db, run_id, None, "run", "begin", None, {"migrations": len(plan.migrations)})
        return run_id

    def claim_run(self, run_id: int) -> None:
        """This process takes over an interrupted run."""
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET pid=?, status=? WHERE id=?", (os.getpid(), RunStatus.RUNNING.value, run_id)
            )
            self._step(db, run_id, None, "resume", "note", None, {"pid": os.getpid()})

    def finish_run(self, run_id: int, status: RunStatus) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET status=?, finished_at=? WHERE id=?",
                (status.value, now().isoformat(), run_id),
            )
            self._step(
                db,
                run_id,
                None,
                "run",
                "end",
                "ok" if status == RunStatus.DONE else "error",
                {"status": status.value},
            )

    def unfinished_run(self, plan_fp: str) -> Run | None:
        """The latest run of this plan that did not finish (crashed, killed or stopped), if any."""
        row = self._db.execute(
            "SELECT * FROM runs WHERE plan_fingerprint=? AND status != ? ORDER BY id DESC LIMIT 1",
            (plan_fp, RunStatus.DONE.value),
        ).fetchone()
        return None if row is None else self._run(row)

    def run(self, run_id: int) -> Run:
        row = self._db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise InputError(f"{self.path}: no run {run_id}")
        return self._run(row)

    def _run(self, row: tuple[Any, ...]) -> Run:
        rid, plan_fp, cluster_fp, cluster_json, started, _, status, pid = row
        return Run(
            id=rid,
            plan_fingerprint=plan_fp,
            cluster_fingerprint=cluster_fp,
            cluster=Cluster.from_dict(json.loads(cluster_json), f"{self.path}: run {rid}"),
            started_at=datetime.fromisoformat(started),
            status=RunStatus(status),
            pid=pid,
        )

    # -- migrations ----------------------------------------------------------------------------------

    def last_moves(self) -> dict[str, datetime]:
        rows = self._db.execute(
            "SELECT vm, MAX(finished_at) FROM migrations"
            " WHERE state=? AND finished_at IS NOT NULL GROUP BY vm",
            (MigrationState.DONE.value,),
        ).fetchall()
        return {vm: datetime.fromisoformat(at) for vm, at in rows}

    def migrations(self, run_id: int) -> list[MigrationRecord]:
        rows = self._db.execute(
            "SELECT idx, vm, source, destination, wave, mode, state, attempts, abort_at, rung, message,"
            " stats_json FROM migrations WHERE run_id=? ORDER BY idx",
            (run_id,),
        ).fetchall()
        return [
            MigrationRecord(
                idx=r[0],
                vm=r[1],
                source=r[2],
                destination=r[3],
                wave=r[4],
                mode=r[5],
                state=MigrationState(r[6]),
                attempts=r[7],
                abort_at=datetime.fromisoformat(r[8]) if r[8] else None,
                rung=r[9],
                message=r[10],
                stats=json.loads(r[11]),
            )
            for r in rows
        ]

    def migration_started(self, run_id: int, idx: int, abort_at: datetime, detail: Mapping[str, Any]) -> None:
        """Before the migration call: the record that it may be in flight, in the same transaction as
        the step's begin."""
        with self._tx() as db:
            db.execute(
                "UPDATE migrations SET state=?, attempts=attempts+1, started_at=?, finished_at=NULL,"
                " abort_at=?, rung=NULL, message='' WHERE run_id=? AND idx=?",
                (MigrationState.RUNNING.value, now().isoformat(), abort_at.isoformat(), run_id, idx),
            )
            self._step(db, run_id, idx, "migrate", "begin", None, detail)

    def migration_ended(
        self,
        run_id: int,
        idx: int,
        state: MigrationState,
        message: str = "",
        rung: str | None = None,
        stats: Mapping[str, Any] | None = None,
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE migrations SET state=?, finished_at=?, rung=?, message=?, stats_json=?"
                " WHERE run_id=? AND idx=?",
                (state.value, now().isoformat(), rung, scrub(message), _dumps(stats or {}), run_id, idx),
            )
            outcome = "ok" if state == MigrationState.DONE else "error"
            self._step(
                db,
                run_id,
                idx,
                "migrate",
                "end",
                outcome,
                {"state": state.value, "message": message, "rung": rung},
            )

    def set_mode(self, run_id: int, idx: int, mode: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE migrations SET mode=? WHERE run_id=? AND idx=?", (mode, run_id, idx))

    def reconciled(
        self,
        run_id: int,
        idx: int,
        state: MigrationState,
        message: str,
        stats: Mapping[str, Any] | None = None,
    ) -> None:
        """What resume found for a migration the journal left in flight."""
        with self._tx() as db:
            db.execute(
                "UPDATE migrations SET state=?, message=?, stats_json=CASE WHEN ?='{}' THEN stats_json ELSE ?"
                " END, finished_at=? WHERE run_id=? AND idx=?",
                (
                    state.value,
                    scrub(message),
                    _dumps(stats or {}),
                    _dumps(stats or {}),
                    now().isoformat(),
                    run_id,
                    idx,
                ),
            )
            self._step(db, run_id, idx, "reconcile", "note", None, {"state": state.value, "message": message})

    # -- steps ---------------------------------------------------------------------------------------

    @contextmanager
    def step(self, run_id: int, idx: int | None, name: str, **detail: Any) -> Iterator[dict[str, Any]]:
        """Record `name` before it runs and after: ok with whatever the body put in the yielded dict, or
        error with the exception's message (re-raised)."""
        with self._tx() as db:
            self._step(db, run_id, idx, name, "begin", None, detail)
        result: dict[str, Any] = {}
        try:
            yield result
        except BaseException as e:
            with self._tx() as db:
                self._step(
                    db, run_id, idx, name, "end", "error", {**result, "error": str(e) or type(e).__name__}
                )
            raise
        with self._tx() as db:
            self._step(db, run_id, idx, name, "end", "ok", result)

    def note(self, run_id: int, idx: int | None, name: str, **detail: Any) -> None:
        with self._tx() as db:
            self._step(db, run_id, idx, name, "note", None, detail)

    def steps(self, run_id: int, idx: int | None = None) -> list[StepRecord]:
        sql = "SELECT idx, at, step, phase, outcome, detail_json FROM steps WHERE run_id=?"
        args: tuple[Any, ...] = (run_id,)
        if idx is not None:
            sql += " AND idx=?"
            args += (idx,)
        rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [
            StepRecord(r[0], datetime.fromisoformat(r[1]), r[2], r[3], r[4], json.loads(r[5])) for r in rows
        ]

    @staticmethod
    def _step(
        db: sqlite3.Connection,
        run_id: int,
        idx: int | None,
        name: str,
        phase: str,
        outcome: str | None,
        detail: Mapping[str, Any],
    ) -> None:
        db.execute(
            "INSERT INTO steps (run_id, idx, at, step, phase, outcome, detail_json)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run_id, idx, now().isoformat(), name, phase, outcome, _dumps(detail)),
        )


def _dumps(obj: Any) -> str:
    return scrub(json.dumps(obj, sort_keys=True, default=str))
