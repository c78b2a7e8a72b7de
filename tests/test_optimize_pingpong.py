"""Anti-ping-pong: recent movers stay unless they must move; a move must pay back within the payback."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from optimize_instances import T0, host, instance, placement_problems, random_instance, vm

from advisor.config import PlanSettings
from advisor.core import MigrationReason
from advisor.optimize import plan_cluster
from advisor.optimize.problem import build_problem

FAST = {"time_limit_s": 2.0}


def two_light_hosts() -> tuple:
    """Two hosts at 20% CPU: consolidating them saves a host's idle draw (about 140 W)."""
    hosts = [host("h1", cores=32), host("h2", cores=32)]
    vms = [vm("a", "h1"), vm("b", "h1"), vm("c", "h2"), vm("d", "h2")]
    return instance(hosts, vms, {v.name: 3.2 for v in vms})


def moved(plan) -> set[str]:  # noqa: ANN001
    return {m.vm for m in plan.migrations}


def test_recent_movers_stay_and_their_hosts_with_them() -> None:
    cluster, forecast = two_light_hosts()
    free = plan_cluster(cluster, forecast, PlanSettings(**FAST))
    assert free.after.active_hosts == 1 and len(moved(free)) == 2
    recent = {"a": T0 - timedelta(hours=2), "c": T0 - timedelta(hours=23)}  # one on each host
    kept = plan_cluster(cluster, forecast, PlanSettings(**FAST), moved_at=recent)
    assert kept.migrations == () and kept.after.active_hosts == 2
    long_ago = {"a": T0 - timedelta(hours=2), "c": T0 - timedelta(hours=25)}  # c is free again
    again = plan_cluster(cluster, forecast, PlanSettings(**FAST), moved_at=long_ago)
    assert again.after.active_hosts == 1 and moved(again) == {"c", "d"}


def test_a_recent_mover_still_leaves_a_host_in_maintenance() -> None:
    hosts = [host("m", state="maintenance"), host("h1")]
    cluster, forecast = instance(hosts, [vm("a", "m"), vm("b", "h1")], {"a": 1.0, "b": 1.0})
    plan = plan_cluster(cluster, forecast, PlanSettings(**FAST), moved_at={"a": T0 - timedelta(hours=1)})
    assert plan.placement["a"] == "h1"
    assert {m.reason for m in plan.migrations if m.vm == "a"} == {MigrationReason.MAINTENANCE}


def test_an_overloaded_host_sheds_recent_movers_last() -> None:
    hosts = [host("hot", cores=10), host("cool", cores=10)]
    vms = [vm("small", "hot", 4), vm("big", "hot", 8), vm("x", "hot", 16)]
    cluster, forecast = instance(hosts, vms, {"small": 3.0, "big": 3.0, "x": 3.0})  # 90% > 80%
    plain = build_problem(cluster, forecast, PlanSettings())
    assert [plain.items[i].vms for i in plain.evicted] == [("small",)]  # the least memory to copy
    recent = build_problem(cluster, forecast, PlanSettings(), {"small": T0 - timedelta(hours=1)})
    assert [recent.items[i].vms for i in recent.evicted] == [("big",)]


def test_a_shorter_payback_refuses_a_move_that_saves_too_little() -> None:
    # emptying h2 saves about 140 W; two moves of 8 GiB cost 2 x (2 + 4) = 12 W over the 24-h horizon,
    # i.e. 288 W to pay back within one hour
    cluster, forecast = two_light_hosts()
    day = plan_cluster(cluster, forecast, PlanSettings(**FAST))
    hour = plan_cluster(cluster, forecast, PlanSettings(payback_h=1.0, **FAST))
    assert day.after.active_hosts == 1 and len(day.migrations) == 2
    assert hour.migrations == () and hour.after.active_hosts == 2
    problem = build_problem(cluster, forecast, PlanSettings(payback_h=1.0))
    assert problem.items[0].vm_cost == (24 * (2.0 + 0.5 * 8),)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), share=st.floats(0.1, 0.6))
def test_recent_movers_move_only_when_they_must(seed: int, share: float) -> None:
    cluster, forecast = random_instance(seed, 6, 30, 0.4, overloaded=1)
    names = [v.name for v in cluster.vms]
    recent = {n: T0 - timedelta(hours=1) for n in names[: int(share * len(names))]}
    plan_settings = PlanSettings(**FAST)
    plan = plan_cluster(cluster, forecast, plan_settings, moved_at=recent)
    if plan.status.value == "infeasible":
        return
    forced = {MigrationReason.MAINTENANCE, MigrationReason.RULE, MigrationReason.OVERLOAD}
    assert all(m.reason in forced for m in plan.migrations if m.vm in recent)
    assert placement_problems(cluster, forecast, plan.placement, plan_settings) == []
