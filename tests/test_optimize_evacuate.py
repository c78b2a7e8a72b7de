"""The host-emptying search: empties the hosts a fluid plan says to, keeps every rule and the cap."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optimize_instances import host, instance, placement_problems, random_instance, vm

from advisor.config import PlanSettings
from advisor.core import PowerModel
from advisor.optimize import evacuate as evacuate_module
from advisor.optimize.evacuate import evacuate, fluid_plan, forced_start
from advisor.optimize.heuristics import pabfd2d
from advisor.optimize.problem import build_problem

LATER = 60.0  # seconds: a deadline no test reaches


def big_and_small() -> tuple:
    """Two efficient 40-core hosts (b1 at 65%, b2 at 15%) and an inefficient 10-core one (s at 60%).
    Only one host can be emptied: b2, the least utilised, which PABFD-2D picks (b1 is then full and s
    stays), or s, which saves more because s draws 10 W per core where b draws 2.5."""
    power = PowerModel(idle_w=100, max_w=200, standby_w=10)
    hosts = [host(name, cores=40, power=power) for name in ("b1", "b2")] + [host("s", cores=10, power=power)]
    vms = [vm(f"b1-{k}", "b1", 4) for k in range(13)]
    vms += [vm(f"b2-{k}", "b2", 4) for k in range(3)] + [vm(f"s-{k}", "s", 4) for k in range(3)]
    return instance(hosts, vms, {v.name: 2.0 for v in vms})


def test_the_fluid_plan_empties_the_inefficient_host_that_greedy_keeps() -> None:
    cluster, forecast = big_and_small()
    problem = build_problem(cluster, forecast, PlanSettings())
    keep = fluid_plan(problem)
    assert keep[2] == pytest.approx(0.0) and keep[0] == pytest.approx(1.0)
    greedy = pabfd2d(problem)
    result = evacuate(problem, greedy.assign, time.perf_counter() + LATER)
    assert result is not None
    placement = problem.placement(result.assign)
    assert "s" not in placement.values() and "s" in problem.placement(greedy.assign).values()
    assert problem.objective(result.assign) < problem.objective(greedy.assign)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), cap=st.sampled_from([0.1, 0.5, 1.0]), util=st.floats(0.2, 0.6))
def test_evacuations_keep_rules_and_cap_and_lower_the_objective(seed: int, cap: float, util: float) -> None:
    cluster, forecast = random_instance(seed, 8, 40, util, overloaded=1)
    plan_settings = PlanSettings(migration_cap=cap)
    problem = build_problem(cluster, forecast, plan_settings)
    start = forced_start(problem)
    if problem.contradictions or start is None:
        return
    result = evacuate(problem, None, time.perf_counter() + LATER)
    assert result is not None and all(h >= 0 for h in result.assign)
    assert problem.moves(result.assign) <= problem.limit
    assert problem.objective(result.assign) <= problem.objective(start) + 1e-6
    assert placement_problems(cluster, forecast, problem.placement(result.assign), plan_settings) == []
    assert result.emptied <= result.tried


def test_a_moved_vm_goes_back_home_when_its_host_runs_and_has_room(monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = [host("h1", cores=32), host("h2", cores=32)]
    vms = [vm("a", "h1"), vm("b", "h1"), vm("c", "h2"), vm("d", "h2")]
    cluster, forecast = instance(hosts, vms, {"a": 2.0, "b": 2.0, "c": 2.0, "d": 2.0})
    problem = build_problem(cluster, forecast, PlanSettings())
    monkeypatch.setattr(evacuate_module, "forced_start", lambda _problem: None)
    monkeypatch.setattr(evacuate_module, "PASSES", 0)  # no evacuation: only the way home
    hint = [1, 0, 1, 1]  # a moved to h2 for nothing
    result = evacuate(problem, hint, time.perf_counter() + LATER)
    assert result is not None and result.returned == 1
    assert result.assign == (0, 0, 1, 1)
    assert problem.objective(result.assign) < problem.objective(hint)


def test_without_a_start_there_is_nothing_to_search(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster, forecast = big_and_small()
    problem = build_problem(cluster, forecast, PlanSettings())
    monkeypatch.setattr(evacuate_module, "forced_start", lambda _problem: None)
    assert evacuate(problem, None, time.perf_counter() + LATER) is None


def test_hosts_with_unmovable_vms_stay_on_in_the_fluid_plan() -> None:
    power = PowerModel(idle_w=100, max_w=200, standby_w=10)
    hosts = [host("h1", cores=40, power=power), host("h2", cores=40, power=power)]
    vms = [vm("a", "h1"), vm("stuck", "h2", movable=False)]
    cluster, forecast = instance(hosts, vms, {"a": 1.0, "stuck": 1.0})
    keep = fluid_plan(build_problem(cluster, forecast, PlanSettings()))
    assert np.allclose(keep, [0.0, 1.0])


def swap_instance() -> tuple:
    """Three equal hosts (8 cores within headroom): e ran `big` (64 GiB), r runs `small` (4 GiB), k runs
    `base` (5 cores) and has taken `big`. Emptying e cost a 64-GiB move; emptying r instead costs a 4-GiB
    one for the same power, and no single evacuation gets there (k cannot take both 2-core VMs)."""
    power = PowerModel(idle_w=100, max_w=200, standby_w=10)
    hosts = [host(name, cores=10, power=power) for name in ("e", "r", "k")]
    vms = [vm("base", "k", 8), vm("big", "e", 64), vm("small", "r", 4)]
    return instance(hosts, vms, {"base": 5.0, "big": 2.0, "small": 2.0})


def test_an_emptied_host_is_exchanged_for_one_cheaper_to_empty() -> None:
    cluster, forecast = swap_instance()
    problem = build_problem(cluster, forecast, PlanSettings())
    start = (2, 2, 1)  # big on k, e emptied
    result = evacuate(problem, None, time.perf_counter() + LATER, start=start)
    assert result is not None
    assert result.assign == (2, 0, 0)  # big back home, r emptied instead: small joins it
    assert problem.watts(result.assign) == pytest.approx(problem.watts(start))
    assert problem.objective(result.assign) < problem.objective(start)


def test_no_exchange_when_the_running_host_costs_more_to_empty() -> None:
    cluster, forecast = swap_instance()
    problem = build_problem(cluster, forecast, PlanSettings())
    start = (2, 0, 0)  # small on e, r emptied: bringing small back to r and emptying e costs more
    result = evacuate(problem, None, time.perf_counter() + LATER, start=start)
    assert result is not None and result.assign == start


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), util=st.floats(0.2, 0.6))
def test_a_search_from_a_heuristic_plan_keeps_rules_and_cap_and_lowers_its_objective(
    seed: int, util: float
) -> None:
    cluster, forecast = random_instance(seed, 8, 40, util, overloaded=1)
    plan_settings = PlanSettings()
    problem = build_problem(cluster, forecast, plan_settings)
    start = pabfd2d(problem).assign
    if problem.contradictions or -1 in start or problem.moves(start) > problem.limit:
        return
    result = evacuate(problem, None, time.perf_counter() + LATER, start=start)
    assert result is not None
    assert problem.moves(result.assign) <= problem.limit
    assert problem.objective(result.assign) <= problem.objective(start) + 1e-6
    assert placement_problems(cluster, forecast, problem.placement(result.assign), plan_settings) == []


def test_two_running_hosts_are_exchanged_for_an_emptied_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """k (unmovable `base`, 6 cores) is full with e's `big`; r1 and r2 each run a 150-GiB VM that
    neither the other nor k can take, so no single host can be emptied. Bringing `big` home to e makes
    room on e and k for both: one host fewer."""
    power = PowerModel(idle_w=100, max_w=200, standby_w=10)
    hosts = [host(name, cores=10, power=power) for name in ("e", "r1", "r2", "k")]
    vms = [vm("base", "k", 8, movable=False), vm("big", "e", 64), vm("a", "r1", 150), vm("b", "r2", 150)]
    cluster, forecast = instance(hosts, vms, {"base": 6.0, "big": 2.0, "a": 1.0, "b": 1.0})
    problem = build_problem(cluster, forecast, PlanSettings(migration_cost_w_per_gib=0.1))
    start = (3, 3, 1, 2)  # big on k, e emptied
    result = evacuate(problem, None, time.perf_counter() + LATER, start=start)
    assert result is not None
    assert result.assign[1] == 0 and {result.assign[2], result.assign[3]} <= {0, 3}
    assert problem.objective(result.assign) < problem.objective(start)
    assert placement_problems(cluster, forecast, problem.placement(result.assign), PlanSettings()) == []
    monkeypatch.setattr(evacuate_module, "PAIR_HOSTS", 0)  # single exchanges alone change nothing
    single = evacuate(problem, None, time.perf_counter() + LATER, start=start)
    assert single is not None and single.assign == start
