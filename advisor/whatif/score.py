"""One scenario end to end, in memory: apply it, plan it, score it. Pure apart from the planner's clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from advisor.config import PlanSettings, PowerSettings
from advisor.core import Cluster, Forecast, HostState, Plan, PlanStatus
from advisor.optimize import plan_fleet
from advisor.optimize.demand import demand_of, host_loads
from advisor.optimize.figures import HOURS_PER_DAY
from advisor.whatif.profile import host_hour_util
from advisor.whatif.projection import (
    WeekPoint,
    days_until_full,
    needed_at,
    today_demand,
    usable_capacity,
    weekly,
)
from advisor.whatif.scenarios import Scenario
from advisor.whatif.transform import WhatIfInput, apply_scenario, host_type


@dataclass(frozen=True)
class HostRow:
    host: str
    type: str
    state: str  # up, standby, maintenance or retired, after the plan
    vms: int
    cpu_util: float  # forecast P95 over cores
    mem_util: float  # reserved over memory


@dataclass(frozen=True)
class ScenarioResult:
    scenario: Scenario
    input: WhatIfInput
    plan: Plan
    usable_hosts: int
    active_hosts: int
    energy_kwh_per_day: float
    migrations: int
    days_until_full: int | None
    hosts_needed_now: int  # lower bound at P95, at the planned month
    weeks: list[WeekPoint]
    hosts: list[HostRow]
    heat_hosts: list[str]  # active hosts after the plan, busiest first
    heat: np.ndarray  # their CPU utilisation by UTC hour of day

    @property
    def feasible(self) -> bool:
        return self.plan.status != PlanStatus.INFEASIBLE

    def summary(self) -> dict[str, Any]:
        """The summary.json entry (and a row of scenarios.csv)."""
        s, p = self.scenario, self.plan
        return {
            "scenario": s.name,
            "description": s.description,
            "status": p.status.value,
            "active_hosts": self.active_hosts,
            "energy_kwh_per_day": round(self.energy_kwh_per_day, 3),
            "peak_cpu_util": round(p.after.peak_cpu_util, 4),
            "peak_mem_util": round(p.after.peak_mem_util, 4),
            "migrations": self.migrations,
            "days_until_full": self.days_until_full,
            "usable_hosts": self.usable_hosts,
            "hosts_needed": self.hosts_needed_now,
            "energy_lower_bound_kwh_per_day": round(p.bounds.energy_kwh_per_day, 3),
            "hosts_over_headroom": p.after.hosts_over_headroom,
            "plan_month": s.planned_month,
            "demand_factor": round(self.input.factor, 4),
            "new_vms": len(self.input.new_vms),
            "retired_hosts": len(self.input.retired),
            "solver": p.solver,
            "solve_s": round(p.solve_s, 2),
            "message": p.message,
            "blocking_vms": list(p.blocking_vms),
        }


def run_scenario(
    cluster: Cluster,
    forecast: Forecast,
    profiles: pd.DataFrame,
    scenario: Scenario,
    settings: PlanSettings,
    power: PowerSettings,
) -> ScenarioResult:
    inp = apply_scenario(cluster, forecast, scenario, settings, power)
    plan = plan_fleet(inp.cluster, inp.forecast, inp.settings)
    capacity = usable_capacity(inp.cluster, inp.settings, inp.retired)
    demand = today_demand(inp.cluster, inp.forecast, inp.factor)
    retired_standby_w = sum(h.power.standby_w for h in inp.cluster.hosts if h.name in inp.retired)
    placement = {v.name: plan.placement.get(v.name, v.host) for v in inp.cluster.vms}
    hosts = _host_rows(inp, plan, placement)
    active = [r.host for r in sorted(hosts, key=lambda r: (-r.cpu_util, r.host)) if r.state == "up" and r.vms]
    return ScenarioResult(
        scenario=scenario,
        input=inp,
        plan=plan,
        usable_hosts=capacity.hosts,
        active_hosts=plan.after.active_hosts,
        energy_kwh_per_day=plan.after.energy_kwh_per_day - retired_standby_w * HOURS_PER_DAY / 1000.0,
        migrations=sum(1 for m in plan.migrations if m.vm not in inp.new_vms),
        days_until_full=days_until_full(capacity, demand, scenario),
        hosts_needed_now=needed_at(capacity, demand, inp.factor)[1],
        weeks=weekly(capacity, demand, scenario),
        hosts=hosts,
        heat_hosts=active,
        heat=host_hour_util(inp.cluster, inp.forecast, placement, profiles, inp.factor, active),
    )


def _host_rows(inp: WhatIfInput, plan: Plan, placement: dict[str, str]) -> list[HostRow]:
    loads = host_loads(inp.cluster, demand_of(inp.cluster, inp.forecast), placement)
    count = {h.name: 0 for h in inp.cluster.hosts}
    for host in placement.values():
        count[host] += 1
    standby = set(plan.standby)
    rows = []
    for h in inp.cluster.hosts:
        if h.name in inp.retired:
            state = "retired"
        elif h.state == HostState.MAINTENANCE:
            state = "maintenance"
        elif count[h.name] == 0 and (h.name in standby or h.state == HostState.STANDBY):
            state = "standby"
        else:
            state = "up"
        cpu, mem = loads[h.name]
        rows.append(HostRow(h.name, host_type(h), state, count[h.name], cpu / h.cpu_cores, mem / h.mem_mib))
    return rows
