"""plan_cluster end to end: feasible, sequenced plans; infeasible ones that say why; lossless JSON."""

from __future__ import annotations

import time

import pytest
from optimize_instances import host, instance, placement_problems, random_instance, vm

from advisor.config import PlanSettings
from advisor.core import HostState, MigrationReason, Plan, PlanStatus, PowerModel, Rules
from advisor.errors import InputError
from advisor.optimize import cpsat, plan_cluster
from advisor.optimize import plan as plan_module
from advisor.optimize.heuristics import HEURISTICS, HeuristicResult
from advisor.optimize.problem import build_problem

FAST = {"time_limit_s": 2.0}


def chains_reach_the_target(cluster, plan: Plan) -> bool:  # noqa: ANN001
    where = dict(cluster.placement)
    for m in sorted(plan.migrations, key=lambda m: m.wave):
        if where[m.vm] != m.source:
            return False
        where[m.vm] = m.destination
    return where == dict(plan.placement)


@pytest.fixture(scope="module")
def planned() -> tuple:
    cluster, forecast = random_instance(11, 8, 48, 0.4, overloaded=1)
    stages: list[str] = []
    plan = plan_cluster(cluster, forecast, PlanSettings(**FAST), progress=stages.append)
    return cluster, forecast, plan, stages


def test_a_plan_is_feasible_sequenced_and_consistent(planned: tuple) -> None:
    cluster, forecast, plan, stages = planned
    assert plan.status in (PlanStatus.OPTIMAL, PlanStatus.FEASIBLE)
    assert placement_problems(cluster, forecast, plan.placement, PlanSettings()) == []
    assert chains_reach_the_target(cluster, plan)
    assert (
        plan.cluster_fingerprint == cluster.fingerprint()
        and plan.forecast_fingerprint == forecast.fingerprint()
    )
    assert plan.created_at == forecast.made_at
    assert (
        stages[:3] == ["model", "bounds", "heuristics"] and "cp-sat" in stages and stages[-1] == "sequencing"
    )
    maintenance = {h.name for h in cluster.hosts if h.state == HostState.MAINTENANCE}
    assert maintenance and not maintenance & set(plan.placement.values())
    assert all(m.reason == MigrationReason.MAINTENANCE for m in plan.migrations if m.source in maintenance)
    assert plan.before.hosts_over_headroom >= 1 and plan.after.hosts_over_headroom == 0
    used = set(plan.placement.values())
    up = {h.name for h in cluster.hosts if h.state == HostState.UP}
    assert set(plan.standby) == up - used
    assert plan.after.active_hosts == len(used) <= plan.before.active_hosts
    assert plan.bounds.hosts <= plan.after.active_hosts
    assert plan.bounds.energy_kwh_per_day <= plan.after.energy_kwh_per_day <= plan.before.energy_kwh_per_day
    assert all(
        m.predicted_time_s > 0 and m.predicted_mib >= cluster.vm_by_name[m.vm].mem_mib
        for m in plan.migrations
    )


def test_a_real_plan_round_trips_through_json(planned: tuple) -> None:
    plan = planned[2]
    assert plan.migrations
    assert Plan.from_json(plan.to_json()) == plan


def test_the_migration_cap_only_lets_forced_moves_through() -> None:
    cluster, forecast = random_instance(3, 6, 30, 0.3, rules=False)
    on_maintenance = [
        v.name for v in cluster.vms if cluster.host_by_name[v.host].state == HostState.MAINTENANCE
    ]
    assert on_maintenance
    plan = plan_cluster(cluster, forecast, PlanSettings(migration_cap=0.0, **FAST))
    assert plan.status != PlanStatus.INFEASIBLE
    assert {m.vm for m in plan.migrations if m.reason != MigrationReason.PARK} == set(on_maintenance)


def test_goal_balance_lowers_the_peak_and_powers_nothing_off() -> None:
    hosts = [host(f"h{i}", cores=16) for i in range(4)]
    vms = [vm(f"v{i}", "h0" if i < 6 else "h1", 8) for i in range(8)]
    cluster, forecast = instance(hosts, vms, {v.name: 2.0 for v in vms})  # h0 at 75%, h2 and h3 idle
    plan = plan_cluster(cluster, forecast, PlanSettings(goal="balance", **FAST))
    assert plan.status != PlanStatus.INFEASIBLE
    assert plan.standby == () and plan.after.active_hosts == 4
    assert plan.after.peak_cpu_util < plan.before.peak_cpu_util
    assert plan.after.peak_cpu_util <= 0.25 + 1e-9  # 16 cores of demand over 64 cores
    assert {m.reason for m in plan.migrations} == {MigrationReason.BALANCE}


def test_balance_weight_is_what_a_point_of_peak_is_worth_against_migrations() -> None:
    hosts = [host(f"h{i}", cores=16) for i in range(4)]
    vms = [vm(f"v{i}", "h0" if i < 6 else "h1", 8) for i in range(8)]
    cluster, forecast = instance(hosts, vms, {v.name: 2.0 for v in vms})  # h0 at 75%, within headroom
    free = plan_cluster(cluster, forecast, PlanSettings(goal="balance", balance_w_per_pct=0.0, **FAST))
    assert free.migrations == () and free.after.peak_cpu_util == free.before.peak_cpu_util  # nothing to gain
    keen = plan_cluster(cluster, forecast, PlanSettings(goal="balance", balance_w_per_pct=50.0, **FAST))
    assert keen.migrations and keen.after.peak_cpu_util < free.after.peak_cpu_util


CONTRADICTIONS = {
    "affinity and anti-affinity": (
        Rules(affinity=(("a", "b"),), anti_affinity=(("a", "b"),)),
        {},
        ["a", "b"],
    ),
    "pinned to maintenance only": (Rules(pins={"a": ("m",)}), {}, ["a"]),
    "fits nowhere": (Rules(), {"b": 40.0}, ["b"]),
    "unmovable on maintenance": (Rules(), {}, ["stuck"]),
    "anti-affinity needs more hosts": (Rules(anti_affinity=(("a", "b", "c"),)), {}, ["a", "b", "c"]),
}


@pytest.mark.parametrize("case", list(CONTRADICTIONS))
def test_contradictions_give_an_infeasible_plan_naming_the_vms(case: str) -> None:
    rules, cpu_override, blamed = CONTRADICTIONS[case]
    hosts = [host("m", state="maintenance"), host("h1"), host("h2")]
    vms = [
        vm("a", "h1"),
        vm("b", "h2"),
        vm("c", "h1"),
        vm("stuck", "m" if "unmovable" in case else "h2", movable=False),
    ]
    cpu = {v.name: 2.0 for v in vms} | cpu_override
    cluster, forecast = instance(hosts, vms, cpu, rules)
    plan = plan_cluster(cluster, forecast, PlanSettings(**FAST))
    assert plan.status == PlanStatus.INFEASIBLE
    assert set(blamed) <= set(plan.blocking_vms)
    assert plan.migrations == () and dict(plan.placement) == cluster.placement
    assert all(name in plan.message for name in blamed)
    assert plan.before == plan.after
    assert Plan.from_json(plan.to_json()) == plan


def test_a_sequence_that_cannot_be_ordered_makes_the_plan_infeasible() -> None:
    # two full hosts must trade their big VMs (pins force it) and no third host has room to park
    hosts = [host("h1", mem_gib=64), host("h2", mem_gib=64)]
    vms = [vm("x", "h1", 48), vm("y", "h2", 48)]
    rules = Rules(pins={"x": ("h2",), "y": ("h1",)})
    cluster, forecast = instance(hosts, vms, {"x": 1.0, "y": 1.0}, rules)
    plan = plan_cluster(cluster, forecast, PlanSettings(**FAST))
    assert plan.status == PlanStatus.INFEASIBLE
    assert set(plan.blocking_vms) == {"x", "y"} and "no safe migration order" in plan.message
    assert plan.migrations == ()


def test_a_forecast_missing_vms_is_an_input_error() -> None:
    cluster, forecast = random_instance(1, 4, 10)
    partial = type(forecast)(
        forecast.made_at,
        forecast.horizon_s,
        forecast.model,
        forecast.cluster_fingerprint,
        dict(list(forecast.vms.items())[:5]),
    )
    with pytest.raises(InputError, match="no entry for 5 VM"):
        plan_cluster(cluster, partial, PlanSettings(**FAST))


def test_an_empty_cluster_plans_to_standby() -> None:
    cluster, forecast = instance([host("h1"), host("h2", state="standby")], [], {})
    plan = plan_cluster(cluster, forecast, PlanSettings(**FAST))
    assert plan.status != PlanStatus.INFEASIBLE and plan.migrations == ()
    assert plan.standby == ("h1",) and plan.after.active_hosts == 0


def gives_up(problem) -> HeuristicResult:  # noqa: ANN001
    n = len(problem.items)
    return HeuristicResult("gives-up", (-1,) * n, tuple(range(n)))


def test_host_emptying_search_plans_when_every_heuristic_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(HEURISTICS, "consolidate", (gives_up,))
    monkeypatch.setattr(cpsat, "FULL_MODEL_VARS", 0)  # CP-SAT keeps what the search found
    cluster, forecast = random_instance(4, 6, 30, 0.4, overloaded=1)
    plan = plan_cluster(cluster, forecast, PlanSettings(**FAST))
    assert plan.status != PlanStatus.INFEASIBLE and plan.solver == "evacuation"
    assert plan.after.active_hosts < plan.before.active_hosts
    assert placement_problems(cluster, forecast, plan.placement, PlanSettings()) == []
    assert chains_reach_the_target(cluster, plan)


def test_cpsat_alone_plans_when_every_heuristic_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(HEURISTICS, "consolidate", (gives_up,))
    monkeypatch.setattr(plan_module, "evacuate", lambda *_: None)
    cluster, forecast = random_instance(4, 6, 30, 0.4, overloaded=1)
    plan = plan_cluster(cluster, forecast, PlanSettings(**FAST))
    assert plan.status != PlanStatus.INFEASIBLE and plan.solver == "cp-sat"
    assert placement_problems(cluster, forecast, plan.placement, PlanSettings()) == []
    assert chains_reach_the_target(cluster, plan)


def test_the_plan_that_draws_least_is_searched_from_too() -> None:
    """A candidate with less power than the best by objective gets its own host-emptying search (whose
    exchanges cut its migrations); the result joins the candidates, judged on the same objective."""
    power = PowerModel(idle_w=100, max_w=200, standby_w=10)
    hosts = [host(name, cores=10, power=power) for name in ("e", "r", "k")]
    vms = [vm("base", "k", 8), vm("big", "e", 64), vm("small", "r", 4)]
    cluster, forecast = instance(hosts, vms, {"base": 5.0, "big": 2.0, "small": 2.0})
    problem = build_problem(cluster, forecast, PlanSettings())
    stay, thrifty = problem.start, (2, 2, 1)  # 3 hosts, no move; 2 hosts, big moved
    assert problem.watts(thrifty) < problem.watts(stay) - plan_module.THRIFT_W
    options = [(0.0, 1, "stays", stay), (1.0, 1, "thrifty", thrifty)]  # as if staying won the objective
    plan_module._search_thriftiest(problem, options, time.perf_counter() + 60.0)
    assert len(options) == 3 and options[2][2] == "evacuation"
    assert options[2][3] == (2, 0, 0) and options[2][0] == pytest.approx(problem.objective((2, 0, 0)))
    alone = [(problem.objective(thrifty), 1, "thrifty", thrifty), (problem.objective(stay), 1, "stays", stay)]
    plan_module._search_thriftiest(problem, alone, time.perf_counter() + 60.0)
    assert len(alone) == 2  # the least power is already the best objective: nothing to add
