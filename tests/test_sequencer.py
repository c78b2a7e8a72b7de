"""The wave sequencer: every in-flight and after-wave state is safe, deadlocks are parked away, and
what cannot be ordered is reported, not looped on."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optimize_instances import host, instance, random_instance, vm

from advisor.config import PlanSettings
from advisor.core import MigrationReason, Rules
from advisor.invariants import baseline_of, check_state
from advisor.optimize.demand import demand_of
from advisor.optimize.heuristics import ffd, pabfd2d
from advisor.optimize.problem import build_problem
from advisor.optimize.sequencer import SequenceResult, sequence


def replay(cluster, forecast, result: SequenceResult, plan_settings: PlanSettings) -> tuple[list[str], dict]:  # noqa: ANN001
    """Every state of the sequence checked from scratch; returns the violations and the final placement."""
    demand = demand_of(cluster, forecast)
    where = dict(cluster.placement)
    baseline = baseline_of(cluster, demand, where, plan_settings)
    problems = []
    for wave in sorted({m.wave for m in result.migrations}):
        moves = [m for m in result.migrations if m.wave == wave]
        per_host = Counter(h for m in moves for h in (m.source, m.destination))
        problems += [
            f"wave {wave}: {h} runs {n}"
            for h, n in per_host.items()
            if n > plan_settings.max_concurrent_per_host
        ]
        occupancy: dict[str, tuple[str, ...]] = {v: (h,) for v, h in where.items()}
        for m in moves:
            assert where[m.vm] == m.source
            occupancy[m.vm] = (m.source, m.destination)
        problems += check_state(cluster, demand, occupancy, plan_settings, baseline)
        where.update({m.vm: m.destination for m in moves})
        problems += check_state(cluster, demand, {v: (h,) for v, h in where.items()}, plan_settings, baseline)
    return problems, where


def swap(with_spare: bool) -> tuple:
    hosts = [host("h1", mem_gib=64), host("h2", mem_gib=64)] + (
        [host("h3", mem_gib=64)] if with_spare else []
    )
    return instance(hosts, [vm("x", "h1", 48), vm("y", "h2", 48)], {"x": 2.0, "y": 2.0})


def test_a_swap_deadlock_is_broken_by_parking() -> None:
    cluster, forecast = swap(with_spare=True)
    target = {"x": "h2", "y": "h1"}
    result = sequence(cluster, demand_of(cluster, forecast), cluster.placement, target, PlanSettings())
    assert not result.infeasible and len(result.parked) == 1
    parked = result.parked[0]
    hops = [(m.source, m.destination, m.reason) for m in result.migrations if m.vm == parked]
    assert hops[0][1] == "h3" and hops[0][2] == MigrationReason.PARK and hops[-1][1] == target[parked]
    problems, final = replay(cluster, forecast, result, PlanSettings())
    assert problems == [] and final == target
    assert result.waves == 3


def test_a_swap_with_nowhere_to_park_is_infeasible_and_names_the_vms() -> None:
    cluster, forecast = swap(with_spare=False)
    result = sequence(
        cluster, demand_of(cluster, forecast), cluster.placement, {"x": "h2", "y": "h1"}, PlanSettings()
    )
    assert result.infeasible and set(result.blocking_vms) == {"x", "y"}
    assert "x" in result.message and "y" in result.message
    assert result.migrations == ()


def test_concurrency_per_host_spreads_moves_over_waves() -> None:
    hosts = [host("src", state="maintenance")] + [host(f"d{i}") for i in range(5)]
    vms = [vm(f"v{i}", "src") for i in range(5)]
    cluster, forecast = instance(hosts, vms, {v.name: 1.0 for v in vms})
    target = {f"v{i}": f"d{i}" for i in range(5)}
    reasons = dict.fromkeys(target, MigrationReason.MAINTENANCE)
    result = sequence(
        cluster, demand_of(cluster, forecast), cluster.placement, target, PlanSettings(), reasons
    )
    assert result.waves == 3 and {m.reason for m in result.migrations} == {MigrationReason.MAINTENANCE}
    assert replay(cluster, forecast, result, PlanSettings()) == ([], target)
    wider = sequence(
        cluster,
        demand_of(cluster, forecast),
        cluster.placement,
        target,
        PlanSettings(max_concurrent_per_host=5),
    )
    assert wider.waves == 1


def test_an_anti_affinity_partner_must_leave_before_the_other_arrives() -> None:
    hosts = [host("h1"), host("h2"), host("h3")]
    cluster, forecast = instance(
        hosts, [vm("a", "h1"), vm("b", "h2")], {"a": 1.0, "b": 1.0}, Rules(anti_affinity=(("a", "b"),))
    )
    result = sequence(
        cluster, demand_of(cluster, forecast), cluster.placement, {"a": "h2", "b": "h3"}, PlanSettings()
    )
    wave = {m.vm: m.wave for m in result.migrations}
    assert wave["a"] > wave["b"]
    assert replay(cluster, forecast, result, PlanSettings())[0] == []


def test_a_host_over_headroom_gets_no_worse_on_the_way() -> None:
    hosts = [host("hot", cores=10), host("h2", cores=10), host("h3", cores=10)]
    vms = [vm("big", "hot"), vm("rest", "hot"), vm("newcomer", "h3")]
    cluster, forecast = instance(hosts, vms, {"big": 5.0, "rest": 4.0, "newcomer": 1.0})  # hot: 9 > 8 cores
    target = {"big": "h2", "rest": "hot", "newcomer": "hot"}
    result = sequence(cluster, demand_of(cluster, forecast), cluster.placement, target, PlanSettings())
    wave = {m.vm: m.wave for m in result.migrations}
    assert wave["newcomer"] > wave["big"]
    assert replay(cluster, forecast, result, PlanSettings()) == ([], target)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n_hosts=st.integers(3, 9),
    per_host=st.integers(2, 8),
    util=st.floats(0.2, 0.6),
    concurrent=st.integers(1, 3),
    reshuffle=st.booleans(),
)
def test_every_wave_of_random_sequences_is_safe(
    seed: int, n_hosts: int, per_host: int, util: float, concurrent: int, reshuffle: bool
) -> None:
    cluster, forecast = random_instance(seed, n_hosts, n_hosts * per_host, util, overloaded=1)
    plan_settings = PlanSettings(max_concurrent_per_host=concurrent)
    problem = build_problem(cluster, forecast, plan_settings)
    result_of = (ffd if reshuffle else pabfd2d)(problem)  # ffd moves nearly everything
    if problem.contradictions or not result_of.complete:
        return
    target = problem.placement(result_of.assign)
    moves = sum(1 for v, h in target.items() if cluster.placement[v] != h)
    result = sequence(cluster, problem.demand, cluster.placement, target, plan_settings)
    problems, final = replay(cluster, forecast, result, plan_settings)
    assert problems == []
    assert result.waves <= 2 * moves
    if result.infeasible:
        assert result.blocking_vms and all(final[v] != target[v] for v in result.blocking_vms)
    else:
        assert final == target


def test_random_sequences_mostly_complete() -> None:
    done = 0
    for seed in range(30):
        cluster, forecast = random_instance(seed, 6, 36, 0.45, overloaded=1)
        problem = build_problem(cluster, forecast, PlanSettings())
        target = problem.placement(ffd(problem).assign)
        done += not sequence(cluster, problem.demand, cluster.placement, target, PlanSettings()).infeasible
    assert done >= 27


def test_a_host_holds_the_memory_of_everything_arriving_and_leaving_in_a_wave() -> None:
    hosts = [host("d", mem_gib=64), host("h1"), host("h2"), host("h3")]
    vms = [vm("e", "d", 30), vm("a", "h1", 30), vm("c", "h2", 30)]
    cluster, forecast = instance(hosts, vms, {"e": 1.0, "a": 1.0, "c": 1.0})
    target = {"e": "h3", "a": "d", "c": "d"}
    wide = PlanSettings(max_concurrent_per_host=3)
    result = sequence(cluster, demand_of(cluster, forecast), cluster.placement, target, wide)
    waves = sorted(m.wave for m in result.migrations)
    assert waves == [1, 1, 2]  # e leaves while one newcomer arrives; the other must wait for e to be gone
    assert replay(cluster, forecast, result, wide) == ([], target)
