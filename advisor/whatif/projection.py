"""Hosts needed over the months ahead under growth, and the day capacity runs out.

"Hosts needed" is the lower bound of the optimizer's bounds (the largest usable hosts first, each filled
to its headroom, rules and packing ignored) with demand grown to that day: at the VMs' P50 CPU for the
low edge of the band and at P95 for the high edge; memory reservations are the same in both. Beyond the
usable hosts, more hosts like the largest one are counted, so the curve can cross the usable line.
Capacity runs out on the first day the P95 edge needs more hosts than are usable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from advisor.config import PlanSettings
from advisor.core import Cluster, Forecast
from advisor.whatif.scenarios import DAYS_PER_MONTH, Scenario

DAYS_PER_WEEK = 7
FULL_SEARCH_DAYS = 3653  # ten years: "not within ten years" beyond this


@dataclass(frozen=True)
class Demand:
    """Today's totals over the VMs (cores and MiB), before growth."""

    cpu_p50: float
    cpu_p95: float
    mem_mib: float


@dataclass(frozen=True)
class Capacity:
    """Each usable host's CPU and memory within headroom."""

    cpu: tuple[float, ...]
    mem: tuple[float, ...]

    @property
    def hosts(self) -> int:
        return len(self.cpu)


@dataclass(frozen=True)
class WeekPoint:
    week: int
    day: int
    factor: float
    hosts_p50: int
    hosts_p95: int


def today_demand(cluster: Cluster, forecast: Forecast, factor: float = 1.0) -> Demand:
    """Demand of every VM (memory as reserved) in a cluster and forecast grown by `factor`, taken back
    to today; growth is applied again day by day."""
    return Demand(
        cpu_p50=sum(forecast.vms[v.name].cpu_p50 for v in cluster.vms) / factor,
        cpu_p95=sum(forecast.vms[v.name].cpu_p95 for v in cluster.vms) / factor,
        mem_mib=sum(v.mem_mib for v in cluster.vms) / factor,
    )


def usable_capacity(cluster: Cluster, settings: PlanSettings, retired: frozenset[str]) -> Capacity:
    """Hosts that can take VMs: not in maintenance, not retired."""
    hosts = [h for h in cluster.hosts if h.can_run_vms and h.name not in retired]
    return Capacity(
        cpu=tuple(h.cpu_cores * settings.cpu_headroom for h in hosts),
        mem=tuple(h.mem_mib * settings.mem_headroom for h in hosts),
    )


def hosts_needed(caps: tuple[float, ...], total: float) -> int:
    """Fewest hosts whose capacities, largest first, hold `total`; past them, hosts like the largest."""
    if total <= 0:
        return 0
    if not caps:
        return 10**9
    covered = 0.0
    ordered = sorted(caps, reverse=True)
    for k, cap in enumerate(ordered):
        if covered >= total:
            return k
        covered += cap
    if covered >= total:
        return len(ordered)
    return len(ordered) + math.ceil((total - covered) / ordered[0] - 1e-12)


def needed_at(capacity: Capacity, demand: Demand, factor: float) -> tuple[int, int]:
    """(hosts at P50 CPU, hosts at P95 CPU) for demand grown by `factor`."""
    mem = hosts_needed(capacity.mem, demand.mem_mib * factor)
    return (
        max(mem, hosts_needed(capacity.cpu, demand.cpu_p50 * factor)),
        max(mem, hosts_needed(capacity.cpu, demand.cpu_p95 * factor)),
    )


def weekly(capacity: Capacity, demand: Demand, scenario: Scenario) -> list[WeekPoint]:
    """One point a week from today to the end of the projection window (inclusive)."""
    weeks = math.ceil(scenario.months * DAYS_PER_MONTH / DAYS_PER_WEEK)
    out = []
    for w in range(weeks + 1):
        day = w * DAYS_PER_WEEK
        f = scenario.factor_at_day(day)
        p50, p95 = needed_at(capacity, demand, f)
        out.append(WeekPoint(w, day, f, p50, p95))
    return out


def days_until_full(capacity: Capacity, demand: Demand, scenario: Scenario) -> int | None:
    """First whole day on which the P95 demand needs more hosts than are usable: 0 if it already does,
    None if it does not within ten years (demand flat or shrinking, or growing slowly enough)."""

    def full(day: int) -> bool:
        return needed_at(capacity, demand, scenario.factor_at_day(day))[1] > capacity.hosts

    if full(0):
        return 0
    if scenario.monthly_rate <= 0 or not full(FULL_SEARCH_DAYS):
        return None
    lo, hi = 0, FULL_SEARCH_DAYS  # full(lo) false, full(hi) true; demand only grows in between
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if full(mid):
            hi = mid
        else:
            lo = mid
    return hi
