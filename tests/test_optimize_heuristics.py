"""Greedy placements: complete and feasible when they say so, rules kept, forced moves made."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optimize_instances import host, instance, placement_problems, random_instance, vm

from advisor.config import PlanSettings
from advisor.core import MigrationReason, Rules
from advisor.optimize.heuristics import HEURISTICS, ffd, pabfd, pabfd2d, spread
from advisor.optimize.problem import build_problem

ALL = (ffd, pabfd, pabfd2d, spread)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n_hosts=st.integers(3, 9),
    per_host=st.integers(1, 8),
    util=st.floats(0.1, 0.6),
    overloaded=st.integers(0, 2),
    goal=st.sampled_from(["consolidate", "balance"]),
)
def test_complete_placements_are_feasible_and_within_the_move_cap(
    seed: int, n_hosts: int, per_host: int, util: float, overloaded: int, goal: str
) -> None:
    cluster, forecast = random_instance(seed, n_hosts, n_hosts * per_host, util, overloaded=overloaded)
    plan_settings = PlanSettings(goal=goal)
    problem = build_problem(cluster, forecast, plan_settings)
    if problem.contradictions:
        return  # random rules can contradict on tiny clusters; test_optimize_plan covers those
    for heuristic in ALL:
        result = heuristic(problem)
        assert set(result.unplaced) == {i for i, h in enumerate(result.assign) if h < 0}
        if result.complete:
            placement = problem.placement(result.assign)
            assert placement_problems(cluster, forecast, placement, plan_settings) == [], result.name
            if heuristic is not ffd:  # ffd ignores where VMs run; the others respect the migration cap
                assert problem.moves(result.assign) <= problem.limit


def test_roomy_random_clusters_are_placed_completely() -> None:
    for seed in range(20):
        cluster, forecast = random_instance(seed, 8, 40, 0.4, overloaded=1)
        problem = build_problem(cluster, forecast, PlanSettings())
        assert not problem.contradictions
        for heuristic in HEURISTICS["consolidate"]:
            assert heuristic(problem).complete, (seed, heuristic.__name__)


def nearly_consolidated() -> tuple:
    hosts = [host(f"h{i}") for i in range(6)]
    vms, cpu = [], {}
    for i in (1, 3, 4):  # three busy hosts at 70% CPU, 192 GiB
        for k in range(6):
            name = f"b{i}{k}"
            vms.append(vm(name, f"h{i}", 32))
            cpu[name] = 32 * 0.7 / 6
    vms.append(vm("light", "h5", 4))
    cpu["light"] = 1.0
    return instance(hosts, vms, cpu)


def test_pabfd_moves_fewer_vms_than_ffd_when_nearly_consolidated() -> None:
    cluster, forecast = nearly_consolidated()
    problem = build_problem(cluster, forecast, PlanSettings())
    moved = {h.__name__: problem.moves(h(problem).assign) for h in (ffd, pabfd, pabfd2d)}
    assert moved["pabfd"] == moved["pabfd2d"] == 1  # just the light VM, to empty h5
    assert moved["ffd"] > moved["pabfd"]
    placement = problem.placement(pabfd(problem).assign)
    assert "h5" not in placement.values() and placement["light"] in {"h1", "h3", "h4"}


def test_broken_rules_and_maintenance_are_repaired() -> None:
    hosts = [host("m", state="maintenance"), host("a"), host("b"), host("c")]
    vms = [
        vm("on-m", "m"),
        vm("x1", "a"),
        vm("x2", "a"),
        vm("x3", "a"),  # anti-affinity all on one host
        vm("p1", "b"),
        vm("p2", "c"),  # affinity split over two hosts
        vm("pinned", "a"),  # pinned elsewhere
        vm("stuck", "b", movable=False),
    ]
    rules = Rules(affinity=(("p1", "p2"),), anti_affinity=(("x1", "x2", "x3"),), pins={"pinned": ("c",)})
    cluster, forecast = instance(hosts, vms, {v.name: 1.0 for v in vms}, rules)
    problem = build_problem(cluster, forecast, PlanSettings())
    reasons = {
        vm: problem.evicted[i] for i, it in enumerate(problem.items) if i in problem.evicted for vm in it.vms
    }
    assert reasons["on-m"] == MigrationReason.MAINTENANCE
    assert reasons["p1"] == reasons["p2"] == reasons["pinned"] == MigrationReason.RULE
    assert sum(1 for x in ("x1", "x2", "x3") if x in reasons) == 2
    for heuristic in ALL:
        result = heuristic(problem)
        assert result.complete, heuristic.__name__
        placement = problem.placement(result.assign)
        assert placement_problems(cluster, forecast, placement, PlanSettings()) == []
        assert placement["stuck"] == "b"


def test_overload_relief_takes_the_smallest_vms_first() -> None:
    hosts = [host("hot", cores=10), host("cool", cores=10)]
    vms = [vm("big", "hot", 64), vm("mid", "hot", 16), vm("small", "hot", 4), vm("tiny", "hot", 2)]
    cpu = {"big": 4.0, "mid": 2.0, "small": 1.5, "tiny": 1.5}  # 9 cores against 8 of headroom
    cluster, forecast = instance(hosts, vms, cpu)
    problem = build_problem(cluster, forecast, PlanSettings())
    evicted = {problem.items[i].vms[0] for i in problem.evicted}
    assert evicted == {"tiny"}  # minimum migration time: the least memory that relieves the host
    assert problem.limit >= 1


def test_an_item_that_fits_nowhere_is_reported_unplaced() -> None:
    hosts = [host("m", state="maintenance"), host("a", cores=8)]
    vms = [vm("resident", "a"), vm("evacuee", "m")]
    cluster, forecast = instance(hosts, vms, {"resident": 5.0, "evacuee": 5.0})
    problem = build_problem(cluster, forecast, PlanSettings())
    for heuristic in ALL:
        result = heuristic(problem)
        assert not result.complete
        assert [problem.items[i].vms for i in result.unplaced] == [("evacuee",)] or heuristic is ffd


@pytest.mark.parametrize("heuristic", [pabfd, pabfd2d])
def test_consolidation_respects_a_zero_migration_cap(heuristic) -> None:  # noqa: ANN001
    cluster, forecast = nearly_consolidated()
    problem = build_problem(cluster, forecast, PlanSettings(migration_cap=0.0))
    assert problem.limit == 0
    assert problem.moves(heuristic(problem).assign) == 0
