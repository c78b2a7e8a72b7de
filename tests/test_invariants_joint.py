"""The dry run judges host CPU by the plan's own peak model: a joint plan (packed past the sum of P95s on
purpose) passes it, and a host whose VMs really peak together still fails it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optimize_instances import T0, host, instance, random_instance, vm

from advisor.config import PlanSettings
from advisor.core import Cluster, Forecast
from advisor.errors import InputError
from advisor.execute import dry_run
from advisor.invariants import baseline_of, check_state, placement_violations
from advisor.optimize import plan_cluster
from advisor.optimize.demand import JointHistory, demand_of, joint_history

JOINT = PlanSettings(peak_model="joint", time_limit_s=2.0)
SUM = PlanSettings(time_limit_s=2.0)
STEPS = 96  # a day at 15 minutes
PHASE = np.linspace(0, 2 * np.pi, STEPS, endpoint=False)


def history_of(cluster: Cluster, forecast: Forecast, series: dict[str, np.ndarray]) -> JointHistory:
    ts = pd.date_range(T0 - pd.Timedelta(days=1), periods=STEPS, freq="15min", tz="UTC")
    metrics = pd.DataFrame(
        [
            {"vm": name, "ts": t, "cpu_cores": float(x), "mem_mib": 1024.0}
            for name, xs in series.items()
            for t, x in zip(ts, xs, strict=True)
        ]
    )
    return joint_history(cluster, forecast, metrics, hours=24)


def day_and_night() -> tuple[Cluster, Forecast, JointHistory]:
    """Two VMs of 6 cores at P95 on two 10-core hosts (8 within headroom), one busy by day, the other
    by night: together 12 cores by the sum, under 8 jointly."""
    hosts = [host("h1", cores=10), host("h2", cores=10)]
    cluster, forecast = instance(hosts, [vm("day", "h1"), vm("night", "h2")], {"day": 6.0, "night": 6.0})
    day = 3.5 + 2.5 * np.sin(PHASE)
    return cluster, forecast, history_of(cluster, forecast, {"day": day, "night": 7.0 - day})


def test_a_joint_plan_passes_its_dry_run_and_the_sum_would_have_refused_it() -> None:
    cluster, forecast, history = day_and_night()
    plan = plan_cluster(cluster, forecast, JOINT, history=history)
    assert plan.after.active_hosts == 1 and len(plan.migrations) == 1
    result = dry_run(cluster, forecast, plan, JOINT, history)
    assert result.ok, result.violations
    assert result.states_checked == 2
    demand = demand_of(cluster, forecast)
    assert placement_violations(cluster, demand, plan.placement, JOINT, history) == []
    summed = placement_violations(cluster, demand, plan.placement, SUM)
    assert len(summed) == 1 and "12.00 cores at P95" in summed[0]


def test_a_joint_plan_whose_vms_peak_together_fails_its_dry_run() -> None:
    cluster, forecast, history = day_and_night()
    plan = plan_cluster(cluster, forecast, JOINT, history=history)
    day = 3.5 + 2.5 * np.sin(PHASE)
    together = history_of(cluster, forecast, {"day": day, "night": day})  # the same plan, a worse history
    result = dry_run(cluster, forecast, plan, JOINT, together)
    assert not result.ok
    assert any("cores at P95, over its limit of 8.00" in v for v in result.violations)
    assert all("wave 1" in v for v in result.violations)


def test_the_joint_model_without_history_is_an_input_error() -> None:
    cluster, forecast, history = day_and_night()
    plan = plan_cluster(cluster, forecast, JOINT, history=history)
    with pytest.raises(InputError, match="peak_model"):
        dry_run(cluster, forecast, plan, JOINT)


def test_a_host_already_over_its_joint_peak_may_stay_so_but_no_worse() -> None:
    """The baseline is joint too: a host over headroom at its joint P95 before the plan is excused
    up to that peak, not up to its (higher) sum of P95s."""
    hosts = [host("h1", cores=10), host("h2", cores=10)]
    vms = [vm("a", "h1"), vm("b", "h1"), vm("c", "h2")]
    cluster, forecast = instance(hosts, vms, {"a": 5.0, "b": 5.0, "c": 1.0})
    wave = 0.5 + 4.5 * (np.sin(PHASE) + 1) / 2
    history = history_of(
        cluster, forecast, {"a": wave, "b": np.roll(wave, STEPS // 4), "c": np.full(STEPS, 1.0)}
    )
    demand = demand_of(cluster, forecast)
    start = history.peak(["a", "b"])
    assert 8.0 < start < 10.0  # over headroom jointly, well under the sum of 10
    base = baseline_of(cluster, demand, cluster.placement, JOINT, history)
    assert base.over["h1"][0] == pytest.approx(start)
    occupancy = {"a": ("h1",), "b": ("h1",), "c": ("h2", "h1")}  # c in flight onto the hot host
    assert any("host h1" in v for v in check_state(cluster, demand, occupancy, JOINT, base, history))
    still = {"a": ("h1",), "b": ("h1",), "c": ("h2",)}
    assert check_state(cluster, demand, still, JOINT, base, history) == []


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_every_feasible_joint_plan_passes_its_dry_run(seed: int) -> None:
    cluster, forecast = random_instance(seed, 6, 30, 0.45, overloaded=1)
    rng = np.random.default_rng(seed)
    series = {
        v.name: np.maximum(1.0 + np.sin(PHASE + rng.uniform(0, 2 * np.pi)) + rng.normal(0, 0.3, STEPS), 0.0)
        for v in cluster.vms
    }
    history = history_of(cluster, forecast, series)
    plan = plan_cluster(cluster, forecast, JOINT, history=history)
    if plan.status.value == "infeasible":
        return
    result = dry_run(cluster, forecast, plan, JOINT, history)
    assert result.ok, result.violations[:3]
