"""The energy/migration sweep: one point per migration cap, dominated points marked."""

from __future__ import annotations

from optimize_instances import random_instance

from advisor.config import PlanSettings
from advisor.optimize import plan_fleet
from advisor.optimize.pareto import ParetoPoint, mark_dominated, pareto_sweep


def point(cap: float, migrations: int, mem: float, energy: float, status: str = "feasible") -> ParetoPoint:
    return ParetoPoint(cap, migrations, mem, energy, 0, status)


def test_dominated_points_are_marked() -> None:
    points = mark_dominated(
        [
            point(0.0, 0, 0.0, 100.0),
            point(0.1, 5, 40.0, 90.0),
            point(0.2, 9, 80.0, 92.0),  # more moves and more energy than the 0.1 point
            point(0.3, 9, 20.0, 95.0),  # more moves than 0.1 but less memory moved: still on the front
            point(0.5, 1, 1.0, 50.0, "infeasible"),
        ]
    )
    assert [p.dominated for p in points] == [False, False, True, False, True]


def test_cap_zero_moves_nothing_when_nothing_is_forced_and_a_cap_buys_energy() -> None:
    cluster, forecast = random_instance(4, n_hosts=6, n_vms=30, util=0.3, maintenance=0, rules=False)
    settings = PlanSettings(time_limit_s=2, pareto_caps=[0.0, 0.5], pareto_time_limit_s=2)
    plan = plan_fleet(cluster, forecast, settings)
    zero, main, half = pareto_sweep(cluster, forecast, settings, plan)  # by cap; the plan first on a tie
    assert main.migrations == len(plan.migrations) and main.migration_cap == settings.migration_cap
    assert zero.migration_cap == 0.0 and zero.migrations == 0 and zero.mem_moved_gib == 0
    assert zero.energy_kwh_per_day == round(plan.before.energy_kwh_per_day, 3)
    assert half.migrations > 0 and half.energy_kwh_per_day < zero.energy_kwh_per_day
    assert not zero.dominated  # the only point with no migration
