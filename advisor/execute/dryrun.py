"""Apply a plan to an in-memory cluster, wave by wave, and check every state the real run would pass
through: each wave with its migrations in flight (a VM on both hosts), and after it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from advisor.config import PlanSettings
from advisor.core import Cluster, Forecast, Host, HostState, Plan
from advisor.errors import InputError
from advisor.invariants import baseline_of, check_end_rules, check_state, peak_history
from advisor.optimize.demand import JointHistory, demand_of


@dataclass(frozen=True)
class DryRunResult:
    ok: bool
    states_checked: int
    violations: list[str] = field(default_factory=list)
    final_placement: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "states_checked": self.states_checked,
            "violations": list(self.violations),
            "final_placement": dict(sorted(self.final_placement.items())),
        }


def dry_run(
    cluster: Cluster,
    forecast: Forecast,
    plan: Plan,
    settings: PlanSettings,
    history: JointHistory | None = None,
) -> DryRunResult:
    """Refuses (InputError) a plan made for another cluster state or another forecast. Host CPU is
    judged by the plan's peak model: `history` (the VMs' joint CPU history) is needed under "joint"."""
    if plan.cluster_fingerprint != cluster.fingerprint():
        raise InputError(
            f"stale plan: it was made for cluster state {plan.cluster_fingerprint}, the cluster is now "
            f"{cluster.fingerprint()}; plan again"
        )
    if plan.forecast_fingerprint != forecast.fingerprint():
        raise InputError(
            f"stale plan: it was made with forecast {plan.forecast_fingerprint}, the forecast is now "
            f"{forecast.fingerprint()}; plan again"
        )
    demand = demand_of(cluster, forecast)
    history = peak_history(settings, history)
    hosts = cluster.host_by_name
    placement = dict(cluster.placement)
    baseline = baseline_of(cluster, demand, placement, settings, history)
    violations: list[str] = []
    states = 0
    for wave in plan.waves:
        n = wave[0].wave
        occupancy: dict[str, tuple[str, ...]] = {vm: (h,) for vm, h in placement.items()}
        inflight: dict[str, int] = {}
        moving: list[tuple[str, str]] = []
        for m in wave:
            problem = _bad_migration(m.vm, m.source, m.destination, placement, occupancy, hosts)
            if problem:
                violations.append(f"wave {n}: {problem}")
                continue
            occupancy[m.vm] = (m.source, m.destination)
            moving.append((m.vm, m.destination))
            for h in (m.source, m.destination):
                inflight[h] = inflight.get(h, 0) + 1
        most = settings.max_concurrent_per_host
        violations += [
            f"wave {n}: host {h} has {k} migrations in flight, more than {most}"
            for h, k in sorted(inflight.items())
            if k > most
        ]
        during = check_state(cluster, demand, occupancy, settings, baseline, history)
        for vm, dst in moving:
            placement[vm] = dst
        after = check_state(
            cluster, demand, {vm: (h,) for vm, h in placement.items()}, settings, baseline, history
        )
        violations += [f"wave {n} (in flight): {v}" for v in during]
        violations += [f"wave {n} (after): {v}" for v in after]
        states += 2
    violations += _final_checks(cluster, plan, placement)
    return DryRunResult(not violations, states, violations, placement)


def _bad_migration(
    vm: str,
    source: str,
    destination: str,
    placement: Mapping[str, str],
    occupancy: Mapping[str, tuple[str, ...]],
    hosts: Mapping[str, Host],
) -> str:
    if vm not in placement:
        return f"VM {vm} is not in the cluster"
    if len(occupancy[vm]) > 1:
        return f"VM {vm} migrates twice in one wave"
    if placement[vm] != source:
        return f"VM {vm} should leave {source} but runs on {placement[vm]}"
    if destination not in hosts:
        return f"VM {vm} goes to unknown host {destination}"
    if hosts[destination].state == HostState.MAINTENANCE:
        return f"VM {vm} goes to host {destination}, which is in maintenance"
    return ""


def _final_checks(cluster: Cluster, plan: Plan, placement: dict[str, str]) -> list[str]:
    out = []
    names = placement.keys() | plan.placement.keys()
    differ = sorted(vm for vm in names if placement.get(vm) != plan.placement.get(vm))
    for vm in differ[:10]:
        out.append(f"end: VM {vm} is on {placement.get(vm)}, the plan says {plan.placement.get(vm)}")
    if len(differ) > 10:
        out.append(f"end: {len(differ) - 10} more VMs are not where the plan puts them")
    return out + [f"end: {v}" for v in check_end_rules(cluster, placement)]
