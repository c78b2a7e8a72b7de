"""After a crash: settle every migration the journal left in flight with libvirt's view, before the rest
of the plan runs. Where is the domain now, and is a job still running?

A peer-to-peer migration is carried out by the source's libvirtd, so it goes on after the client that
started it dies: a job still running is waited for, and aborted at the deadline the journal recorded
for it (unless it switched to post-copy, which cannot be aborted). Then:

* running on the destination only: the move happened; it is done and will not be repeated;
* running on the source only: it did not; it runs again with the rest of the plan;
* a cold migration found shut off: started where its definition is (the destination: done; the source:
  it runs again); defined on both hosts: left for a person;
* anything else (on both, on neither, a host not answering): unknown, named, and the plan stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from advisor.config import ApplySettings
from advisor.execute.hosts import HostPool
from advisor.execute.journal import Journal, MigrationRecord, MigrationState, now, scrub
from advisor.execute.migrate import locate
from advisor.execute.preflight import Mode
from advisor.virt.connection import require_libvirt

POLL_S = 0.5


def reconcile(
    journal: Journal,
    run_id: int,
    pool: HostPool,
    settings: ApplySettings,
    progress: Callable[[str], None],
) -> list[str]:
    """Settle the in-flight migrations of a run; returns what could not be settled (empty: all were)."""
    problems = []
    for r in journal.migrations(run_id):
        if r.state not in (MigrationState.RUNNING, MigrationState.UNKNOWN):
            continue
        progress(f"reconciling {r.vm} ({r.source} -> {r.destination}, {r.mode}, was {r.state.value})")
        with journal.step(run_id, r.idx, "reconcile-job") as record:
            record["job"] = _settle_job(pool, r, settings)
        state, message, stats = _verdict(journal, run_id, pool, r)
        journal.reconciled(run_id, r.idx, state, message, stats)
        progress(f"  {r.vm}: {state.value}: {message}")
        if state == MigrationState.UNKNOWN:
            problems.append(f"VM {r.vm}: {message}")
    return problems


def _settle_job(pool: HostPool, r: MigrationRecord, settings: ApplySettings) -> str:
    """Wait for a migration job still running on the source; abort it once past its deadline."""
    lv = require_libvirt()
    conn = pool.try_conn(r.source)
    if conn is None:
        return "source unreachable"
    try:
        dom = conn.lookupByName(r.vm)
    except lv.libvirtError:
        return "no domain on the source"
    aborted: float | None = None
    waited = "no job"
    while _job_running(dom):
        waited = "waited for the job to end"
        if aborted is None and _past(r.abort_at) and not _in_postcopy(dom):
            try:
                dom.abortJob()
                waited = "aborted the job at its deadline"
            except lv.libvirtError:
                pass
            aborted = time.monotonic()
        if aborted is not None and time.monotonic() - aborted > settings.abort_wait_s:
            return "the aborted job did not end"
        time.sleep(POLL_S)
    return waited


def _verdict(
    journal: Journal, run_id: int, pool: HostPool, r: MigrationRecord
) -> tuple[MigrationState, str, dict[str, Any]]:
    where = locate(pool, r.vm, r.source, r.destination)
    if where == r.destination:
        return (
            MigrationState.DONE,
            f"found running on {r.destination}: the move happened",
            _completed(pool, r),
        )
    if where == r.source:
        return MigrationState.PENDING, f"found running on {r.source}: the move did not happen", {}
    if r.mode == Mode.COLD:
        return _cold_verdict(journal, run_id, pool, r, where)
    return MigrationState.UNKNOWN, where, {}


def _cold_verdict(
    journal: Journal, run_id: int, pool: HostPool, r: MigrationRecord, where: str
) -> tuple[MigrationState, str, dict[str, Any]]:
    """A cold migration stopped between shutdown and start: start the VM where its definition is."""
    defined = {h: _defined_inactive(pool, h, r.vm) for h in (r.source, r.destination)}
    if defined[r.source] and defined[r.destination]:
        return (
            MigrationState.UNKNOWN,
            f"VM {r.vm} is defined, shut off, on both {r.source} and {r.destination}",
            {},
        )
    found = [(h, dom) for h, dom in defined.items() if dom is not None]
    if not found:
        return MigrationState.UNKNOWN, where, {}
    host, dom = found[0]
    lv = require_libvirt()
    try:
        with journal.step(run_id, r.idx, "start", host=host):
            dom.create()
    except lv.libvirtError as e:
        return MigrationState.UNKNOWN, scrub(f"found shut off on {host}; starting it failed: {e}"), {}
    if host == r.destination:
        return MigrationState.DONE, f"found shut off on {host} and started: the move happened", {}
    return MigrationState.PENDING, f"found shut off on {host} and started again: the move did not happen", {}


def _defined_inactive(pool: HostPool, host: str, vm: str) -> Any | None:
    lv = require_libvirt()
    conn = pool.try_conn(host)
    if conn is None:
        return None
    try:
        dom = conn.lookupByName(vm)
    except lv.libvirtError:
        return None
    return None if dom.isActive() else dom


def _job_running(dom: Any) -> bool:
    lv = require_libvirt()
    try:
        return int(dom.jobInfo()[0]) != lv.VIR_DOMAIN_JOB_NONE
    except lv.libvirtError:
        return False  # the domain went away: the job is over


def _in_postcopy(dom: Any) -> bool:
    lv = require_libvirt()
    try:
        state, reason = dom.state()
    except lv.libvirtError:
        return False
    return bool(state == lv.VIR_DOMAIN_PAUSED and reason == lv.VIR_DOMAIN_PAUSED_POSTCOPY)


def _past(at: datetime | None) -> bool:
    return at is not None and now() >= at


def _completed(pool: HostPool, r: MigrationRecord) -> dict[str, Any]:
    lv = require_libvirt()
    conn = pool.try_conn(r.destination)
    try:
        stats = conn.lookupByName(r.vm).jobStats(lv.VIR_DOMAIN_JOB_STATS_COMPLETED) if conn else {}
    except lv.libvirtError:
        return {}
    return {str(k): v for k, v in stats.items() if isinstance(v, int | float | str)} if len(stats) > 1 else {}
