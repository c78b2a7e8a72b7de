"""Safety invariants of one cluster state, checked from scratch: the dry run's independent referee
(it shares no bookkeeping with the sequencer that produced the waves it checks).

A host's CPU is judged by the plan's own peak model: the sum of its VMs' P95s, or (`plan.peak_model =
"joint"`, given their history) the P95 of their summed history, `JointHistory.peak`. A joint plan
packs past the sum by design, so judging it by the sum would report every such host as overloaded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from advisor.config import PlanSettings
from advisor.core import Cluster, HostState
from advisor.errors import InputError
from advisor.optimize.demand import EPS, JointHistory, VMDemand, cpu_cap, mem_cap


@dataclass(frozen=True)
class Baseline:
    """What the cluster already breaks before any migration: a plan must not make it worse, but cannot
    be asked to fix it before its first wave has run."""

    over: Mapping[str, tuple[float, float]]  # host -> (cpu_p95 cores, MiB) of hosts above headroom
    crowded: Mapping[tuple[int, str], int]  # (anti-affinity group index, host) -> members, where > 1


def peak_history(settings: PlanSettings, history: JointHistory | None) -> JointHistory | None:
    """The history the checks judge CPU by: none under the sum model (a history given is ignored),
    the VMs' history under the joint model, which cannot do without it."""
    if settings.peak_model != "joint":
        return None
    if history is None:
        raise InputError(
            'plan.peak_model = "joint": checking a plan needs the VMs\' metrics history (run `advisor '
            'collect`), or use "sum"'
        )
    return history


def state_loads(
    cluster: Cluster,
    demand: Mapping[str, VMDemand],
    occupancy: Mapping[str, tuple[str, ...]],
    history: JointHistory | None = None,
) -> dict[str, tuple[float, float]]:
    """(CPU peak in cores, MiB) per host of a state where a VM may be on two hosts; with `history` the
    CPU peak is the joint one."""
    holders: dict[str, list[str]] = {h.name: [] for h in cluster.hosts}
    for vm, hosts in occupancy.items():
        for h in hosts:
            holders[h].append(vm)
    out = {}
    for name, vms in holders.items():
        mem = sum(demand[vm].mem_mib for vm in vms)
        cpu = sum(demand[vm].cpu_p95 for vm in vms) if history is None else history.peak(vms)
        out[name] = (cpu, mem)
    return out


def baseline_of(
    cluster: Cluster,
    demand: Mapping[str, VMDemand],
    placement: Mapping[str, str],
    settings: PlanSettings,
    history: JointHistory | None = None,
) -> Baseline:
    """`history`: the VMs' joint CPU history, which peak model joint needs (see `peak_history`)."""
    history = peak_history(settings, history)
    counts: dict[tuple[int, str], int] = {}
    for g, group in enumerate(cluster.rules.anti_affinity):
        for vm in group:
            counts[g, placement[vm]] = counts.get((g, placement[vm]), 0) + 1
    loads = state_loads(cluster, demand, {vm: (h,) for vm, h in placement.items()}, history)
    over = {
        h.name: loads[h.name]
        for h in cluster.hosts
        if loads[h.name][0] > cpu_cap(h, settings) + EPS or loads[h.name][1] > mem_cap(h, settings) + EPS
    }
    return Baseline(over=over, crowded={k: n for k, n in counts.items() if n > 1})


def check_state(
    cluster: Cluster,
    demand: Mapping[str, VMDemand],
    occupancy: Mapping[str, tuple[str, ...]],
    settings: PlanSettings,
    baseline: Baseline,
    history: JointHistory | None = None,
) -> list[str]:
    """Violations of one state; `occupancy` maps each VM to the hosts holding it (two while it
    migrates). CPU at P95 and memory within headroom (for a host over headroom at the start: no worse
    than it was, per dimension) and at most one member of an anti-affinity group per host. `history`:
    the VMs' joint CPU history, which peak model joint needs (see `peak_history`)."""
    loads = state_loads(cluster, demand, occupancy, peak_history(settings, history))
    moving: dict[str, list[str]] = {}
    for vm, hosts in occupancy.items():
        if len(hosts) > 1:
            for h in hosts:
                moving.setdefault(h, []).append(vm)
    out = []
    for host in cluster.hosts:
        name = host.name
        cpu, mem = loads[name]
        start = baseline.over.get(name, (0.0, 0.0))
        cpu_limit = max(cpu_cap(host, settings), start[0])
        mem_limit = max(mem_cap(host, settings), start[1])
        names = f" (in flight: {_names(moving[name])})" if name in moving else ""
        if cpu > cpu_limit + EPS:
            out.append(f"host {name}: {cpu:.2f} cores at P95, over its limit of {cpu_limit:.2f}{names}")
        if mem > mem_limit + EPS:
            out.append(f"host {name}: {mem:.0f} MiB reserved, over its limit of {mem_limit:.0f}{names}")
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
    cluster: Cluster,
    demand: Mapping[str, VMDemand],
    placement: Mapping[str, str],
    settings: PlanSettings,
    history: JointHistory | None = None,
) -> list[str]:
    """Everything a target placement breaks, judged alone (no baseline to excuse a hot host).
    `history`: as for `check_state`."""
    empty = Baseline(over={}, crowded={})
    state = check_state(cluster, demand, {vm: (h,) for vm, h in placement.items()}, settings, empty, history)
    return state + check_end_rules(cluster, placement)


def _names(vms: list[str], most: int = 5) -> str:
    return ", ".join(sorted(vms)[:most]) + (" ..." if len(vms) > most else "")
