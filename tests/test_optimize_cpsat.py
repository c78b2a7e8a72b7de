"""CP-SAT: finds what greedy packing misses, is never worse than its hint, keeps every rule."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from optimize_instances import host, instance, placement_problems, random_instance, vm

from advisor.config import PlanSettings
from advisor.core import PowerModel, Rules
from advisor.optimize import cpsat
from advisor.optimize.cpsat import candidate_hosts, solve_cpsat
from advisor.optimize.heuristics import HEURISTICS, ffd, pabfd2d
from advisor.optimize.problem import build_problem

FREE_MOVES = {
    "migration_cost_w": 0.0,
    "migration_cost_w_per_gib": 0.0,
    "cpu_headroom": 1.0,
    "migration_cap": 1.0,
}


def ffd_trap() -> tuple:
    """CPU 5, 4, 4, 3, 2, 2 on hosts of 10 cores: FFD opens three hosts, {5, 3, 2} + {4, 4, 2} needs two."""
    power = PowerModel(idle_w=100, max_w=200, standby_w=10)
    hosts = [host(f"h{i}", cores=10, power=power) for i in range(3)]
    sizes = {"a": 5.0, "b": 4.0, "c": 4.0, "d": 3.0, "e": 2.0, "f": 2.0}
    vms = [vm(name, f"h{k % 3}", 4) for k, name in enumerate(sizes)]
    return instance(hosts, vms, sizes)


def test_cpsat_packs_what_first_fit_decreasing_cannot() -> None:
    cluster, forecast = ffd_trap()
    problem = build_problem(cluster, forecast, PlanSettings(**FREE_MOVES))
    hint = ffd(problem)
    assert len(set(hint.assign)) == 3
    result = solve_cpsat(problem, hint.assign, 5.0, 1)
    assert result.status == "optimal" and not result.restricted
    assert result.assign is not None and len(set(result.assign)) == 2
    assert problem.objective(result.assign) < problem.objective(hint.assign)


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    goal=st.sampled_from(["consolidate", "balance"]),
    cap=st.sampled_from([0.1, 0.5]),
)
def test_cpsat_is_never_worse_than_its_hint_and_keeps_the_rules(seed: int, goal: str, cap: float) -> None:
    cluster, forecast = random_instance(seed, 7, 35, 0.4, overloaded=1)
    plan_settings = PlanSettings(goal=goal, migration_cap=cap)
    problem = build_problem(cluster, forecast, plan_settings)
    if problem.contradictions:
        return
    hints = [
        r
        for r in (h(problem) for h in HEURISTICS[goal])
        if r.complete and problem.moves(r.assign) <= problem.limit
    ]
    if not hints:
        return
    hint = min(hints, key=lambda r: problem.objective(r.assign)).assign
    result = solve_cpsat(problem, hint, 1.0, 2)
    assert result.assign is not None
    assert problem.objective(result.assign) <= problem.objective(hint)
    assert problem.moves(result.assign) <= problem.limit
    assert placement_problems(cluster, forecast, problem.placement(result.assign), plan_settings) == []


def test_candidates_keep_current_and_hint_hosts_and_cut_the_rest() -> None:
    cluster, forecast = random_instance(5, 9, 40, 0.4)
    problem = build_problem(cluster, forecast, PlanSettings(candidate_hosts=2))
    hint = pabfd2d(problem).assign
    candidates, restricted = candidate_hosts(problem, hint)
    assert restricted
    for i, item in enumerate(problem.items):
        assert set(candidates[i]) <= item.allowed
        assert hint[i] in candidates[i]
        assert {h for h in item.vm_hosts if h in item.allowed} <= set(candidates[i])
        assert len(candidates[i]) <= 2 + len(set(item.vm_hosts)) + 1


def test_the_neighbourhood_search_lowers_the_peak_and_stays_feasible(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(cpsat, "FULL_MODEL_VARS", 0)
    monkeypatch.setattr(cpsat, "ROUND_HOSTS", 6)
    monkeypatch.setattr(cpsat, "ROUND_LIMIT_S", 0.3)
    hosts = [host(f"h{i:02d}", cores=10) for i in range(12)]
    vms = [vm(f"v{i:02d}", "h00" if i < 6 else f"h{i % 11 + 1:02d}", 4) for i in range(24)]
    cpu = {v.name: 1.3 if v.host == "h00" else 1.0 for v in vms}  # h00 at 78%, the others at 10-20%
    cluster, forecast = instance(hosts, vms, cpu)
    plan_settings = PlanSettings(goal="balance", **FREE_MOVES)
    problem = build_problem(cluster, forecast, plan_settings)
    hint = list(problem.start)
    result = solve_cpsat(problem, hint, 3.0, 1)
    assert result.rounds > 1 and result.improved >= 1 and result.restricted
    assert result.assign is not None
    assert problem.objective(result.assign) < problem.objective(hint)
    assert placement_problems(cluster, forecast, problem.placement(result.assign), plan_settings) == []


def test_past_one_model_consolidation_keeps_the_hint_for_the_host_emptying_search(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(cpsat, "FULL_MODEL_VARS", 0)
    cluster, forecast = random_instance(2, 8, 40, 0.4)
    problem = build_problem(cluster, forecast, PlanSettings())
    hint = pabfd2d(problem).assign
    result = solve_cpsat(problem, hint, 3.0, 1)
    assert result.assign == tuple(hint) and result.rounds == 0 and result.status == "skipped"


def test_anti_affinity_and_unmovable_vms_hold_inside_the_model() -> None:
    cluster, forecast = ffd_trap()
    rules = Rules(anti_affinity=(("a", "b"),), pins={"c": ("h2",)})
    cluster, forecast = instance(
        cluster.hosts,
        [*cluster.vms[:5], vm("f", "h2", 4, movable=False)],
        {v: forecast.vms[v].cpu_p95 for v in forecast.vms},
        rules,
    )
    problem = build_problem(cluster, forecast, PlanSettings(**FREE_MOVES))
    result = solve_cpsat(problem, ffd(problem).assign, 5.0, 1)
    assert result.assign is not None
    placement = problem.placement(result.assign)
    assert placement["a"] != placement["b"] and placement["c"] == "h2" and placement["f"] == "h2"
