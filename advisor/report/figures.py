"""The numbers a report shows, computed from plain inputs: per-host load before and after a plan, and the
summary table. Formatting lives here too, so that the page, the plots and the tests agree on one rendering
of every figure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from advisor.core import Cluster, Forecast, HostState, Migration, Plan
from advisor.errors import InputError
from advisor.migration.live_window import LiveWindow

DAYS_PER_YEAR = 365


@dataclass(frozen=True)
class HostLoad:
    """One host's utilisation (fractions of its capacity) before and after the plan.

    CPU is the sum of the VMs' forecast P95 cores over the host's cores; memory is the sum of the VMs'
    configured memory (what they reserve, never overcommitted) over the host's memory.
    """

    name: str
    state: HostState
    cpu_before: float
    cpu_after: float
    mem_before: float
    mem_after: float
    vms_before: int
    vms_after: int
    standby_after: bool

    @property
    def standby_before(self) -> bool:
        return self.state == HostState.STANDBY and self.vms_before == 0

    @property
    def maintenance(self) -> bool:
        return self.state == HostState.MAINTENANCE


def target_placement(cluster: Cluster, plan: Plan) -> dict[str, str]:
    """The plan's placement for every VM of the cluster; a VM the plan does not list stays put (an
    infeasible plan may carry no placement). A plan naming unknown VMs or hosts was made for another
    cluster and is refused."""
    hosts = cluster.host_by_name
    vms = cluster.vm_by_name
    for vm, host in plan.placement.items():
        if vm not in vms:
            raise InputError(f"plan places VM {vm!r}, which cluster {cluster.name} does not have")
        if host not in hosts:
            raise InputError(
                f"plan places VM {vm} on host {host!r}, which cluster {cluster.name} does not have"
            )
    return {v.name: plan.placement.get(v.name, v.host) for v in cluster.vms}


def host_loads(cluster: Cluster, forecast: Forecast, plan: Plan) -> list[HostLoad]:
    """Per-host load, ordered by planned load (busiest first) so that hosts emptied by the plan gather
    at the end, maintenance hosts last; the CPU and memory plots share this order so that a host keeps
    its position."""
    forecast.check_covers(cluster)
    after_placement = target_placement(cluster, plan)
    standby = set(plan.standby)
    cpu = {h.name: [0.0, 0.0] for h in cluster.hosts}
    mem = {h.name: [0.0, 0.0] for h in cluster.hosts}
    count = {h.name: [0, 0] for h in cluster.hosts}
    for vm in cluster.vms:
        demand = forecast.vms[vm.name].cpu_p95
        for i, host in enumerate((vm.host, after_placement[vm.name])):
            cpu[host][i] += demand
            mem[host][i] += vm.mem_mib
            count[host][i] += 1
    loads = [
        HostLoad(
            name=h.name,
            state=h.state,
            cpu_before=cpu[h.name][0] / h.cpu_cores,
            cpu_after=cpu[h.name][1] / h.cpu_cores,
            mem_before=mem[h.name][0] / h.mem_mib,
            mem_after=mem[h.name][1] / h.mem_mib,
            vms_before=count[h.name][0],
            vms_after=count[h.name][1],
            standby_after=count[h.name][1] == 0 and (h.name in standby or h.state == HostState.STANDBY),
        )
        for h in cluster.hosts
    ]
    return sorted(loads, key=lambda x: (-x.cpu_after, -x.mem_after, x.maintenance, -x.cpu_before, x.name))


def gib(mib: float) -> str:
    return f"{mib / 1024:,.1f}"


def pct(fraction: float) -> str:
    return f"{fraction * 100:.1f} %"


def kwh(value: float) -> str:
    return f"{value:,.1f}"


def seconds(value: float) -> str:
    return f"{value:,.1f}"


def millis(value: float) -> str:
    return f"{value:,.0f}"


@dataclass(frozen=True)
class SummaryRow:
    label: str
    before: str
    after: str
    bound: str


def memory_moved_mib(cluster: Cluster, migrations: tuple[Migration, ...]) -> float:
    """Memory of the VMs moved, counted once per move (a parked VM moves twice)."""
    vms = cluster.vm_by_name
    missing = [m.vm for m in migrations if m.vm not in vms]
    if missing:
        raise InputError(f"plan migrates VM {missing[0]!r}, which cluster {cluster.name} does not have")
    return sum(vms[m.vm].mem_mib for m in migrations)


def summary_rows(cluster: Cluster, plan: Plan) -> list[SummaryRow]:
    """Before vs after vs the lower bound; '—' where a figure has no meaning (no bound on peak load,
    nothing moved before the plan)."""
    b, a = plan.before, plan.after
    dash = "—"
    moved = plan.migrations
    return [
        SummaryRow("Active hosts", str(b.active_hosts), str(a.active_hosts), str(plan.bounds.hosts)),
        SummaryRow(
            "Energy (kWh/day)",
            kwh(b.energy_kwh_per_day),
            kwh(a.energy_kwh_per_day),
            kwh(plan.bounds.energy_kwh_per_day),
        ),
        SummaryRow("Peak CPU utilisation (P95)", pct(b.peak_cpu_util), pct(a.peak_cpu_util), dash),
        SummaryRow("Peak memory utilisation", pct(b.peak_mem_util), pct(a.peak_mem_util), dash),
        SummaryRow("Hosts over headroom", str(b.hosts_over_headroom), str(a.hosts_over_headroom), dash),
        SummaryRow("Migrations", dash, str(len(moved)), dash),
        SummaryRow("Memory moved (GiB)", dash, gib(memory_moved_mib(cluster, moved)), dash),
        SummaryRow("Predicted transfer (GiB)", dash, gib(sum(m.predicted_mib for m in moved)), dash),
        SummaryRow("Waves", dash, str(len(plan.waves)), dash),
    ]


@dataclass(frozen=True)
class Savings:
    """Energy the plan saves (`saves` true) or costs extra (a balancing plan may wake hosts): magnitudes
    formatted, the direction kept apart so the page words it plainly."""

    kwh_per_day: str
    kwh_per_year: str
    percent: str
    saves: bool


def savings(plan: Plan) -> Savings:
    saved = plan.before.energy_kwh_per_day - plan.after.energy_kwh_per_day
    share = abs(saved) / plan.before.energy_kwh_per_day if plan.before.energy_kwh_per_day > 0 else 0.0
    return Savings(kwh(abs(saved)), kwh(abs(saved) * DAYS_PER_YEAR), pct(share), saved >= 0)


@dataclass(frozen=True)
class MigrationRow:
    wave: int
    vm: str
    source: str
    destination: str
    reason: str
    memory_gib: str
    transfer_gib: str
    time_s: str
    downtime_ms: str
    converges: bool


def migration_rows(cluster: Cluster, plan: Plan) -> list[MigrationRow]:
    """All migrations ordered by wave; within a wave, in the plan's order."""
    memory_moved_mib(cluster, plan.migrations)  # names an unknown VM before anything is shown
    vms = cluster.vm_by_name
    return [
        MigrationRow(
            wave=m.wave,
            vm=m.vm,
            source=m.source,
            destination=m.destination,
            reason=m.reason.value,
            memory_gib=gib(vms[m.vm].mem_mib),
            transfer_gib=gib(m.predicted_mib),
            time_s=seconds(m.predicted_time_s),
            downtime_ms=millis(m.predicted_downtime_ms),
            converges=m.converges,
        )
        for m in sorted(plan.migrations, key=lambda m: m.wave)
    ]


@dataclass(frozen=True)
class WaveRow:
    wave: int
    migrations: int
    memory_gib: str
    longest_s: str
    not_converging: int


def wave_rows(cluster: Cluster, plan: Plan) -> list[WaveRow]:
    """One line per wave: the longest predicted migration bounds the wave from below."""
    return [
        WaveRow(
            wave=w[0].wave,
            migrations=len(w),
            memory_gib=gib(memory_moved_mib(cluster, tuple(w))),
            longest_s=seconds(max(m.predicted_time_s for m in w)),
            not_converging=sum(not m.converges for m in w),
        )
        for w in plan.waves
    ]


@dataclass(frozen=True)
class LiveRow:
    vm: str
    host: str
    dirty_mibps: str
    max_live_mibps: str
    when: str
    planned: str


def live_rows(plan: Plan) -> list[LiveRow]:
    """The plan's VMs that cannot move live now, each with when it could and what the plan does with it."""
    rows = []
    for entry in plan.cannot_move_live:
        w = LiveWindow.from_dict(entry)
        rows.append(
            LiveRow(
                vm=w.vm,
                host=w.host,
                dirty_mibps=f"{w.dirty_mibps:,.1f}",
                max_live_mibps=f"{w.max_live_dirty_mibps:,.1f}",
                when=w.when,
                planned=f"moved anyway ({w.moved}), predicted not to converge" if w.moved else "stays",
            )
        )
    return rows


@dataclass(frozen=True)
class DryRunView:
    ok: bool
    states_checked: int
    violations: list[str]


def dry_run_view(result: Mapping[str, Any]) -> DryRunView:
    """Read a dry-run result (DryRunResult.to_dict(), or the dryrun.json file) with errors naming the key."""
    try:
        ok, states, violations = result["ok"], result["states_checked"], result["violations"]
    except KeyError as e:
        raise InputError(f"dry-run result: missing key {e.args[0]!r}") from None
    if not isinstance(ok, bool):
        raise InputError(f"dry-run result: ok must be true or false, got {ok!r}")
    if not isinstance(states, int) or isinstance(states, bool) or states < 0:
        raise InputError(f"dry-run result: states_checked must be a non-negative integer, got {states!r}")
    if not isinstance(violations, list):
        raise InputError(f"dry-run result: violations must be a list, got {type(violations).__name__}")
    return DryRunView(ok, states, [str(v) for v in violations])
