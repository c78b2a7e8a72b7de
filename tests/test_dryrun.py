"""The dry run: plays a plan wave by wave on an in-memory cluster and catches what would go wrong."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optimize_instances import forecast_for, host, instance, random_instance, vm

from advisor.config import PlanSettings
from advisor.core import Migration, MigrationReason, Plan, PlanStatus, Rules
from advisor.errors import InputError
from advisor.execute import dry_run
from advisor.optimize import plan_cluster

FAST = PlanSettings(time_limit_s=1.0)


@pytest.fixture(scope="module")
def swap_plan() -> tuple:
    """Two full hosts trading big VMs, a third to park on: a plan whose order matters."""
    hosts = [host("h1", mem_gib=64), host("h2", mem_gib=64), host("h3", mem_gib=64)]
    vms = [vm("x", "h1", 48), vm("y", "h2", 48)]
    cluster, forecast = instance(
        hosts, vms, {"x": 2.0, "y": 2.0}, Rules(pins={"x": ("h2",), "y": ("h1", "h3")})
    )
    plan = plan_cluster(cluster, forecast, FAST)
    return cluster, forecast, plan


def test_a_good_plan_passes_every_state(swap_plan: tuple) -> None:
    cluster, forecast, plan = swap_plan
    assert plan.status != PlanStatus.INFEASIBLE and len(plan.waves) >= 2
    result = dry_run(cluster, forecast, plan, FAST)
    assert result.ok and result.violations == []
    assert result.states_checked == 2 * len(plan.waves)
    assert result.final_placement == dict(plan.placement)
    assert set(result.to_dict()) == {"ok", "states_checked", "violations", "final_placement"}


def test_squashing_the_waves_is_caught(swap_plan: tuple) -> None:
    cluster, forecast, plan = swap_plan
    squashed = dataclasses.replace(
        plan, migrations=tuple(dataclasses.replace(m, wave=1) for m in plan.migrations)
    )
    result = dry_run(cluster, forecast, squashed, FAST)
    assert not result.ok
    assert any(
        v.startswith("wave 1") and ("MiB reserved" in v or "twice" in v or "should leave" in v)
        for v in result.violations
    )


def test_a_move_into_maintenance_and_a_wrong_end_are_caught(swap_plan: tuple) -> None:
    cluster, forecast, plan = swap_plan
    hosts = tuple(dataclasses.replace(h, state="maintenance") if h.name == "h3" else h for h in cluster.hosts)
    cluster2 = dataclasses.replace(cluster, hosts=hosts)
    forecast2 = forecast_for(cluster2, {v: forecast.vms[v].cpu_p95 for v in forecast.vms})
    ghost = Migration("x", "h1", "h3", MigrationReason.PARK, 1, 1.0, 1.0, 1.0, True)
    bad = dataclasses.replace(
        plan,
        cluster_fingerprint=cluster2.fingerprint(),
        forecast_fingerprint=forecast2.fingerprint(),
        migrations=(ghost,),
    )
    result = dry_run(cluster2, forecast2, bad, FAST)
    assert not result.ok
    assert any("in maintenance" in v and "x" in v for v in result.violations)
    assert any(v.startswith("end: VM") for v in result.violations)


def test_too_many_migrations_on_one_host_in_a_wave_are_caught() -> None:
    hosts = [host("src", state="maintenance")] + [host(f"d{i}") for i in range(3)]
    vms = [vm(f"v{i}", "src") for i in range(3)]
    cluster, forecast = instance(hosts, vms, {v.name: 1.0 for v in vms})
    plan = plan_cluster(cluster, forecast, FAST)
    assert dry_run(cluster, forecast, plan, FAST).ok
    one_wave = dataclasses.replace(
        plan, migrations=tuple(dataclasses.replace(m, wave=1) for m in plan.migrations)
    )
    result = dry_run(cluster, forecast, one_wave, FAST)
    assert any("host src has 3 migrations in flight" in v for v in result.violations)


def test_a_stale_plan_is_refused(swap_plan: tuple) -> None:
    cluster, forecast, plan = swap_plan
    changed = dataclasses.replace(
        cluster, vms=(*cluster.vms[:1], dataclasses.replace(cluster.vms[1], mem_mib=1024.0))
    )
    with pytest.raises(InputError, match="stale plan"):
        dry_run(changed, forecast, plan, FAST)
    other = dataclasses.replace(forecast, model="another")
    with pytest.raises(InputError, match="stale plan.*forecast"):
        dry_run(cluster, other, plan, FAST)


def test_an_infeasible_plan_leaves_the_maintenance_host_loaded_and_says_so() -> None:
    hosts = [host("m", state="maintenance"), host("a", cores=8)]
    cluster, forecast = instance(
        hosts, [vm("resident", "a"), vm("evacuee", "m")], {"resident": 5.0, "evacuee": 5.0}
    )
    plan = plan_cluster(cluster, forecast, FAST)
    assert plan.status == PlanStatus.INFEASIBLE and "evacuee" in plan.blocking_vms
    result = dry_run(cluster, forecast, plan, FAST)
    assert not result.ok and any("maintenance" in v and "evacuee" in v for v in result.violations)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n_hosts=st.integers(3, 8),
    per_host=st.integers(2, 7),
    goal=st.sampled_from(["consolidate", "balance"]),
)
def test_every_random_plan_passes_its_dry_run(seed: int, n_hosts: int, per_host: int, goal: str) -> None:
    cluster, forecast = random_instance(seed, n_hosts, n_hosts * per_host, 0.45, overloaded=1)
    plan_settings = PlanSettings(goal=goal, time_limit_s=0.5, max_concurrent_per_host=1 + seed % 2)
    plan = plan_cluster(cluster, forecast, plan_settings)
    result = dry_run(cluster, forecast, plan, plan_settings)
    if plan.status == PlanStatus.INFEASIBLE:
        assert plan.migrations == () and plan.blocking_vms
    else:
        assert result.ok, result.violations
        assert result.final_placement == dict(plan.placement)
        assert Plan.from_json(plan.to_json()) == plan


def test_a_vm_in_flight_counts_on_both_hosts() -> None:
    hosts = [host("d", mem_gib=64), host("h1"), host("h2"), host("h3")]
    vms = [vm("e", "d", 30), vm("a", "h1", 30), vm("c", "h2", 30)]
    cluster, forecast = instance(hosts, vms, {"e": 1.0, "a": 1.0, "c": 1.0})
    wide = PlanSettings(max_concurrent_per_host=3, time_limit_s=1.0)
    made = plan_cluster(cluster, forecast, wide)

    def hop(name: str, src: str, dst: str, wave: int) -> Migration:
        return Migration(name, src, dst, MigrationReason.CONSOLIDATE, wave, 1.0, 1.0, 1.0, True)

    target = {"e": "h3", "a": "d", "c": "d"}
    safe = (hop("e", "d", "h3", 1), hop("a", "h1", "d", 1), hop("c", "h2", "d", 2))
    plan = dataclasses.replace(made, placement=target, migrations=safe)
    assert dry_run(cluster, forecast, plan, wide).ok
    rushed = dataclasses.replace(plan, migrations=(*safe[:2], dataclasses.replace(safe[2], wave=1)))
    result = dry_run(cluster, forecast, rushed, wide)
    assert result.violations == [
        "wave 1 (in flight): host d: 92160 MiB reserved, over its limit of 65536 (in flight: a, c, e)"
    ]
