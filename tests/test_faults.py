"""Faults during a live apply, on the real two-host bed: the destination daemon killed mid-migration, the
link cut mid-migration, a guest that dirties memory faster than the link carries it, the advisor itself
killed mid-plan and resumed, and a stale plan. Every test ends the same way: each VM runs on exactly one
host, defined nowhere else, and writes heartbeats there with no lost page.

Two guests serve all tests (booting costs more than migrating): `calm` dirties 5 MiB/s, `hot` 60 MiB/s,
each with a 128 MiB working set in 256 MiB. Each test moves a guest from wherever the last test left it.
The only help a test gives a fault is in the resume test, which slows the migration in flight with
libvirt's own call so that the advisor dies while it runs (said there).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from applybed import (
    advisor,
    bed_config,
    bed_plan,
    bed_settings,
    host_of,
    intact,
    migrate_begins,
    other,
    process_ended,
    wait_for_step,
    write_config,
)
from typer.testing import CliRunner

from advisor import files
from advisor.cli import app
from advisor.config import Config
from advisor.core import Plan
from advisor.execute.journal import Journal, MigrationState, RunStatus
from advisor.execute.live import ApplyResult, apply_live
from advisor.virt.inventory import NAMESPACE
from testbed.bed import Bed
from testbed.guest import GuestSpec

pytestmark = [pytest.mark.bed, pytest.mark.slow]

CALM = GuestSpec("calm", mem_mib=256, ws_mib=128, rate_mibps=5)
HOT = GuestSpec("hot", mem_mib=256, ws_mib=128, rate_mibps=60)
NAMES = {"a": "hosta", "b": "hostb"}


@pytest.fixture(scope="module")
def guests(bed: Bed) -> Iterator[Bed]:
    for spec in (CALM, HOT):
        bed.start_guest("a", spec)
    for spec in (CALM, HOT):
        bed.wait_heartbeats("a", spec.name, count=2)
    yield bed
    for letter in ("a", "b"):
        bed.destroy_all(letter)


def _in_thread(cfg: Config, plan: Plan, journal: Path) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = apply_live(cfg, plan, journal, False, lambda _: None)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _ended(thread: threading.Thread, out: dict[str, Any]) -> Callable[[], str | None]:
    """`wait_for_step`'s probe for an apply in a thread: its error, or the result it returned."""

    def ended() -> str | None:
        if thread.is_alive():
            return None
        if "error" in out:
            return f"raised {out['error']!r}"
        result: ApplyResult = out["result"]
        moves = [(m.vm, m.state) for m in result.migrations]
        return f"status {result.status}, migrations {moves}, problems {result.problems}"

    return ended


def _finished(thread: threading.Thread, out: dict[str, Any], timeout_s: float = 180) -> ApplyResult:
    thread.join(timeout_s)
    assert not thread.is_alive(), "the apply did not end"
    if "error" in out:
        raise out["error"]
    result: ApplyResult = out["result"]
    return result


def _set_labels(bed: Bed, vm: str, labels: dict[str, str]) -> None:
    """A VM's placement metadata as the libvirt collector reads it (None: removed)."""
    letter = host_of(bed, vm)
    dom = bed.connect(letter).lookupByName(vm)
    body = "".join(f'<label name="{k}">{v}</label>' for k, v in labels.items())
    xml = f"<placement>{body}</placement>" if labels else None
    flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml, "advisor" if xml else None, NAMESPACE, flags)


def test_stale_plan_is_refused_and_nothing_moves(guests: Bed, tmp_path: Path) -> None:
    bed = guests
    src = host_of(bed, "calm")
    settings = bed_settings(bed)
    plan = bed_plan(bed_config(bed), [("calm", NAMES[other(src)], 0)])
    _set_labels(bed, "calm", {"tier": "db"})  # the cluster changes after the plan was made
    try:
        files.write_plan(tmp_path / files.PLAN_FILE, plan)
        cfg_file = write_config(tmp_path / "advisor.toml", settings)
        result = CliRunner().invoke(app, ["apply", "-c", str(cfg_file), "-o", str(tmp_path)])
    finally:
        _set_labels(bed, "calm", {})
    assert result.exit_code == 2, result.output
    assert "stale plan" in result.output and "Traceback" not in result.output
    assert host_of(bed, "calm") == src
    assert not Journal(tmp_path / "journal.sqlite").migrations(1), "a refused plan started a run"


def test_destination_daemon_killed_mid_migration(guests: Bed, tmp_path: Path) -> None:
    bed = guests
    src = host_of(bed, "calm")
    dst = other(src)
    cfg = bed_config(bed, bandwidth_mibps=16)
    plan = bed_plan(cfg, [("calm", NAMES[dst], 0)])
    journal = tmp_path / "journal.sqlite"
    thread, out = _in_thread(cfg, plan, journal)
    wait_for_step(journal, 0, "migrate-to-uri", _ended(thread, out))
    time.sleep(1.5)  # ~24 MiB of ~140 sent
    bed.stop_daemon(dst, signal.SIGKILL)
    try:
        result = _finished(thread, out)
    finally:
        bed.restart_daemon(dst)
    move = result.migrations[0]
    assert result.status == RunStatus.STOPPED and move.state == MigrationState.FAILED, move
    assert intact(bed, "calm") == src
    assert host_of(bed, "calm") == src  # the restarted daemon dropped the half-received guest


def test_link_cut_mid_migration(guests: Bed, tmp_path: Path) -> None:
    bed = guests
    src = host_of(bed, "calm")
    dst = other(src)
    cfg = bed_config(bed, bandwidth_mibps=32, deadline_factor=1.0, deadline_slack_s=2, escalate_after_s=4)
    plan = bed_plan(cfg, [("calm", NAMES[dst], 0)])
    journal = tmp_path / "journal.sqlite"
    thread, out = _in_thread(cfg, plan, journal)
    wait_for_step(journal, 0, "migrate-to-uri", _ended(thread, out))
    time.sleep(1.5)
    bed.cut_link()
    try:
        time.sleep(8)
    finally:
        bed.restore_link()
    result = _finished(thread, out)
    move = result.migrations[0]
    # Either ending is correct (TCP may carry the stream on once the link is back, or the ladder aborts),
    # as long as the journal says where the VM is.
    assert move.state in (MigrationState.DONE, MigrationState.ABORTED, MigrationState.FAILED), move
    expected = dst if move.state == MigrationState.DONE else src
    assert intact(bed, "calm") == expected


def _hot_settings(**extra: Any) -> dict[str, Any]:
    """Without auto-converge, so that the later rungs are what ends it; 2 passes without progress start
    the ladder, 4 s per rung."""
    return {
        "bandwidth_mibps": 32,
        "auto_converge": False,
        "stall_passes": 2,
        "escalate_after_s": 4,
        "max_downtime_limit_ms": 1000,  # 128 MiB dirty at 32 MiB/s needs 4 s: still too little
        **extra,
    }


def test_non_converging_guest_is_aborted_and_stays_on_its_source(guests: Bed, tmp_path: Path) -> None:
    bed = guests
    src = host_of(bed, "hot")
    cfg = bed_config(bed, **_hot_settings())
    plan = bed_plan(cfg, [("hot", NAMES[other(src)], 0)])
    result = apply_live(cfg, plan, tmp_path / "journal.sqlite", False, lambda _: None)
    move = result.migrations[0]
    assert move.state == MigrationState.ABORTED and move.rung == "abort", move
    journal = Journal(tmp_path / "journal.sqlite")
    steps = journal.steps(1, 0)
    rungs = [s.step for s in steps if s.step.startswith("rung:") and s.phase == "begin"]
    assert rungs == ["rung:downtime", "rung:abort"]
    begun = next(s for s in steps if s.step == "migrate" and s.phase == "begin").detail
    ended = next(s for s in steps if s.step == "migrate-to-uri" and s.phase == "end").detail
    assert begun["predicted_converges"] is False
    # the ladder ends it by its hard deadline (plus the time the abort takes to land), not never
    assert ended["elapsed_s"] <= begun["abort_s"] + cfg.apply.abort_wait_s
    assert intact(bed, "hot") == src


def test_non_converging_guest_moves_by_postcopy_where_its_policy_allows(guests: Bed, tmp_path: Path) -> None:
    bed = guests
    src = host_of(bed, "hot")
    dst = other(src)
    _set_labels(bed, "hot", {"postcopy": "allow"})  # [apply] allow_postcopy stays false: the VM's label
    cfg = bed_config(bed, **_hot_settings())
    plan = bed_plan(cfg, [("hot", NAMES[dst], 0)])
    result = apply_live(cfg, plan, tmp_path / "journal.sqlite", False, lambda _: None)
    move = result.migrations[0]
    assert move.state == MigrationState.DONE and move.rung == "postcopy", move
    assert move.stats.get("operation") == libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT  # the source's event
    assert intact(bed, "hot", beats=4) == dst  # post-copy pulled the pages it lacked: none lost


def test_advisor_killed_mid_plan_then_resumed_repeats_no_migration(guests: Bed, tmp_path: Path) -> None:
    bed = guests
    start = host_of(bed, "calm")
    there, back = NAMES[other(start)], NAMES[start]
    settings = bed_settings(bed, bandwidth_mibps=32, deadline_factor=2.0)  # abort far off: ~36 s
    plan = bed_plan(bed_config(bed), [("calm", there, 0), ("calm", back, 1), ("calm", there, 2)])
    files.write_plan(tmp_path / files.PLAN_FILE, plan)
    cfg_file = write_config(tmp_path / "advisor.toml", settings)
    journal = tmp_path / "journal.sqlite"

    first = advisor("apply", "-c", str(cfg_file), "-o", str(tmp_path))
    try:
        wait_for_step(journal, 1, "migrate-to-uri", process_ended(first))
        dom = bed.connect(other(start)).lookupByName("calm")  # wave 1's source
        while dom.jobStats().get("memory_iteration", 0) < 1:  # copying (a speed set earlier is overridden)
            time.sleep(0.1)
        # Help for the fault, not a fake: hold the real job in flight (libvirt's own bandwidth call on the
        # source) so that it still runs when the advisor dies and when the resumed advisor looks at it.
        dom.migrateSetMaxSpeed(1, 0)
        time.sleep(0.5)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    assert first.returncode == -signal.SIGKILL
    assert dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE, "the migration stopped with the advisor"

    resumed = advisor("apply", "--resume", "-c", str(cfg_file), "-o", str(tmp_path))
    try:
        wait_for_step(journal, 1, "reconcile-job", process_ended(resumed))
    finally:
        dom.migrateSetMaxSpeed(32, 0)  # let the job finish while the resumed advisor waits for it
    stdout, stderr = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, stdout + stderr
    assert migrate_begins(journal) == {0: 1, 1: 1, 2: 1}, "a migration was repeated"
    records = Journal(journal).migrations(1)
    assert [r.state for r in records] == [MigrationState.DONE] * 3
    assert "reconciling calm" in stderr
    settled = [
        s.detail for s in Journal(journal).steps(1, 1) if s.step == "reconcile-job" and s.phase == "end"
    ]
    assert settled == [{"job": "waited for the job to end"}]
    assert intact(bed, "calm") == other(start)
