"""Instance builders for the planning tests: clusters and forecasts made directly from core types."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import numpy as np

from advisor.config import PlanSettings
from advisor.core import VM, Cluster, Forecast, Host, HostState, PowerModel, Rules, VMForecast
from advisor.invariants import placement_violations
from advisor.optimize.demand import demand_of

T0 = datetime(2026, 3, 1, tzinfo=UTC)
GIB = 1024.0
CURVED = PowerModel(curve_w=(90, 120, 135, 150, 165, 180, 200, 225, 255, 290, 330), standby_w=8)


def host(
    name: str,
    cores: float = 32,
    mem_gib: float = 256,
    state: str = "up",
    power: PowerModel | None = None,
    cluster: str = "default",
) -> Host:
    return Host(
        name, cores, mem_gib * GIB, cluster=cluster, state=HostState(state), power=power or PowerModel()
    )


def vm(name: str, on: str, mem_gib: float = 8, vcpus: int = 4, movable: bool = True) -> VM:
    return VM(name, on, vcpus, mem_gib * GIB, movable=movable)


def instance(
    hosts: Sequence[Host],
    vms: Sequence[VM],
    cpu: Mapping[str, float],
    rules: Rules | None = None,
    dirty: Mapping[str, float] | None = None,
) -> tuple[Cluster, Forecast]:
    """`cpu` is each VM's P95 in cores; its P50 is 60% of that."""
    cluster = Cluster("test", tuple(hosts), tuple(vms), rules or Rules())
    return cluster, forecast_for(cluster, cpu, dirty)


def forecast_for(
    cluster: Cluster, cpu: Mapping[str, float], dirty: Mapping[str, float] | None = None
) -> Forecast:
    vms = {
        v.name: VMForecast(
            cpu_p50=0.6 * cpu[v.name],
            cpu_p95=cpu[v.name],
            mem_p50=v.mem_mib * 0.5,
            mem_p95=v.mem_mib * 0.7,
            dirty_mibps=(dirty or {}).get(v.name, 20.0),
        )
        for v in cluster.vms
    }
    return Forecast(T0, 86_400, "test", cluster.fingerprint(), vms)


def random_instance(
    seed: int,
    n_hosts: int = 8,
    n_vms: int = 40,
    util: float = 0.45,
    maintenance: int = 1,
    rules: bool = True,
    overloaded: int = 0,
) -> tuple[Cluster, Forecast]:
    """Two host types, lognormal CPU, memory in {4, 8, 16, 32} GiB, VMs spread first-fit over hosts
    (maintenance ones included), optionally a few hosts pushed over headroom, and one rule of each kind."""
    rng = np.random.default_rng(seed)
    hosts = [
        host(f"h{i:02d}", 32, 256) if i % 2 == 0 else host(f"h{i:02d}", 48, 384, power=CURVED)
        for i in range(n_hosts)
    ]
    hosts = [
        h if i >= maintenance else host(h.name, h.cpu_cores, h.mem_mib / GIB, "maintenance", h.power)
        for i, h in enumerate(hosts)
    ]
    total_cores = sum(h.cpu_cores for h in hosts)
    raw = rng.lognormal(0.0, 0.6, n_vms)
    cpu_vals = raw / raw.sum() * total_cores * util
    mems = rng.choice([4, 8, 16, 32], n_vms, p=[0.3, 0.4, 0.2, 0.1])
    load = [0.0] * n_hosts
    mem = [0.0] * n_hosts
    vms, cpu = [], {}
    for k in range(n_vms):
        name = f"vm{k:03d}"
        c = float(min(cpu_vals[k], 20.0))
        start = int(rng.integers(n_hosts))
        hot = [
            h
            for h in range(maintenance, min(n_hosts, maintenance + overloaded))
            if load[h] <= 0.85 * hosts[h].cpu_cores
        ]  # filled past the 80% headroom first
        order = hot + [(start + j) % n_hosts for j in range(n_hosts)]
        h = next(
            (
                h
                for h in order
                if load[h] + c <= hosts[h].cpu_cores * (1.0 if h in hot else 0.8)
                and mem[h] + mems[k] * GIB <= hosts[h].mem_mib
            ),
            order[0],
        )
        load[h] += c
        mem[h] += mems[k] * GIB
        vms.append(vm(name, hosts[h].name, float(mems[k])))
        cpu[name] = c
    rule = Rules()
    if rules and n_vms >= 8:
        pair = [vms[1].name, vms[2].name]
        vms[2] = vm(vms[2].name, vms[1].host, vms[2].mem_mib / GIB)  # affinity pair starts together
        mem_ok = sum(v.mem_mib for v in vms if v.host == vms[1].host) <= hosts[int(vms[1].host[1:])].mem_mib
        if not mem_ok:
            vms[2] = vm(vms[2].name, vms[2].host, 4)
        anti = [vms[3].name, vms[4].name, vms[5].name]
        pins = {vms[6].name: tuple(h.name for h in hosts[-3:])}
        rule = Rules(affinity=(tuple(pair),), anti_affinity=(tuple(anti),), pins=pins)
    return instance(hosts, vms, cpu, rule)


def placement_problems(
    cluster: Cluster, forecast: Forecast, placement: Mapping[str, str], settings: PlanSettings
) -> list[str]:
    """Everything a target placement must satisfy, checked from scratch: headroom, anti-affinity,
    affinity, pins, maintenance hosts empty, unmovable VMs unmoved."""
    return placement_violations(cluster, demand_of(cluster, forecast), placement, settings)
