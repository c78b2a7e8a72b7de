"""A fleet is planned cluster by cluster: no move crosses clusters, and the union is a sound plan."""

from __future__ import annotations

import sys

import pytest
from optimize_instances import host, instance, vm

from advisor.config import PlanSettings
from advisor.core import Rules
from advisor.errors import InputError
from advisor.execute import dry_run
from advisor.optimize import plan_cluster, plan_fleet
from advisor.optimize.fleet import split_by_cluster

FAST = PlanSettings(time_limit_s=2.0)


def two_clusters(rules: Rules | None = None) -> tuple:
    """Cluster a: one hot host and an empty one; cluster b: three half-empty hosts and one in maintenance."""
    hosts = [host("a1", cluster="a"), host("a2", cluster="a")]
    hosts += [host(f"b{i}", cluster="b") for i in range(1, 4)] + [
        host("b4", state="maintenance", cluster="b")
    ]
    vms = [vm(f"x{i}", "a1") for i in range(6)] + [vm(f"y{i}", f"b{1 + i % 4}") for i in range(8)]
    cpu = {f"x{i}": 6.0 for i in range(6)} | {f"y{i}": 3.0 for i in range(8)}
    return instance(hosts, vms, cpu, rules)


@pytest.mark.parametrize("parallel", [1, 2])
def test_no_move_crosses_clusters_and_the_union_passes_the_dry_run(parallel: int) -> None:
    cluster, forecast = two_clusters(Rules(anti_affinity=(("x0", "y0"),)))
    settings = FAST.model_copy(update={"parallel_clusters": parallel})
    plan = plan_fleet(cluster, forecast, settings)
    label = {h.name: h.cluster for h in cluster.hosts}
    assert plan.migrations and all(label[m.source] == label[m.destination] for m in plan.migrations)
    assert {label[m.source] for m in plan.migrations} == {"a", "b"}  # both clusters had work
    assert plan.placement["y3"] != "b4"  # maintenance host evacuated
    assert dry_run(cluster, forecast, plan, settings).ok


def test_fleet_figures_add_up_the_clusters() -> None:
    cluster, forecast = two_clusters()
    parts = split_by_cluster(cluster, forecast)
    assert [p.name for p, _ in parts] == ["test/a", "test/b"]
    alone = [plan_cluster(p, f, FAST) for p, f in parts]
    fleet = plan_fleet(cluster, forecast, FAST)
    assert fleet.before.active_hosts == sum(p.before.active_hosts for p in alone)
    assert fleet.before.energy_kwh_per_day == pytest.approx(sum(p.before.energy_kwh_per_day for p in alone))
    assert fleet.bounds.hosts_cpu == sum(p.bounds.hosts_cpu for p in alone)
    assert fleet.cluster_fingerprint == cluster.fingerprint()
    assert set(fleet.placement) == {v.name for v in cluster.vms}


def test_one_infeasible_cluster_makes_the_fleet_plan_infeasible_and_named() -> None:
    cluster, forecast = two_clusters(Rules(affinity=(("y0", "y1"),), anti_affinity=(("y0", "y1"),)))
    plan = plan_fleet(cluster, forecast, FAST)
    assert plan.status.value == "infeasible" and {"y0", "y1"} <= set(plan.blocking_vms)
    assert "test/b:" in plan.message


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (Rules(affinity=(("x0", "y0"),)), r"group \[x0, y0\] spans clusters a, b"),
        (Rules(pins={"x0": ("b1", "b2")}), "VM x0 is pinned only to hosts outside its cluster a"),
    ],
)
def test_rules_only_another_cluster_could_meet_are_named(rules: Rules, message: str) -> None:
    cluster, forecast = two_clusters(rules)
    with pytest.raises(InputError, match=message):
        plan_fleet(cluster, forecast, FAST)


@pytest.mark.slow  # starting a local Ray takes 10-60 s; skipped where Ray (an optional extra) is absent
def test_ray_plans_the_same_clusters_as_processes() -> None:
    ray = pytest.importorskip("ray")
    cluster, forecast = two_clusters(Rules(anti_affinity=(("x0", "y0"),)))
    settings = FAST.model_copy(update={"engine": "ray", "workers": 1})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = plan_fleet(cluster, forecast, settings)
        assert ray.is_initialized()  # a Ray the caller started is the caller's to stop
    finally:
        ray.shutdown()
    local = plan_fleet(cluster, forecast, FAST.model_copy(update={"workers": 1}))
    assert on_ray.placement == local.placement and on_ray.after == local.after
    assert dry_run(cluster, forecast, on_ray, settings).ok


def test_ray_missing_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    cluster, forecast = two_clusters()
    with pytest.raises(InputError, match='plan.engine = "ray" needs Ray'):
        plan_fleet(cluster, forecast, FAST.model_copy(update={"engine": "ray"}))
