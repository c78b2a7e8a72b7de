"""Safety invariants of one cluster state, checked from scratch: the dry run's independent referee
(it shares no bookkeeping with the sequencer that produced the waves it checks)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from advisor.config import PlanSettings
from advisor.core import Cluster, HostState
from advisor.optimize.demand import EPS, VMDemand, cpu_cap, mem_cap, over_headroom


@dataclass(frozen=True)
class Baseline:
    """What the cluster already breaks before any migration: a plan must not make it worse, but cannot
    be asked to fix it before its first wave has run."""

    over: Mapping[str, tuple[float, float]]  # host -> (cpu_p95 cores, MiB) of hosts above headroom
    crowded: Mapping[tuple[int, str], int]  # (anti-affinity group index, host) -> members, where > 1


def baseline_of(
    cluster: Cluster, demand: Mapping[str, VMDemand], placement: Mapping[str, str], settings: PlanSettings
) -> Baseline:
    counts: dict[tuple[int, str], int] = {}
    for g, group in enumerate(cluster.rules.anti_affinity):
        for vm in group:
            counts[g, placement[vm]] = counts.get((g, placement[vm]), 0) + 1
    return Baseline(
        over=over_headroom(cluster, demand, placement, settings),
        crowded={k: n for k, n in counts.items() if n > 1},
    )


def check_state(
    cluster: Cluster,
    demand: Mapping[str, VMDemand],
    occupancy: Mapping[str, tuple[str, ...]],
    settings: PlanSettings,
    baseline: Baseline,
) -> list[str]:
    """Violations of one state; `occupancy` maps each VM to the hosts holding it (two while it
    migrates). CPU at P95 and memory within headroom (for a host over headroom at the start: no worse
    than it was, per dimension) and at most one member of an anti-affinity group per host."""
    holders: dict[str, list[str]] = {}
    cpu = {h.name: 0.0 for h in cluster.hosts}
    mem = {h.name: 0.0 for h in cluster.hosts}
    for vm, hosts in occupancy.items():
        for h in hosts:
            holders.setdefault(h, []).append(vm)
            cpu[h] += demand[vm].cpu_p95
            mem[h] += demand[vm].mem_mib
    out = []
    for host in cluster.hosts:
        name = host.name
        start = baseline.over.get(name, (0.0, 0.0))
        cpu_limit = max(cpu_cap(host, settings), start[0])
        mem_limit = max(mem_cap(host, settings), start[1])
        moving = [vm for vm in holders.get(name, []) if len(occupancy[vm]) > 1]
        names = f" (in flight: {_names(moving)})" if moving else ""
        if cpu[name] > cpu_limit + EPS:
            out.append(f"host {name}: {cpu[name]:.2f} cores at P95, over its limit of {cpu_limit:.2f}{names}")
        if mem[name] > mem_limit + EPS:
            out.append(f"host {name}: {mem[name]:.0f} MiB reserved, over its limit of {mem_limit:.0f}{names}")
    for g, group in enumerate(cluster.rules.anti_affinity):
        on: dict[str, list[str]] = {}
        for vm in group:
            for h in occupancy.get(vm, ()):
                on.setdefault(h, []).append(vm)
        for h, vms in sorted(on.items()):
            if len(vms) > max(1, baseline.crowded.get((g, h), 1)):
                members = ", ".join(group)
                out.append(f"host {h}: anti-affinity group [{members}] has {', '.join(vms)} together")
    return out


def check_end_rules(cluster: Cluster, placement: Mapping[str, str]) -> list[str]:
    """Rules a final placement must meet that an intermediate state may still break: maintenance hosts
    empty, pins respected, affinity groups together, unmovable VMs where they were."""
    out = [
        f"VM {v.name} may not move but is on {placement[v.name]}, not {v.host}"
        for v in cluster.vms
        if not (v.movable and v.live_migratable) and placement[v.name] != v.host
    ]
    for h in cluster.hosts:
        left = sorted(vm for vm, host in placement.items() if host == h.name)
        if h.state == HostState.MAINTENANCE and left:
            out.append(f"host {h.name} is in maintenance but still runs {_names(left)}")
    for vm, pins in cluster.rules.pins.items():
        if placement[vm] not in pins:
            out.append(f"VM {vm} runs on {placement[vm]}, outside its pins {', '.join(pins)}")
    for group in cluster.rules.affinity:
        where = {placement[vm] for vm in group}
        if len(where) > 1:
            out.append(f"affinity group [{', '.join(group)}] is split over {', '.join(sorted(where))}")
    return out


def placement_violations(
    cluster: Cluster, demand: Mapping[str, VMDemand], placement: Mapping[str, str], settings: PlanSettings
) -> list[str]:
    """Everything a target placement breaks, judged alone (no baseline to excuse a hot host)."""
    empty = Baseline(over={}, crowded={})
    state = check_state(cluster, demand, {vm: (h,) for vm, h in placement.items()}, settings, empty)
    return state + check_end_rules(cluster, placement)


def _names(vms: list[str], most: int = 5) -> str:
    return ", ".join(sorted(vms)[:most]) + (" ..." if len(vms) > most else "")
