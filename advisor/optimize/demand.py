"""What each VM asks of a host under a forecast, and what a host offers within headroom: the figures the
planner, the sequencer and the invariant checker all read, computed in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from advisor.config import PlanSettings
from advisor.core import Cluster, Forecast, Host

EPS = 1e-6  # cores or MiB: float sums that differ by less are equal


@dataclass(frozen=True)
class VMDemand:
    cpu_p95: float  # cores: what capacity must hold
    cpu_p50: float  # cores: what energy is charged for
    mem_mib: float  # configured size: memory is reserved, never overcommitted
    dirty_mibps: float  # for migration cost


def demand_of(cluster: Cluster, forecast: Forecast) -> dict[str, VMDemand]:
    forecast.check_covers(cluster)
    out = {}
    for vm in cluster.vms:
        f = forecast.vms[vm.name]
        out[vm.name] = VMDemand(f.cpu_p95, f.cpu_p50, float(vm.mem_mib), f.dirty_mibps)
    return out


def cpu_cap(host: Host, settings: PlanSettings) -> float:
    return host.cpu_cores * settings.cpu_headroom


def mem_cap(host: Host, settings: PlanSettings) -> float:
    return host.mem_mib * settings.mem_headroom


def host_loads(
    cluster: Cluster, demand: Mapping[str, VMDemand], placement: Mapping[str, str]
) -> dict[str, tuple[float, float]]:
    """(cpu_p95 cores, memory MiB) per host; hosts without VMs get zeros."""
    loads = {h.name: [0.0, 0.0] for h in cluster.hosts}
    for vm, host in placement.items():
        d = demand[vm]
        loads[host][0] += d.cpu_p95
        loads[host][1] += d.mem_mib
    return {h: (c, m) for h, (c, m) in loads.items()}


def over_headroom(
    cluster: Cluster, demand: Mapping[str, VMDemand], placement: Mapping[str, str], settings: PlanSettings
) -> dict[str, tuple[float, float]]:
    """Hosts above CPU or memory headroom in `placement`, with their loads: the baseline that a
    migration sequence may not make worse."""
    loads = host_loads(cluster, demand, placement)
    return {
        h.name: loads[h.name]
        for h in cluster.hosts
        if loads[h.name][0] > cpu_cap(h, settings) + EPS or loads[h.name][1] > mem_cap(h, settings) + EPS
    }
