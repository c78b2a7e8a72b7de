"""Before/after figures of a placement: which hosts run, energy per day, peak utilisation.

Maintenance hosts are charged standby draw before and after (they are being emptied for work that is
not the planner's saving to claim) and never count as active.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from advisor.config import PlanSettings
from advisor.core import Cluster, HostState, PlanFigures
from advisor.optimize.demand import EPS, JointHistory, VMDemand, cpu_cap, mem_cap

HOURS_PER_DAY = 24.0


def active_before(cluster: Cluster) -> set[str]:
    """Hosts drawing running power now: up, or (oddly) holding VMs while in standby."""
    used = set(cluster.placement.values())
    return {
        h.name
        for h in cluster.hosts
        if h.state != HostState.MAINTENANCE and (h.state == HostState.UP or h.name in used)
    }


def active_after(cluster: Cluster, placement: Mapping[str, str], goal: str) -> set[str]:
    """Consolidation powers off every empty host; balancing keeps every up host running."""
    used = set(placement.values())
    return {
        h.name
        for h in cluster.hosts
        if h.state != HostState.MAINTENANCE
        and (h.name in used or (goal == "balance" and h.state == HostState.UP))
    }


def energy_w(
    cluster: Cluster, demand: Mapping[str, VMDemand], placement: Mapping[str, str], active: Collection[str]
) -> float:
    p50 = {h.name: 0.0 for h in cluster.hosts}
    for vm, host in placement.items():
        p50[host] += demand[vm].cpu_p50
    return float(
        sum(
            h.power.watts(p50[h.name] / h.cpu_cores) if h.name in active else h.power.standby_w
            for h in cluster.hosts
        )
    )


def placement_figures(
    cluster: Cluster,
    demand: Mapping[str, VMDemand],
    placement: Mapping[str, str],
    active: Collection[str],
    settings: PlanSettings,
    history: JointHistory | None = None,
) -> PlanFigures:
    """Peaks are sums of the VMs' P95s, or with `history` (peak model joint) the P95 of their sum."""
    cpu = {h.name: 0.0 for h in cluster.hosts}
    mem = {h.name: 0.0 for h in cluster.hosts}
    on: dict[str, list[str]] = {h.name: [] for h in cluster.hosts}
    for vm, host in placement.items():
        cpu[host] += demand[vm].cpu_p95
        mem[host] += demand[vm].mem_mib
        on[host].append(vm)
    if history is not None:
        cpu = {h: history.peak(vms) for h, vms in on.items()}
    over = sum(
        1
        for h in cluster.hosts
        if cpu[h.name] > cpu_cap(h, settings) + EPS or mem[h.name] > mem_cap(h, settings) + EPS
    )
    return PlanFigures(
        active_hosts=len(active),
        energy_kwh_per_day=energy_w(cluster, demand, placement, active) * HOURS_PER_DAY / 1000.0,
        peak_cpu_util=float(max(cpu[h.name] / h.cpu_cores for h in cluster.hosts)),
        peak_mem_util=float(max(mem[h.name] / h.mem_mib for h in cluster.hosts)),
        hosts_over_headroom=over,
    )
