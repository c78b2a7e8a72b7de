"""The live apply: a plan carried out on the hosts of [collect.libvirt], wave by wave, each wave's
migrations `apply.concurrency` at a time, every step in the journal before and after it happens.

A migration that fails or is aborted leaves its VM running on its source; the wave finishes, later waves
do not start (they may count on it), and the run is `stopped`: `--resume` retries what is left.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from advisor.config import Config
from advisor.core import Cluster, Migration, Plan
from advisor.errors import InputError
from advisor.execute.cold import migrate_cold
from advisor.execute.disks import local_disks
from advisor.execute.hosts import HostPool
from advisor.execute.journal import (
    Journal,
    MigrationRecord,
    MigrationState,
    RunStatus,
    now,
    plan_fingerprint,
    scrub,
)
from advisor.execute.ladder import ladder_for, vm_policy
from advisor.execute.migrate import LiveJob, Outcome, migrate_live
from advisor.execute.preflight import (
    Mode,
    capacity_problems,
    modes,
    plan_problems,
    refuse,
    resume_problems,
    stale_reason,
)
from advisor.execute.resume import reconcile
from advisor.migration import MigrationCorrection, configured_correction, predict_migration
from advisor.virt.connection import require_libvirt
from advisor.virt.inventory import host_connections, read_live

Progress = Callable[[str], None]
APPLY_FILE = "apply.json"
COLD_ALLOWANCE_S = 600.0  # a cold migration's abort_at: it has no job to abort; only reports use it


@dataclass(frozen=True)
class ApplyResult:
    run_id: int
    status: RunStatus
    journal: Path
    migrations: list[MigrationRecord]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return self.status == RunStatus.DONE

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "status": self.status.value,
            "journal": str(self.journal),
            "problems": list(self.problems),
            "migrations": [
                {
                    "vm": r.vm,
                    "source": r.source,
                    "destination": r.destination,
                    "wave": r.wave,
                    "mode": r.mode,
                    "state": r.state.value,
                    "attempts": r.attempts,
                    "rung": r.rung,
                    "message": r.message,
                    "stats": r.stats,
                }
                for r in self.migrations
            ],
        }


def apply_live(cfg: Config, plan: Plan, journal_file: Path, resume: bool, progress: Progress) -> ApplyResult:
    """Apply (or with `resume` finish) `plan`. Refusals raise InputError before anything moves."""
    if not cfg.collect.libvirt.hosts:
        raise InputError(
            "collect.libvirt.hosts is empty: a live apply migrates on the hosts listed there "
            "(--dry-run checks the plan without them)"
        )
    require_libvirt()
    correction = configured_correction(cfg.migration.measurements)  # a bad file is refused before any move
    hosts = host_connections(cfg.collect.libvirt, cfg.power)
    pool = HostPool(hosts, cfg.apply.peer_uris, cfg.apply.migration_uris, cfg.collect.libvirt.timeout_s)
    journal = Journal(journal_file)
    try:
        progress(f"connecting to {len(hosts)} host(s)")
        conns = pool.open_all()
        if resume:
            run_id, cluster, problems = _resume(cfg, plan, journal, pool, conns, progress)
        else:
            run_id, cluster = _start(cfg, plan, journal, pool, conns, progress)
            problems = []
        if not problems:
            _run_waves(cfg, plan, journal, run_id, pool, cluster, progress, correction)
        else:
            journal.finish_run(run_id, RunStatus.STOPPED)
        run = journal.run(run_id)
        return ApplyResult(run_id, run.status, journal_file, journal.migrations(run_id), problems)
    finally:
        journal.close()
        pool.close()


def _start(
    cfg: Config, plan: Plan, journal: Journal, pool: HostPool, conns: Mapping[str, Any], progress: Progress
) -> tuple[int, Cluster]:
    earlier = journal.unfinished_run(plan_fingerprint(plan))
    if earlier is not None:
        raise InputError(
            f"{journal.path}: run {earlier.id} of this plan did not finish ({earlier.status.value}); "
            "`advisor apply --resume` finishes it"
        )
    progress("reading the live cluster")
    live = read_live(conns, list(pool.hosts.values()), cfg.collect.libvirt)
    stale = stale_reason(plan, live.cluster)
    if stale:
        raise InputError(stale)
    running = {vm: s == require_libvirt().VIR_DOMAIN_RUNNING for vm, s in live.states.items()}
    refuse(plan_problems(plan, live.cluster, running) + capacity_problems(plan, live.cluster))
    how = modes(plan, live.cluster, live.domains, conns)
    run_id = journal.begin_run(plan, live.cluster, how)
    journal.note(run_id, None, "preflight", cluster=live.cluster.fingerprint(), modes=dict(how))
    progress(f"preflight ok: run {run_id}, {len(plan.migrations)} migration(s) in {len(plan.waves)} wave(s)")
    return run_id, live.cluster


def _resume(
    cfg: Config, plan: Plan, journal: Journal, pool: HostPool, conns: Mapping[str, Any], progress: Progress
) -> tuple[int, Cluster, list[str]]:
    run = journal.unfinished_run(plan_fingerprint(plan))
    if run is None:
        raise InputError(f"{journal.path}: no unfinished run of this plan to resume")
    if run.status == RunStatus.RUNNING and run.pid != os.getpid() and _alive(run.pid):
        raise InputError(f"{journal.path}: run {run.id} is still being applied by process {run.pid}")
    journal.claim_run(run.id)
    progress(f"resuming run {run.id}")
    with journal.step(run.id, None, "reconcile") as record:
        problems = reconcile(journal, run.id, pool, cfg.apply, progress)
        record["problems"] = problems
    if problems:
        return run.id, run.cluster, problems
    live = read_live(conns, list(pool.hosts.values()), cfg.collect.libvirt)
    records = journal.migrations(run.id)
    done = [r.idx for r in records if r.state == MigrationState.DONE]
    running = {vm: s == require_libvirt().VIR_DOMAIN_RUNNING for vm, s in live.states.items()}
    left = [plan.migrations[r.idx] for r in records if r.state != MigrationState.DONE]
    with journal.step(run.id, None, "preflight", resume=True):
        refuse(
            resume_problems(run.cluster, live.cluster, records)
            + plan_problems(_only(plan, left), live.cluster, running)
            + capacity_problems(plan, run.cluster, done)
        )
    return run.id, run.cluster, []


def _run_waves(
    cfg: Config,
    plan: Plan,
    journal: Journal,
    run_id: int,
    pool: HostPool,
    cluster: Cluster,
    progress: Progress,
    correction: MigrationCorrection | None,
) -> None:
    records = {r.idx: r for r in journal.migrations(run_id)}
    waves: dict[int, list[int]] = {}
    for i, m in enumerate(plan.migrations):
        waves.setdefault(m.wave, []).append(i)
    for wave in sorted(waves):
        todo = [i for i in waves[wave] if records[i].state != MigrationState.DONE]
        if not todo:
            continue
        progress(f"wave {wave}: {len(todo)} migration(s)")
        with journal.step(run_id, None, "wave", wave=wave, migrations=todo) as record:
            workers = min(cfg.apply.concurrency, len(todo))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="apply") as pool_threads:
                states = list(
                    pool_threads.map(
                        lambda i: _one(
                            cfg,
                            journal,
                            run_id,
                            i,
                            plan.migrations[i],
                            records[i],
                            pool,
                            cluster,
                            progress,
                            correction,
                        ),
                        todo,
                    )
                )
            record["states"] = [s.value for s in states]
        if any(s != MigrationState.DONE for s in states):
            journal.finish_run(run_id, RunStatus.STOPPED)
            progress(f"stopped after wave {wave}: not every migration of it succeeded")
            return
    journal.finish_run(run_id, RunStatus.DONE)


def _one(
    cfg: Config,
    journal: Journal,
    run_id: int,
    idx: int,
    m: Migration,
    record: MigrationRecord,
    pool: HostPool,
    cluster: Cluster,
    progress: Progress,
    correction: MigrationCorrection | None = None,
) -> MigrationState:
    """One migration, start to verdict; whatever happens ends in the journal. Its deadlines come from the
    migration model (with `correction`, the learned one) at the dirty rate measured just before; it runs
    with auto-converge from the start when [apply] allows it, so one predicted not to converge has it."""
    lv = require_libvirt()
    settings = cfg.apply
    step = _bound(journal, run_id, idx)
    vm = cluster.vm_by_name[m.vm]
    mode = Mode(record.mode)
    progress(f"  {m.vm}: {m.source} -> {m.destination} ({mode.value})")
    try:
        policy = vm_policy(vm, settings)
        src, dst = pool.conn(m.source), pool.conn(m.destination)
        free_mib = _available_mib(dst)
        if free_mib < vm.mem_mib:
            raise InputError(
                f"{m.destination} has {free_mib:.0f} MiB available, {m.vm} needs {vm.mem_mib:.0f}"
            )
        dom = src.lookupByName(m.vm)
        if mode == Mode.COLD:
            journal.migration_started(
                run_id, idx, now() + timedelta(seconds=COLD_ALLOWANCE_S), {"mode": mode}
            )
            replace_volumes = any(s.step == "copy-disk" for s in journal.steps(run_id, idx))
            outcome = migrate_cold(pool, m.vm, m.source, m.destination, settings, step, replace_volumes)
        else:
            disks = local_disks(src, dom) if mode == Mode.STORAGE else []
            dirty = _dirty_rate(cfg, src, dom, step)
            prediction = predict_migration(
                vm.mem_mib,
                dirty,
                settings.bandwidth_mibps,
                policy.downtime_ms,
                auto_converge=settings.auto_converge,
                correction=correction,
                deadline_factor=settings.deadline_factor,
                deadline_slack_s=settings.deadline_slack_s,
            )
            if not prediction.converges:
                even = " even with auto-converge" if settings.auto_converge else ""
                progress(f"  {m.vm}: predicted not to converge{even} at {dirty:.0f} MiB/s: ladder likely")
            disk_mib = sum(d.allocation_mib for d in disks)
            ladder = ladder_for(policy, prediction, disk_mib, settings)
            journal.migration_started(
                run_id,
                idx,
                now() + timedelta(seconds=ladder.abort_s),
                {
                    "mode": mode,
                    "dirty_mibps": round(dirty, 1),
                    "predicted_s": round(prediction.total_time_s, 1),
                    "predicted_converges": prediction.converges,
                    "learned_model": prediction.learned,
                    "auto_converge": settings.auto_converge,
                    "soft_deadline_s": round(ladder.soft_s, 1),
                    "abort_s": round(ladder.abort_s, 1),
                    "rungs": [r.value for r in ladder.rungs],
                    "disks": [d.target for d in disks],
                    "disk_mib": round(disk_mib, 1),
                },
            )
            job = LiveJob(m.vm, m.source, m.destination, policy, ladder, tuple(d.target for d in disks))
            outcome = migrate_live(pool, job, settings, step)
    except Exception as e:  # noqa: BLE001 - every migration ends with a verdict in the journal
        message = e.get_error_message() if isinstance(e, lv.libvirtError) else str(e) or type(e).__name__
        if journal.migrations(run_id)[idx].state == MigrationState.RUNNING:
            outcome = Outcome(MigrationState.UNKNOWN, scrub(message))
        else:
            outcome = Outcome(MigrationState.FAILED, scrub(f"before it started: {message}"))
    journal.migration_ended(run_id, idx, outcome.state, outcome.message, outcome.rung, outcome.stats)
    shown = f"  {m.vm}: {outcome.state.value}"
    if outcome.rung:
        shown += f" (ladder: {outcome.rung})"
    if outcome.state == MigrationState.DONE and "time_elapsed" in outcome.stats:
        stats = outcome.stats
        shown += f" in {stats['time_elapsed'] / 1000:.1f} s, downtime {stats.get('downtime', 0)} ms"
    elif outcome.message:
        shown += f": {outcome.message}"
    progress(shown)
    return outcome.state


def _dirty_rate(cfg: Config, conn: Any, dom: Any, step: Callable[..., Any]) -> float:
    """Measured just before the move (what the deadline is predicted from); 0 when measuring is off."""
    from advisor.collect.libvirt import measure_dirty_rate

    settings = cfg.collect.libvirt
    if settings.dirty_samples == 0:
        return 0.0
    lv = require_libvirt()
    try:
        with step("measure-dirty-rate", samples=settings.dirty_samples) as record:
            rate = measure_dirty_rate(conn, dom, int(dom.state()[0]), settings)
            record["mibps"] = round(rate, 1)
    except (lv.libvirtError, TimeoutError):
        return 0.0  # the journal has why; the deadline then assumes a guest that dirties nothing
    return rate


def _available_mib(conn: Any) -> float:
    """Free memory plus what the kernel can reclaim at once (page cache, buffers): MemFree alone is small
    on any busy host."""
    stats = conn.getMemoryStats(require_libvirt().VIR_NODE_MEMORY_STATS_ALL_CELLS)
    return sum(stats.get(k, 0) for k in ("free", "buffers", "cached")) / 1024


def _bound(journal: Journal, run_id: int, idx: int) -> Callable[..., Any]:
    def step(name: str, **detail: Any) -> Any:
        return journal.step(run_id, idx, name, **detail)

    return step


def _only(plan: Plan, migrations: list[Migration]) -> Plan:
    from dataclasses import replace

    return replace(plan, migrations=tuple(migrations))


def _alive(pid: int) -> bool:
    """A live process (a zombie, killed but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
