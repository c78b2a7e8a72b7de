"""The synthetic generator: deterministic, realistic enough for every stage to have work, and always valid."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from advisor.collect.synthetic import generate
from advisor.config import PowerSettings, SyntheticSettings
from advisor.core import Cluster, HostState
from advisor.errors import InputError

POWER = PowerSettings.model_validate({})


def synth(**kw: object) -> SyntheticSettings:
    return SyntheticSettings.model_validate(kw)


@pytest.fixture(scope="module")
def fortnight() -> tuple[SyntheticSettings, Cluster, pd.DataFrame]:
    s = synth(seed=11, hosts=24, vms=200, days=14)
    cluster, metrics = generate(s, POWER)
    return s, cluster, metrics


def host_util(cluster: Cluster, metrics: pd.DataFrame) -> pd.DataFrame:
    """Hosts x timestamps CPU utilisation under the initial placement."""
    on = metrics["vm"].map(cluster.placement)
    load = metrics.groupby([on, metrics["ts"]])["cpu_cores"].sum().unstack()
    cores = pd.Series({h.name: h.cpu_cores for h in cluster.hosts})
    return load.div(cores[load.index], axis=0)


def check_invariants(s: SyntheticSettings, cluster: Cluster, metrics: pd.DataFrame) -> None:
    """What every generated cluster must satisfy, whatever the settings."""
    vms, hosts = cluster.vm_by_name, cluster.host_by_name
    assert len(vms) == s.vms and len(hosts) == s.hosts
    steps = s.days * 86400 // s.step_s
    assert len(metrics) == s.vms * steps
    assert (metrics.groupby("vm").size() == steps).all()
    assert metrics["cpu_cores"].to_numpy().min() >= 0
    assert (metrics["cpu_cores"] <= metrics["vm"].map({v: x.vcpus for v, x in vms.items()}) + 1e-9).all()
    assert (metrics["mem_mib"] <= metrics["vm"].map({v: x.mem_mib for v, x in vms.items()}) + 1e-6).all()
    assert (metrics["dirty_mibps"] >= 0).all()
    for vm in vms.values():
        assert vm.vcpus in (1, 2, 4, 8, 16) and vm.mem_mib / 1024 in (2, 4, 8, 16, 32, 64)
    used = Counter[str]()
    for vm in vms.values():
        used[vm.host] += int(vm.mem_mib)
    for name, mib in used.items():
        assert mib <= hosts[name].mem_mib, f"{name} holds more memory than it has"
        assert hosts[name].state != HostState.STANDBY
    states = Counter(h.state for h in hosts.values())
    assert states[HostState.MAINTENANCE] == s.maintenance_hosts
    if s.vms >= s.maintenance_hosts:
        assert all(used[h.name] > 0 for h in hosts.values() if h.state == HostState.MAINTENANCE)
    if s.hosts - s.maintenance_hosts >= 2:
        assert states[HostState.STANDBY] >= 1
    rules = cluster.rules
    assert len(rules.affinity) == s.affinity_groups and all(len(g) == 2 for g in rules.affinity)
    assert len(rules.anti_affinity) == s.anti_affinity_groups and all(
        len(g) == 3 for g in rules.anti_affinity
    )
    assert len(rules.pins) == s.pinned_vms
    named = [v for g in (*rules.affinity, *rules.anti_affinity) for v in g]
    assert len(named) == len(set(named)) and set(named) | set(rules.pins) <= set(vms)
    assert not {v for g in rules.affinity for v in g} & set(rules.pins)  # a pin never splits a group
    for g in rules.affinity:
        assert len({vms[v].host for v in g}) == 1
    for g in rules.anti_affinity:
        assert len({vms[v].host for v in g}) == len(g)
    for v, allowed in rules.pins.items():
        assert vms[v].host == allowed[0] and set(allowed) <= set(hosts)
        assert all(hosts[h].can_run_vms for h in allowed)


def test_same_seed_same_cluster_and_frame() -> None:
    s = synth(seed=5, hosts=8, vms=40, days=2)
    a, fa = generate(s, POWER)
    b, fb = generate(s, POWER)
    assert a.fingerprint() == b.fingerprint()
    pd.testing.assert_frame_equal(fa, fb)
    c, fc = generate(synth(seed=6, hosts=8, vms=40, days=2), POWER)
    assert c.fingerprint() != a.fingerprint() and not fc["cpu_cores"].equals(fa["cpu_cores"])


def test_history_ends_at_an_instant_fixed_by_the_seed() -> None:
    for seed in (0, 3):
        _, metrics = generate(synth(seed=seed, hosts=6, vms=20, days=2, step_s=600), POWER)
        end = datetime(2026, 1, 5 + seed, tzinfo=UTC)
        ts = pd.DatetimeIndex(metrics["ts"].unique()).sort_values()
        assert ts[-1] == pd.Timestamp(end) - pd.Timedelta(seconds=600)
        assert ts[0] == pd.Timestamp(end) - pd.Timedelta(days=2)
        assert (np.diff(ts.asi8) == np.diff(ts.asi8)[0]).all()


def test_fortnight_invariants(fortnight: tuple[SyntheticSettings, Cluster, pd.DataFrame]) -> None:
    check_invariants(*fortnight)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(-(2**40), 2**40),
    hosts=st.integers(6, 14),
    vms=st.integers(12, 70),
    days=st.integers(1, 2),
    step_s=st.sampled_from([300, 900, 3600]),
    target=st.floats(0.1, 0.8),
    maintenance=st.integers(0, 2),
    affinity=st.integers(0, 2),
    anti=st.integers(0, 2),
    pins=st.integers(0, 2),
)
def test_any_settings_give_a_valid_cluster(
    seed: int,
    hosts: int,
    vms: int,
    days: int,
    step_s: int,
    target: float,
    maintenance: int,
    affinity: int,
    anti: int,
    pins: int,
) -> None:
    s = synth(
        seed=seed,
        hosts=hosts,
        vms=vms,
        days=days,
        step_s=step_s,
        target_cpu_util=target,
        maintenance_hosts=maintenance,
        affinity_groups=affinity,
        anti_affinity_groups=anti,
        pinned_vms=pins,
    )
    check_invariants(s, *generate(s, POWER))


def test_heterogeneous_hosts_with_their_own_power(
    fortnight: tuple[SyntheticSettings, Cluster, pd.DataFrame],
) -> None:
    _, cluster, _ = fortnight
    types = {(h.cpu_cores, h.mem_mib): h.power for h in cluster.hosts}
    assert set(types) == {(32, 256 * 1024), (64, 512 * 1024), (16, 128 * 1024)}
    assert len({p.max_w for p in types.values()}) == 3
    assert types[(32, 256 * 1024)] == POWER.model()
    assert len(types[(16, 128 * 1024)].curve_w) == 11


def test_vm_memory_grows_with_vcpus(fortnight: tuple[SyntheticSettings, Cluster, pd.DataFrame]) -> None:
    _, cluster, _ = fortnight
    vcpus = np.array([v.vcpus for v in cluster.vms])
    mem = np.array([v.mem_mib for v in cluster.vms])
    assert np.corrcoef(vcpus, mem)[0, 1] > 0.5
    assert len(set(vcpus)) >= 4


def test_daily_and_weekly_patterns(fortnight: tuple[SyntheticSettings, Cluster, pd.DataFrame]) -> None:
    _, _, metrics = fortnight
    total = metrics.groupby("ts")["cpu_cores"].sum()
    weekday = total.index.day_of_week < 5
    hour = total.index.hour
    assert total[weekday & (hour >= 9) & (hour < 17)].mean() > 1.2 * total[weekday & (hour < 6)].mean()
    assert total[~weekday].mean() < 0.9 * total[weekday].mean()


def test_memory_follows_cpu(fortnight: tuple[SyntheticSettings, Cluster, pd.DataFrame]) -> None:
    _, _, metrics = fortnight
    corr = metrics.groupby("vm")[["cpu_cores", "mem_mib"]].corr().xs("cpu_cores", level=1)["mem_mib"]
    assert corr.median() > 0.3 and (corr > 0).mean() > 0.9
    # ... but mostly a stable base: memory varies far less than CPU
    cv = metrics.groupby("vm")[["cpu_cores", "mem_mib"]].agg(lambda x: x.std() / x.mean())
    assert (cv["mem_mib"] < cv["cpu_cores"]).mean() > 0.9


def test_dirty_rate_tracks_cpu_with_some_heavy_writers(
    fortnight: tuple[SyntheticSettings, Cluster, pd.DataFrame],
) -> None:
    _, _, metrics = fortnight
    corr = metrics.groupby("vm")[["cpu_cores", "dirty_mibps"]].corr().xs("cpu_cores", level=1)["dirty_mibps"]
    assert corr.median() > 0.9
    per_core = metrics.groupby("vm").apply(lambda g: (g["dirty_mibps"] - 0.1).sum() / g["cpu_cores"].sum())
    assert 0.5 < per_core.median() < 5 and (per_core > 5 * per_core.median()).any()


def test_a_drifted_cluster_at_the_target_load(
    fortnight: tuple[SyntheticSettings, Cluster, pd.DataFrame],
) -> None:
    s, cluster, metrics = fortnight
    util = host_util(cluster, metrics)
    assert abs(util.to_numpy().mean() - s.target_cpu_util) < 0.03
    p95 = util.quantile(0.95, axis=1)
    assert 1 <= (p95 > 0.8).sum() <= 0.35 * len(p95), "a few hot hosts, not most"
    assert len(util) >= 0.8 * len(cluster.hosts), "VMs spread over most hosts, not packed"


def test_default_rules_exist_and_survive_a_round_trip(
    fortnight: tuple[SyntheticSettings, Cluster, pd.DataFrame],
) -> None:
    s, cluster, _ = fortnight
    assert s.affinity_groups and s.anti_affinity_groups and s.pinned_vms  # the defaults make rules
    assert cluster.rules.affinity and cluster.rules.anti_affinity and cluster.rules.pins
    assert Cluster.from_dict(cluster.to_dict()).fingerprint() == cluster.fingerprint()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"hosts": 3, "maintenance_hosts": 3}, "synthetic.maintenance_hosts"),
        ({"hosts": 6, "vms": 2000}, "synthetic.vms"),
        ({"vms": 5, "affinity_groups": 2, "anti_affinity_groups": 1, "pinned_vms": 0}, "synthetic.vms is 5"),
        ({"hosts": 3, "maintenance_hosts": 1}, "synthetic.anti_affinity_groups"),
    ],
)
def test_impossible_settings_are_named(kw: dict[str, int], message: str) -> None:
    with pytest.raises(InputError, match=message):
        generate(synth(days=1, **kw), POWER)
