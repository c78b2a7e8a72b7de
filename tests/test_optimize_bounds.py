"""Lower bounds: exact on small cases worked by hand, and never above any placement we produce."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optimize_instances import CURVED, host, instance, random_instance, vm

from advisor.config import PlanSettings
from advisor.core import PowerModel
from advisor.optimize.bounds import energy_bound_w, energy_bound_within_w, lower_bounds, objective_bound_w
from advisor.optimize.cpsat import solve_cpsat
from advisor.optimize.evacuate import evacuate
from advisor.optimize.figures import active_after, placement_figures
from advisor.optimize.heuristics import HEURISTICS
from advisor.optimize.power import hull_lines, hull_watts
from advisor.optimize.problem import Loads, build_problem


def test_the_hull_of_a_linear_model_is_the_model() -> None:
    power = PowerModel(idle_w=100, max_w=300)
    assert hull_lines(power) == [(100, 200)]


@given(st.lists(st.floats(0, 400), min_size=2, max_size=12).map(sorted), st.floats(0, 1))
def test_the_hull_never_exceeds_the_curve_and_meets_it_at_the_ends(curve: list[float], u: float) -> None:
    power = PowerModel(curve_w=tuple(curve))
    assert hull_watts(power, u) <= power.watts(u) + 1e-6
    assert hull_watts(power, 0.0) == pytest.approx(curve[0])
    assert hull_watts(power, 1.0) == pytest.approx(curve[-1])


def test_a_convex_curve_is_its_own_hull() -> None:
    power = PowerModel(curve_w=(100, 105, 115, 130, 150))
    for k in range(5):
        assert hull_watts(power, k / 4) == pytest.approx(power.watts(k / 4))


def test_the_lp_bound_by_hand() -> None:
    # 4 hosts of 10 cores (100 W idle, 200 W max, 10 W standby), 3 VMs of 5 cores P95 / 3 cores P50.
    # Fluid optimum: 1.5 hosts on: 1.5 * 100 idle + 10 W/core * 9 cores + 2.5 * 10 standby = 265 W.
    power = PowerModel(idle_w=100, max_w=200, standby_w=10)
    hosts = [host(f"h{i}", cores=10, power=power) for i in range(4)]
    vms = [vm(f"v{i}", f"h{i}", 4) for i in range(3)]
    cluster, forecast = instance(hosts, vms, {v.name: 5.0 for v in vms})
    bounds = lower_bounds(build_problem(cluster, forecast, PlanSettings(cpu_headroom=1.0)))
    assert bounds.energy_kwh_per_day == pytest.approx(265 * 24 / 1000, rel=1e-6)
    assert (bounds.hosts_cpu, bounds.hosts_mem) == (2, 1)


def test_host_bounds_take_the_biggest_hosts_first() -> None:
    hosts = [host("small", cores=8, mem_gib=64), host("big", cores=32, mem_gib=512), host("mid", cores=16)]
    vms = [vm("a", "small", 300), vm("b", "mid", 8)]
    cluster, forecast = instance(hosts, vms, {"a": 20.0, "b": 10.0})
    bounds = lower_bounds(build_problem(cluster, forecast, PlanSettings(cpu_headroom=1.0)))
    assert bounds.hosts_cpu == 1 and bounds.hosts_mem == 1  # 30 cores fit the 32-core host
    assert bounds.hosts == 1


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10_000), util=st.floats(0.15, 0.55), goal=st.sampled_from(["consolidate", "balance"])
)
def test_bounds_never_exceed_what_heuristics_and_cpsat_achieve(seed: int, util: float, goal: str) -> None:
    cluster, forecast = random_instance(seed, 6, 30, util, overloaded=1)
    plan_settings = PlanSettings(goal=goal)
    problem = build_problem(cluster, forecast, plan_settings)
    if problem.contradictions:
        return
    bounds = lower_bounds(problem)
    results = [h(problem) for h in HEURISTICS[goal]]
    assigns = [r.assign for r in results if r.complete]
    assert assigns
    cp = solve_cpsat(problem, assigns[-1], 1.0, 1)
    assert cp.assign is not None
    for assign in (*assigns, cp.assign):
        placement = problem.placement(assign)
        fig = placement_figures(
            cluster, problem.demand, placement, active_after(cluster, placement, goal), plan_settings
        )
        assert bounds.hosts <= fig.active_hosts
        assert bounds.energy_kwh_per_day <= fig.energy_kwh_per_day + 1e-9


def test_curved_hosts_keep_the_bound_below_the_heuristics() -> None:
    hosts = [host(f"h{i}", cores=48, mem_gib=384, power=CURVED) for i in range(5)]
    vms = [vm(f"v{i}", f"h{i % 5}", 16) for i in range(20)]
    cluster, forecast = instance(hosts, vms, {v.name: 3.0 + (i % 4) for i, v in enumerate(vms)})
    problem = build_problem(cluster, forecast, PlanSettings())
    bound = lower_bounds(problem).energy_kwh_per_day
    for heuristic in HEURISTICS["consolidate"]:
        placement = problem.placement(heuristic(problem).assign)
        fig = placement_figures(
            cluster,
            problem.demand,
            placement,
            active_after(cluster, placement, "consolidate"),
            PlanSettings(),
        )
        assert bound <= fig.energy_kwh_per_day


def test_the_bound_within_a_migration_budget_by_hand() -> None:
    # two 10-core hosts (100 W idle, 200 W max, 10 W standby), a VM of 4 cores P95 (2.4 P50) on each:
    # moving nothing keeps both on (2 x 124 W); one move lets one host sleep (100 + 48 + 10 W).
    power = PowerModel(idle_w=100, max_w=200, standby_w=10)
    hosts = [host(f"h{i}", cores=10, power=power) for i in range(2)]
    vms = [vm(f"v{i}", f"h{i}", 4) for i in range(2)]
    cluster, forecast = instance(hosts, vms, {v.name: 4.0 for v in vms})
    problem = build_problem(cluster, forecast, PlanSettings(cpu_headroom=1.0))
    assert energy_bound_within_w(problem, 0) == pytest.approx(248.0, rel=1e-6)
    assert energy_bound_within_w(problem, 1) == pytest.approx(158.0, rel=1e-6)
    assert energy_bound_w(problem) == pytest.approx(140.0, rel=1e-6)  # 0.8 of a host on, fluid


def test_a_budget_below_the_forced_moves_has_no_bound() -> None:
    hosts = [host("m", state="maintenance"), host("h1"), host("h2")]
    cluster, forecast = instance(hosts, [vm("a", "m"), vm("b", "m")], {"a": 1.0, "b": 1.0})
    problem = build_problem(cluster, forecast, PlanSettings())
    assert energy_bound_within_w(problem, 1) is None
    assert energy_bound_within_w(problem, 2) is not None


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), util=st.floats(0.2, 0.55))
def test_budget_bounds_sit_between_the_plain_bound_and_plans_moving_as_few(seed: int, util: float) -> None:
    cluster, forecast = random_instance(seed, 8, 40, util, overloaded=1)
    problem = build_problem(cluster, forecast, PlanSettings(migration_cap=1.0))
    if problem.contradictions:
        return
    plain = energy_bound_w(problem)
    previous = math.inf
    for result in sorted(
        (h(problem) for h in HEURISTICS["consolidate"]), key=lambda r: problem.moves(r.assign)
    ):
        if not result.complete:
            continue
        moves = problem.moves(result.assign)
        bound = energy_bound_within_w(problem, moves)
        assert bound is not None and plain - 1e-6 <= bound <= previous + 1e-6
        assert bound <= float(Loads(problem, result.assign).watts_all().sum()) + 1e-6
        previous = bound
    best = objective_bound_w(problem)
    assert best is not None
    for candidate in (*(h(problem) for h in HEURISTICS["consolidate"]), evacuate(problem, None, math.inf)):
        if candidate is not None and all(h >= 0 for h in candidate.assign):
            assert best <= problem.objective(candidate.assign) + 1e-6
