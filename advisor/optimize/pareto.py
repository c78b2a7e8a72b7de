"""The energy/migration trade-off made explicit: the same cluster planned under several migration caps.

Reaching the energy lower bound usually means moving almost every VM. An operator choosing a cap (or a
migration cost) wants to see what each extra migration buys: this sweep gives one point per cap, with
the points that another point beats on energy, migrations and memory moved marked as dominated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from advisor.config import PlanSettings
from advisor.core import Cluster, Forecast, Plan
from advisor.migration.predict import MigrationPrediction
from advisor.optimize.demand import JointHistory
from advisor.optimize.fleet import plan_fleet

GIB = 1024.0


@dataclass(frozen=True)
class ParetoPoint:
    migration_cap: float
    migrations: int
    mem_moved_gib: float
    energy_kwh_per_day: float
    active_hosts: int
    status: str
    dominated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def point_of(cluster: Cluster, plan: Plan, cap: float) -> ParetoPoint:
    size = cluster.vm_by_name
    moved = {m.vm for m in plan.migrations}
    return ParetoPoint(
        migration_cap=cap,
        migrations=len(plan.migrations),
        mem_moved_gib=round(sum(size[vm].mem_mib for vm in moved) / GIB, 3),
        energy_kwh_per_day=round(plan.after.energy_kwh_per_day, 3),
        active_hosts=plan.after.active_hosts,
        status=plan.status.value,
    )


def mark_dominated(points: Sequence[ParetoPoint]) -> list[ParetoPoint]:
    """A feasible point is dominated when another is no worse on energy, migrations and memory moved,
    and better on one of them; infeasible points are never on the front."""

    def key(p: ParetoPoint) -> tuple[float, int, float]:
        return (p.energy_kwh_per_day, p.migrations, p.mem_moved_gib)

    feasible = [p for p in points if p.status != "infeasible"]

    def beaten(p: ParetoPoint) -> bool:
        return p.status == "infeasible" or any(
            all(a <= b for a, b in zip(key(q), key(p), strict=True)) and key(q) != key(p) for q in feasible
        )

    return [ParetoPoint(**{**asdict(p), "dominated": beaten(p)}) for p in points]


def pareto_sweep(
    cluster: Cluster,
    forecast: Forecast,
    settings: PlanSettings,
    plan: Plan,
    progress: Callable[[str], None] | None = None,
    moved_at: Mapping[str, datetime] | None = None,
    history: JointHistory | None = None,
    moves: Mapping[str, MigrationPrediction] | None = None,
) -> list[ParetoPoint]:
    """`plan` (made under `settings`) and one plan per cap in `settings.pareto_caps`, each with
    `settings.pareto_time_limit_s` of CP-SAT. Forced moves (maintenance, rules, overload) are made under
    every cap, so cap 0 shows the repairs alone. With short time limits a larger cap can come out worse
    than a smaller one: that point is then marked dominated rather than hidden."""
    points = [point_of(cluster, plan, settings.migration_cap)]
    for cap in sorted(set(settings.pareto_caps)):
        if progress:
            progress(f"pareto: migration cap {cap:g}")
        capped = settings.model_copy(
            update={"migration_cap": cap, "time_limit_s": settings.pareto_time_limit_s}
        )
        point = plan_fleet(cluster, forecast, capped, moved_at=moved_at, history=history, moves=moves)
        points.append(point_of(cluster, point, cap))
    main = points[0]
    points.sort(key=lambda p: (p.migration_cap, p is not main))
    return mark_dominated(points)
