"""Peak model joint: a host holds VMs whose summed history stays within headroom at its P95."""

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
from advisor.optimize import plan_cluster
from advisor.optimize.demand import joint_history, peak_of
from advisor.optimize.problem import build_problem

JOINT = PlanSettings(peak_model="joint", time_limit_s=2.0)
STEPS = 288  # a day at 5 minutes


def metrics_of(series: dict[str, np.ndarray]) -> pd.DataFrame:
    ts = pd.date_range(T0 - pd.Timedelta(days=1), periods=STEPS, freq="5min", tz="UTC")
    return pd.DataFrame(
        [
            {"vm": vm, "ts": t, "cpu_cores": float(x), "mem_mib": 1024.0}
            for vm, xs in series.items()
            for t, x in zip(ts, xs, strict=True)
        ]
    )


def day_and_night() -> tuple[Cluster, Forecast, pd.DataFrame]:
    """Two VMs of 6 cores at P95 on two 10-core hosts (8 within headroom): one busy by day, the other by
    night. Their P95s add up to 12, their sum never passes 7."""
    hosts = [host("h1", cores=10), host("h2", cores=10)]
    cluster, forecast = instance(hosts, [vm("day", "h1"), vm("night", "h2")], {"day": 6.0, "night": 6.0})
    phase = np.linspace(0, 2 * np.pi, STEPS, endpoint=False)
    day = 3.5 + 2.5 * np.sin(phase)
    return cluster, forecast, metrics_of({"day": day, "night": 7.0 - day})


def test_each_vm_keeps_its_forecast_peak_and_the_history_its_shape() -> None:
    cluster, forecast, metrics = day_and_night()
    history = joint_history(cluster, forecast, metrics, hours=24)
    assert history.cpu.shape == (2, STEPS)
    for name in ("day", "night"):
        assert float(peak_of(history.of(name))) == pytest.approx(6.0, rel=1e-5)
    assert history.peak(["day", "night"]) < 6.0 * 1.2  # far below the 12 the sum model counts
    short = joint_history(cluster, forecast, metrics, hours=6)
    assert short.cpu.shape == (2, 72)


def test_a_vm_without_history_is_flat_at_its_forecast_peak() -> None:
    cluster, forecast, metrics = day_and_night()
    history = joint_history(cluster, forecast, metrics[metrics["vm"] == "day"], hours=24)
    assert np.allclose(history.of("night"), 6.0)
    assert history.peak(["day", "night"]) == pytest.approx(12.0, rel=1e-5)


def test_joint_packs_what_the_sum_cannot_and_the_plan_holds_at_every_wave() -> None:
    cluster, forecast, metrics = day_and_night()
    history = joint_history(cluster, forecast, metrics, hours=24)
    summed = plan_cluster(cluster, forecast, PlanSettings(time_limit_s=2.0))
    joint = plan_cluster(cluster, forecast, JOINT, history=history)
    assert summed.after.active_hosts == 2 and summed.migrations == ()
    assert joint.after.active_hosts == 1 and len(joint.migrations) == 1
    assert joint.after.peak_cpu_util <= 0.8 + 1e-9 and joint.after.hosts_over_headroom == 0


def test_vms_that_peak_together_gain_nothing() -> None:
    cluster, forecast, metrics = day_and_night()
    same = metrics.assign(cpu_cores=metrics.groupby("ts")["cpu_cores"].transform("first"))
    history = joint_history(cluster, forecast, same, hours=24)
    plan = plan_cluster(cluster, forecast, JOINT, history=history)
    assert plan.after.active_hosts == 2 and plan.migrations == ()


def test_joint_without_history_is_an_input_error() -> None:
    cluster, forecast, _ = day_and_night()
    with pytest.raises(InputError, match="peak_model"):
        build_problem(cluster, forecast, JOINT)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_every_host_of_a_joint_plan_holds_its_summed_history(seed: int) -> None:
    cluster, forecast = random_instance(seed, 6, 30, 0.45, overloaded=1)
    rng = np.random.default_rng(seed)
    phase = np.linspace(0, 2 * np.pi, STEPS, endpoint=False)
    series = {
        v.name: np.maximum(1.0 + np.sin(phase + rng.uniform(0, 2 * np.pi)) + rng.normal(0, 0.3, STEPS), 0.0)
        for v in cluster.vms
    }
    history = joint_history(cluster, forecast, metrics_of(series), hours=24)
    plan = plan_cluster(cluster, forecast, JOINT, history=history)
    if plan.status.value == "infeasible":
        return
    for h in cluster.hosts:
        vms = [vm for vm, where in plan.placement.items() if where == h.name]
        assert history.peak(vms) <= h.cpu_cores * JOINT.cpu_headroom + 1e-6
    assert plan.after.hosts_over_headroom == 0
    assert waves_hold(cluster, plan, history)


def waves_hold(cluster: Cluster, plan, history) -> bool:  # noqa: ANN001
    """Every wave, with its VMs on both hosts, keeps each host within headroom or its starting peak."""
    where: dict[str, tuple[str, ...]] = {vm: (h,) for vm, h in cluster.placement.items()}

    def peaks() -> dict[str, float]:
        return {h.name: history.peak([vm for vm, hs in where.items() if h.name in hs]) for h in cluster.hosts}

    limit = {
        h: max(p, cluster.host_by_name[h].cpu_cores * JOINT.cpu_headroom) + 1e-6 for h, p in peaks().items()
    }
    for wave in plan.waves:
        for m in wave:
            where[m.vm] = (m.source, m.destination)
        if any(p > limit[h] for h, p in peaks().items()):
            return False
        for m in wave:
            where[m.vm] = (m.destination,)
    return True
