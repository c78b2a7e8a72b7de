"""One live migration, peer-to-peer: a worker thread runs the blocking `migrateToURI3`, this thread polls
the job's statistics, climbs the escalation ladder (ladder.py) and, once the call returns, asks libvirt
where the VM is now instead of trusting the call's result alone.

Final statistics come from the source's JOB_COMPLETED event (the only record after post-copy) or the
destination's completed job; after an abort there are none, so the last sample before it is kept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from advisor.config import ApplySettings
from advisor.execute.hosts import HostPool
from advisor.execute.journal import MigrationState, scrub
from advisor.execute.ladder import Escalation, Ladder, Rung, VMPolicy
from advisor.virt.connection import require_libvirt

MIB = 1024 * 1024
COMPLETION_WAIT_S = 3.0  # the JOB_COMPLETED event trails the call's return

Step = Callable[..., AbstractContextManager[dict[str, Any]]]  # journal.step bound to the run and migration


@dataclass(frozen=True)
class LiveJob:
    vm: str
    source: str
    destination: str
    policy: VMPolicy
    ladder: Ladder
    disks: tuple[str, ...] = ()  # local disks to copy (storage migration), by guest device name


@dataclass
class Outcome:
    state: MigrationState
    message: str = ""
    rung: str | None = None  # the highest rung of the ladder it reached
    stats: dict[str, Any] = field(default_factory=dict)


def migrate_live(pool: HostPool, job: LiveJob, settings: ApplySettings, step: Step) -> Outcome:
    lv = require_libvirt()
    src = pool.conn(job.source)
    dom = src.lookupByName(job.vm)
    with step("set-downtime", ms=job.policy.downtime_ms):
        dom.migrateSetMaxDowntime(round(job.policy.downtime_ms))
    flags, params = _flags_and_params(pool, job, settings, dom.isPersistent())
    pool.forget_completion(job.source, job.vm)
    failure: list[str] = []

    def run() -> None:
        try:
            dom.migrateToURI3(pool.peer_uri(job.destination), params, flags)
        except lv.libvirtError as e:
            failure.append(e.get_error_message() or str(e))
        except Exception as e:  # noqa: BLE001 - reported as the migration's outcome, not lost in a thread
            failure.append(f"{type(e).__name__}: {e}")

    worker = threading.Thread(target=run, daemon=True, name=f"migrate-{job.vm}")
    escalation = Escalation(job.ladder)
    last: dict[str, Any] = {}
    aborted_at: float | None = None
    start = time.monotonic()
    with step("migrate-to-uri", flags=flags, params=_shown(params), destination=job.destination) as record:
        worker.start()
        while worker.is_alive():
            worker.join(settings.poll_s)
            if not worker.is_alive():
                break
            elapsed = time.monotonic() - start
            last = _sample(dom) or last
            if aborted_at is not None:
                if elapsed - aborted_at > settings.abort_wait_s:
                    record["timed_out"] = True
                    return Outcome(
                        MigrationState.UNKNOWN,
                        f"the aborted job had not ended {settings.abort_wait_s:g} s later",
                        Rung.ABORT.value,
                        last,
                    )
                continue
            remaining = last.get("memory_remaining")
            rung = escalation.observe(
                elapsed, last.get("memory_iteration"), None if remaining is None else remaining / MIB
            )
            if rung is not None:
                if not _climb(dom, rung, job, elapsed, last, step):
                    escalation.refuse(rung)
                if rung == Rung.ABORT:
                    aborted_at = elapsed
        record.update(
            elapsed_s=round(time.monotonic() - start, 2), error=scrub(failure[0]) if failure else ""
        )
    rung_reached = escalation.fired[-1][1].value if escalation.fired else None
    where = locate(pool, job.vm, job.source, job.destination)
    if where == job.destination:
        stats = pool.completion(job.source, job.vm, COMPLETION_WAIT_S) or _completed_on(pool, job) or last
        note = f" (the call reported: {failure[0]})" if failure else ""
        return Outcome(
            MigrationState.DONE, f"running on {job.destination}{note}", rung_reached, _plain(stats)
        )
    if where == job.source:
        state = MigrationState.ABORTED if aborted_at is not None else MigrationState.FAILED
        message = failure[0] if failure else "the call returned but the VM still runs on its source"
        return Outcome(state, scrub(message), rung_reached, _plain(last))
    message = f"{where}; the call reported: {failure[0] if failure else 'success'}"
    return Outcome(MigrationState.UNKNOWN, scrub(message), rung_reached, _plain(last))


def locate(pool: HostPool, vm: str, source: str, destination: str) -> str:
    """`source` or `destination` when the VM runs on exactly that one of the two (a daemon that does not
    answer hides nothing: a source that still runs the VM means the move did not finish, whatever the
    dead destination holds, and its daemon kills an unfinished incoming VM when it restarts); otherwise
    a sentence saying what was found."""
    found = {h: _active_state(pool, h, vm) for h in (source, destination)}
    running = require_libvirt().VIR_DOMAIN_RUNNING
    src, dst = found[source], found[destination]
    if src == running and dst in (None, "unreachable"):
        return source
    if dst == running and src is None:
        return destination
    shown = ", ".join(f"{h}: {_state_name(s)}" for h, s in found.items())
    return f"VM {vm} is not running on exactly one of its hosts ({shown})"


def _active_state(pool: HostPool, host: str, vm: str) -> int | str | None:
    lv = require_libvirt()
    conn = pool.try_conn(host)
    if conn is None:
        return "unreachable"
    try:
        dom = conn.lookupByName(vm)
        return int(dom.state()[0]) if dom.isActive() else None
    except lv.libvirtError as e:
        return None if e.get_error_code() == lv.VIR_ERR_NO_DOMAIN else "unreachable"


def _state_name(state: int | str | None) -> str:
    if state is None:
        return "not active"
    if isinstance(state, str):
        return state
    names = {1: "running", 2: "blocked", 3: "paused", 4: "shutting down", 5: "shut off", 6: "crashed"}
    return names.get(state, f"state {state}")


def _flags_and_params(
    pool: HostPool, job: LiveJob, settings: ApplySettings, persistent: bool
) -> tuple[int, dict[str, Any]]:
    lv = require_libvirt()
    flags = lv.VIR_MIGRATE_LIVE | lv.VIR_MIGRATE_PEER2PEER | lv.VIR_MIGRATE_ABORT_ON_ERROR
    params: dict[str, Any] = {lv.VIR_MIGRATE_PARAM_BANDWIDTH: max(1, round(settings.bandwidth_mibps))}
    if persistent:
        flags |= lv.VIR_MIGRATE_PERSIST_DEST | lv.VIR_MIGRATE_UNDEFINE_SOURCE
    stream = pool.migration_uri(job.destination)
    if stream:
        params[lv.VIR_MIGRATE_PARAM_URI] = stream
    if settings.auto_converge:
        flags |= lv.VIR_MIGRATE_AUTO_CONVERGE
        params[lv.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL] = settings.auto_converge_initial_pct
        params[lv.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT] = settings.auto_converge_increment_pct
    if job.policy.postcopy:
        flags |= lv.VIR_MIGRATE_POSTCOPY  # only enables it; the ladder's rung switches
        if settings.postcopy_bandwidth_mibps:
            params[lv.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY] = max(1, round(settings.postcopy_bandwidth_mibps))
    if job.disks:
        flags |= lv.VIR_MIGRATE_NON_SHARED_DISK
        params[lv.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(job.disks)
    return flags, params


def _climb(dom: Any, rung: Rung, job: LiveJob, elapsed: float, last: dict[str, Any], step: Step) -> bool:
    """One rung; a call libvirt refuses (the job ended meanwhile, or post-copy not possible yet) is
    journalled as an error and returns False."""
    lv = require_libvirt()
    detail = {
        "elapsed_s": round(elapsed, 2),
        "iteration": last.get("memory_iteration"),
        "remaining_mib": round(last.get("memory_remaining", 0) / MIB, 1),
    }
    try:
        with step(f"rung:{rung.value}", **detail):
            if rung == Rung.DOWNTIME:
                dom.migrateSetMaxDowntime(round(job.policy.downtime_limit_ms))
            elif rung == Rung.POSTCOPY:
                dom.migrateStartPostCopy(0)
            else:
                dom.abortJob()
    except lv.libvirtError:
        return False
    return True


def _sample(dom: Any) -> dict[str, Any]:
    """The running job's statistics, or {} when there is no job (or it is being cancelled: zeros)."""
    lv = require_libvirt()
    try:
        stats = dom.jobStats()
    except lv.libvirtError:
        return {}
    if stats.get("type") not in (lv.VIR_DOMAIN_JOB_BOUNDED, lv.VIR_DOMAIN_JOB_UNBOUNDED):
        return {}
    return dict(stats)


def _completed_on(pool: HostPool, job: LiveJob) -> dict[str, Any]:
    lv = require_libvirt()
    try:
        conn = pool.conn(job.destination)
        stats = conn.lookupByName(job.vm).jobStats(lv.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except Exception:  # noqa: BLE001 - statistics are a nicety; the move itself is verified already
        return {}
    return dict(stats) if len(stats) > 1 else {}


def _plain(stats: dict[str, Any]) -> dict[str, Any]:
    return {str(k): v for k, v in stats.items() if isinstance(v, int | float | str)}


def _shown(params: dict[str, Any]) -> dict[str, Any]:
    return {k: scrub(v) if isinstance(v, str) else v for k, v in params.items()}
