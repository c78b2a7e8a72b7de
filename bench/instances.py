"""The benchmark instance of the optimizer issue: a random cluster with two host types, lognormal CPU
demand at 45% mean utilisation, memory in {4, 8, 16, 32, 64} GiB, 4-5% of hosts overloaded and 2% in
maintenance, with its forecast (P95 as drawn, P50 at 60% of it)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from advisor.core import VM, Cluster, Forecast, Host, HostState, PowerModel, Rules, VMForecast

GIB = 1024.0
SMALL = (32.0, 256 * GIB, PowerModel(idle_w=120, max_w=280, standby_w=8))
LARGE = (
    64.0,
    512 * GIB,
    PowerModel(curve_w=(170, 205, 230, 255, 280, 305, 335, 370, 410, 455, 505), standby_w=12),
)


def random_cluster(
    n_hosts: int, n_vms: int, seed: int, util: float = 0.45, hot_share: float = 0.045
) -> tuple[Cluster, Forecast]:
    """Two host types, lognormal CPU (mean utilisation `util`), memory in {4..64} GiB, VMs spread over
    hosts at random (first fit from a random host), `hot_share` of the hosts pushed over 80% CPU, 2% in
    maintenance, and a sprinkling of rules."""
    rng = np.random.default_rng(seed)
    n_maint = max(1, round(0.02 * n_hosts))
    hosts = []
    for i in range(n_hosts):
        cores, ram, power = SMALL if i % 2 == 0 else LARGE
        state = HostState.MAINTENANCE if i < n_maint else HostState.UP
        hosts.append(Host(f"h{i:04d}", cores, ram, state=state, power=power))
    total = sum(h.cpu_cores for h in hosts)
    raw = rng.lognormal(0.0, 0.8, n_vms)
    p95 = np.minimum(raw / raw.sum() * total * util, 24.0)
    mems = rng.choice([4, 8, 16, 32, 64], n_vms, p=[0.3, 0.3, 0.2, 0.15, 0.05]) * GIB
    cpu = [0.0] * n_hosts
    mem = [0.0] * n_hosts
    hot = set(range(n_maint, n_maint + max(1, round(hot_share * n_hosts))))
    vms = []
    for k in range(n_vms):
        start = int(rng.integers(n_hosts))
        filling = [h for h in sorted(hot) if cpu[h] < 0.9 * hosts[h].cpu_cores]  # pushed over 80% headroom
        order = filling + [(start + j) % n_hosts for j in range(n_hosts)]
        h = next(
            (
                h
                for h in order
                if cpu[h] + p95[k] <= hosts[h].cpu_cores * (0.95 if h in hot else 0.7)
                and mem[h] + mems[k] <= hosts[h].mem_mib
            ),
            start,
        )
        cpu[h] += p95[k]
        mem[h] += mems[k]
        vms.append(VM(f"vm{k:05d}", hosts[h].name, int(max(1, np.ceil(p95[k] * 1.5))), float(mems[k])))
    names = [v.name for v in vms]
    q = n_vms // 4  # five rules of each kind, on VMs spread over the list
    rules = Rules(
        affinity=tuple((names[10 * g], names[10 * g + 1]) for g in range(5)),
        anti_affinity=tuple(tuple(names[q + 10 * g + j] for j in range(3)) for g in range(5)),
        pins={names[2 * q + g]: tuple(h.name for h in hosts[-max(3, n_hosts // 10) :]) for g in range(5)},
    )
    cluster = Cluster("bench", tuple(hosts), tuple(vms), rules)
    dirty = rng.lognormal(2.5, 1.0, n_vms)
    forecast = Forecast(
        datetime(2026, 3, 1, tzinfo=UTC),
        86_400,
        "bench",
        cluster.fingerprint(),
        {
            v.name: VMForecast(0.6 * p95[k], p95[k], v.mem_mib * 0.6, v.mem_mib * 0.8, float(dirty[k]))
            for k, v in enumerate(vms)
        },
    )
    return cluster, forecast


def random_history(
    forecast: Forecast, days: int, step_s: int, seed: int, shared: float = 0.6
) -> tuple[list[str], np.ndarray]:
    """`days` + 1 days of CPU per VM (cores; rows in the forecast's VM order), for the joint peak model:
    a daily wave (amplitude 20-80% of the level) times lognormal noise (sigma 0.25) per step. `shared`
    of the VMs follow one office-hours phase (within an hour), the rest a random phase (batch jobs,
    other time zones). Rows are scaled so that each VM's P95 over the first `days` is its forecast P95;
    the last day is the held-out future."""
    rng = np.random.default_rng(seed + 7919)
    names = list(forecast.vms)
    per_day = 86_400 // step_s
    t = np.arange((days + 1) * per_day) / per_day * 2 * np.pi
    common = rng.uniform(0, 2 * np.pi)
    phase = np.where(
        rng.random(len(names)) < shared,
        common + rng.normal(0, 2 * np.pi / 24, len(names)),
        rng.uniform(0, 2 * np.pi, len(names)),
    )
    amp = rng.uniform(0.2, 0.8, len(names))
    wave = 1.0 + amp[:, None] * np.sin(t[None, :] + phase[:, None])
    cpu = wave * rng.lognormal(0.0, 0.25, (len(names), len(t)))
    k = max(int(np.ceil(0.95 * days * per_day)) - 1, 0)
    own = np.partition(cpu[:, : days * per_day], k, axis=1)[:, k]
    p95 = np.array([forecast.vms[n].cpu_p95 for n in names])
    return names, (cpu * (p95 / own)[:, None]).astype(np.float32)
