"""The apply journal: every step recorded before and after it happens, state that survives SIGKILL of the
writer, the run a resume picks up, and no URI password ever stored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advisor.core import VM, Bounds, Cluster, Host, Migration, MigrationReason, Plan, PlanFigures, PlanStatus
from advisor.errors import InputError
from advisor.execute.journal import Journal, MigrationState, RunStatus, plan_fingerprint, scrub

CREATED = datetime(2026, 1, 1, tzinfo=UTC)


def _cluster() -> Cluster:
    return Cluster(
        "c", (Host("h1", 8, 8192), Host("h2", 8, 8192)), (VM("a", "h1", 1, 1024), VM("b", "h1", 1, 512))
    )


def _plan(cluster: Cluster) -> Plan:
    fig = PlanFigures(1, 1.0, 0.1, 0.1, 0)
    moves = (
        Migration("a", "h1", "h2", MigrationReason.BALANCE, 0, 5, 10, 1024, True),
        Migration("b", "h1", "h2", MigrationReason.BALANCE, 1, 5, 10, 512, True),
    )
    return Plan(
        "c",
        cluster.fingerprint(),
        "f",
        CREATED,
        "balance",
        PlanStatus.FEASIBLE,
        "t",
        {"a": "h2", "b": "h2"},
        moves,
        (),
        fig,
        fig,
        Bounds(1, 1, 1.0),
    )


def test_a_run_records_migrations_and_steps_before_and_after(tmp_path: Path) -> None:
    cluster = _cluster()
    plan = _plan(cluster)
    journal = Journal(tmp_path / "j.sqlite")
    run = journal.begin_run(plan, cluster, {0: "live", 1: "cold"})
    assert [(r.vm, r.mode, r.state) for r in journal.migrations(run)] == [
        ("a", "live", MigrationState.PENDING),
        ("b", "cold", MigrationState.PENDING),
    ]
    abort_at = datetime.now(UTC) + timedelta(seconds=30)
    journal.migration_started(run, 0, abort_at, {"mode": "live"})
    started = journal.migrations(run)[0]
    assert started.state == MigrationState.RUNNING and started.attempts == 1 and started.abort_at == abort_at
    with journal.step(run, 0, "rung:downtime", elapsed_s=12.0) as record:
        record["ok"] = True
    with pytest.raises(RuntimeError), journal.step(run, 0, "rung:abort"):
        raise RuntimeError("no job")
    journal.migration_ended(run, 0, MigrationState.ABORTED, "aborted", "abort", {"memory_iteration": 5})
    steps = [(s.step, s.phase, s.outcome) for s in journal.steps(run, 0)]
    assert steps == [
        ("migrate", "begin", None),
        ("rung:downtime", "begin", None),
        ("rung:downtime", "end", "ok"),
        ("rung:abort", "begin", None),
        ("rung:abort", "end", "error"),
        ("migrate", "end", "error"),
    ]
    assert journal.steps(run, 0)[4].detail == {"error": "no job"}
    ended = journal.migrations(run)[0]
    assert (ended.state, ended.rung, ended.stats) == (
        MigrationState.ABORTED,
        "abort",
        {"memory_iteration": 5},
    )
    assert journal.run(run).cluster == cluster


def test_resume_finds_the_latest_unfinished_run_of_the_same_plan(tmp_path: Path) -> None:
    cluster = _cluster()
    plan = _plan(cluster)
    journal = Journal(tmp_path / "j.sqlite")
    fp = plan_fingerprint(plan)
    assert journal.unfinished_run(fp) is None
    first = journal.begin_run(plan, cluster, {0: "live", 1: "live"})
    journal.finish_run(first, RunStatus.DONE)
    assert journal.unfinished_run(fp) is None
    second = journal.begin_run(plan, cluster, {0: "live", 1: "live"})
    journal.finish_run(second, RunStatus.STOPPED)
    found = journal.unfinished_run(fp)
    assert found is not None and found.id == second and found.status == RunStatus.STOPPED
    other = _plan(cluster.with_placement({"b": "h2"}))
    assert journal.unfinished_run(plan_fingerprint(other)) is None
    journal.claim_run(second)
    assert journal.run(second).status == RunStatus.RUNNING and journal.run(second).pid == os.getpid()


def test_reconciled_state_keeps_stats_unless_new_ones_come(tmp_path: Path) -> None:
    cluster = _cluster()
    journal = Journal(tmp_path / "j.sqlite")
    run = journal.begin_run(_plan(cluster), cluster, {0: "live", 1: "live"})
    journal.migration_ended(run, 0, MigrationState.UNKNOWN, "lost track", stats={"memory_iteration": 3})
    journal.reconciled(run, 0, MigrationState.DONE, "found on h2")
    assert journal.migrations(run)[0].stats == {"memory_iteration": 3}
    journal.reconciled(run, 0, MigrationState.DONE, "found on h2", {"downtime": 40})
    record = journal.migrations(run)[0]
    assert (record.state, record.message, record.stats) == (
        MigrationState.DONE,
        "found on h2",
        {"downtime": 40},
    )


WRITER = """
import os, signal, sys
from datetime import UTC, datetime
sys.path.insert(0, {tests!r})
from test_journal import _cluster, _plan
from advisor.execute.journal import Journal
journal = Journal(__import__("pathlib").Path({path!r}))
cluster = _cluster()
run = journal.begin_run(_plan(cluster), cluster, {{0: "live", 1: "live"}})
journal.migration_started(run, 0, datetime.now(UTC), {{"mode": "live"}})
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_state_written_before_a_sigkill_is_there_after_it(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    code = WRITER.format(tests=str(Path(__file__).parent), path=str(path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    journal = Journal(path)
    run = journal.unfinished_run(plan_fingerprint(_plan(_cluster())))
    assert run is not None and run.status == RunStatus.RUNNING
    assert [r.state for r in journal.migrations(run.id)] == [MigrationState.RUNNING, MigrationState.PENDING]
    assert [s.phase for s in journal.steps(run.id, 0)] == ["begin"]  # in flight when the writer died


def test_not_a_journal_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "j.sqlite"
    bad.write_text("this is not sqlite " * 100)
    with pytest.raises(InputError, match="not an apply journal"):
        Journal(bad)


secrets = st.text(
    alphabet=st.characters(whitelist_categories=("L", "N"), whitelist_characters="-_.!~*"),
    min_size=4,
    max_size=20,
)


@settings(max_examples=50, deadline=None)
@given(password=secrets, scheme=st.sampled_from(["qemu+ssh", "qemu+tls", "qemu+tcp", "https"]))
def test_no_uri_password_reaches_the_file(
    tmp_path_factory: pytest.TempPathFactory, password: str, scheme: str
) -> None:
    path = tmp_path_factory.mktemp("j") / "j.sqlite"
    uri = f"{scheme}://ops:{password}@hv01.example:16514/system"
    assert scrub(f"failed: {uri}") == f"failed: {scheme}://ops@hv01.example:16514/system"
    cluster = _cluster()
    journal = Journal(path)
    run = journal.begin_run(_plan(cluster), cluster, {0: "live", 1: "live"})
    with pytest.raises(RuntimeError), journal.step(run, 0, "migrate-to-uri", destination=uri):
        raise RuntimeError(f"cannot reach {uri}")
    journal.migration_ended(run, 0, MigrationState.FAILED, f"unable to connect to {uri}", stats={"uri": uri})
    journal.note(run, None, "note", detail=[uri])
    journal.close()
    stored = b"".join(p.read_bytes() for p in path.parent.glob("j.sqlite*"))
    assert f":{password}@".encode() not in stored
    assert json.dumps(Journal(path).migrations(run)[0].stats).count("ops@hv01") == 1


def test_last_moves_are_the_finish_times_of_completed_migrations_only(tmp_path: Path) -> None:
    from advisor.execute.journal import last_moves

    assert last_moves(tmp_path / "none.sqlite") == {}
    cluster = _cluster()
    journal = Journal(tmp_path / "j.sqlite")
    run = journal.begin_run(_plan(cluster), cluster, {0: "live", 1: "live"})
    for idx in (0, 1):
        journal.migration_started(run, idx, datetime.now(UTC) + timedelta(seconds=30), {})
    journal.migration_ended(run, 0, MigrationState.DONE, "done", "", {})
    journal.migration_ended(run, 1, MigrationState.ABORTED, "aborted", "abort", {})
    journal.close()
    moves = last_moves(tmp_path / "j.sqlite")
    assert list(moves) == ["a"]
    assert abs((datetime.now(UTC) - moves["a"]).total_seconds()) < 60
