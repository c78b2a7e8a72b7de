"""The synthetic cluster behind the demo: a drifted KVM cluster with realistic demand, the same for a seed.

What it looks like, so that every stage has something to do:
- Three host types (32 cores/256 GiB with the configured power model, 64 cores/512 GiB drawing 1.7x, and
  an older 16 cores/128 GiB with a SPECpower-like curve that idles at 74% of its peak).
- VMs of 1-16 vCPUs and 2-64 GiB (memory correlated with vCPUs), spread over the hosts by memory with
  some randomness, never beyond a host's memory. `maintenance_hosts` hosts are in maintenance and still
  carry VMs; about 5% of the hosts (at least one, if the hosts allow) are empty and in standby.
- CPU demand per VM: a business-hours, nightly-batch or steady profile in the VM's own local time, quieter
  weekends, persistent noise, and random bursts of 5 to 60 minutes; never above the vCPUs. Its level is
  calibrated so that the mean utilisation of the hosts carrying VMs is `target_cpu_util`, and about 8% of
  the up hosts (at least one) run at 90% at their P95.
- Memory in use: a stable base plus a share that follows CPU over about two hours; never above the size.
- Dirty rate: proportional to CPU in use, a few MiB/s per busy core, ten times that for one VM in ten.
- Rules, all satisfied by the initial placement: affinity pairs share a host, anti-affinity triples use
  three hosts, and pinned VMs may run on their current host and one other.
History: `days` of samples every `step_s`, ending (exclusive) at 2026-01-05 00:00 UTC + (seed mod 1000)
days, not at the wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from advisor.config import PowerSettings, SyntheticSettings
from advisor.core import VM, Cluster, Host, HostState, PowerModel, Rules
from advisor.errors import InputError
from advisor.metrics import validate_metrics

GIB = 1024.0
EPOCH = datetime(2026, 1, 5, tzinfo=UTC)
# (label, cores, memory GiB); hosts cycle through std, large, std, old before shuffling.
HOST_TYPES = (("std-32c-256g", 32, 256), ("large-64c-512g", 64, 512), ("old-16c-128g", 16, 128))
HOST_CYCLE = (0, 1, 0, 2)
LARGE_POWER = 1.7
OLD_CURVE = tuple(
    w / 117.0 * 0.75 for w in (86.0, 89.4, 92.6, 96.0, 99.5, 102.0, 106.0, 108.0, 112.0, 114.0, 117.0)
)
STANDBY_SHARE = 0.05
HOT_SHARE = 0.08
HOT_P95 = 0.9
VCPUS = (1, 2, 4, 8, 16)
VCPU_P = (0.22, 0.32, 0.26, 0.15, 0.05)
GIB_PER_VCPU = (2, 4, 8)
GIB_PER_VCPU_P = (0.25, 0.55, 0.20)
PROFILES = ("business", "batch", "steady")
PROFILE_P = (0.65, 0.15, 0.20)
MEM_FOLLOW_S = 7200.0


@dataclass(frozen=True)
class _Hosts:
    cores: np.ndarray
    mem_mib: np.ndarray
    kind: np.ndarray
    state: np.ndarray  # of HostState values

    @property
    def carries(self) -> np.ndarray:
        """Hosts the initial placement uses: up and in maintenance (not yet evacuated)."""
        return self.state != HostState.STANDBY.value

    @property
    def can_run(self) -> np.ndarray:
        return self.state != HostState.MAINTENANCE.value


def generate(settings: SyntheticSettings, power: PowerSettings) -> tuple[Cluster, pd.DataFrame]:
    """A cluster and its metrics history (see the module docstring). Same settings, same result."""
    rng = np.random.default_rng(settings.seed % 2**63)
    hosts = _hosts(settings, rng)
    n = settings.vms
    vcpus = rng.choice(VCPUS, n, p=VCPU_P)
    mem_mib = np.clip(vcpus * rng.choice(GIB_PER_VCPU, n, p=GIB_PER_VCPU_P), 2, 64) * GIB
    affinity, anti = _rule_groups(settings, rng)
    host_of = _place(mem_mib, hosts, affinity, anti, rng)
    pins = _pins(settings, host_of, hosts, {v for g in affinity for v in g}, rng)
    end = EPOCH + timedelta(days=settings.seed % 1000)
    steps = settings.days * 86400 // settings.step_s
    t = int(end.timestamp()) - settings.step_s * steps + settings.step_s * np.arange(steps, dtype=np.int64)
    profile = rng.choice(len(PROFILES), n, p=PROFILE_P)
    util = _cpu_util(profile, vcpus, host_of, hosts, t, settings, rng)
    cpu = util * vcpus[:, None]
    mem = _mem_in_use(util, mem_mib, settings.step_s, rng)
    heavy = rng.random(n) < 0.1
    per_core = rng.lognormal(np.log(1.5), 0.5, n) * np.where(heavy, rng.uniform(5, 15, n), 1.0)
    dirty = per_core[:, None] * cpu + 0.1

    cluster = _cluster(settings, power, hosts, vcpus, mem_mib, profile, host_of, affinity, anti, pins)
    frame = pd.DataFrame(
        {
            "vm": pa.array([v.name for v in cluster.vms]).take(np.repeat(np.arange(n), steps)).to_pandas(),
            "ts": pd.to_datetime(np.tile(t, n), unit="s", utc=True),
            "cpu_cores": cpu.ravel().astype(np.float64),
            "mem_mib": mem.ravel().astype(np.float64),
            "dirty_mibps": dirty.ravel().astype(np.float64),
        }
    )
    return cluster, validate_metrics(frame, f"synthetic (seed {settings.seed})")


def _hosts(settings: SyntheticSettings, rng: np.random.Generator) -> _Hosts:
    count, maintenance = settings.hosts, settings.maintenance_hosts
    if maintenance >= count:
        raise InputError(
            f"synthetic.maintenance_hosts ({maintenance}) must be below synthetic.hosts ({count})"
        )
    kind = rng.permutation(np.resize(HOST_CYCLE, count))
    standby = min(max(1, round(STANDBY_SHARE * count)), count - maintenance - 1)
    state = np.full(count, HostState.UP.value, dtype=object)
    order = rng.permutation(count)
    state[order[:maintenance]] = HostState.MAINTENANCE.value
    state[order[maintenance : maintenance + standby]] = HostState.STANDBY.value
    cores = np.array([HOST_TYPES[k][1] for k in kind], dtype=float)
    mem = np.array([HOST_TYPES[k][2] for k in kind], dtype=float) * GIB
    hosts = _Hosts(cores, mem, kind, state)
    if settings.anti_affinity_groups and min(hosts.carries.sum(), hosts.can_run.sum()) < 3:
        raise InputError(
            "synthetic.anti_affinity_groups needs at least 3 hosts not in maintenance and 3 not in standby; "
            "raise synthetic.hosts or lower synthetic.maintenance_hosts"
        )
    return hosts


def _rule_groups(
    settings: SyntheticSettings, rng: np.random.Generator
) -> tuple[list[list[int]], list[list[int]]]:
    """Disjoint VMs for the affinity pairs and anti-affinity triples (pins are chosen after placement)."""
    a, b = settings.affinity_groups, settings.anti_affinity_groups
    need = 2 * a + 3 * b + settings.pinned_vms
    if need > settings.vms:
        raise InputError(
            f"synthetic: the rules need {need} distinct VMs (2 per affinity group, 3 per anti-affinity "
            f"group, 1 per pinned VM) but synthetic.vms is {settings.vms}"
        )
    chosen = [int(v) for v in rng.permutation(settings.vms)[: 2 * a + 3 * b]]
    affinity = [chosen[2 * i : 2 * i + 2] for i in range(a)]
    anti = [chosen[2 * a + 3 * i : 2 * a + 3 * i + 3] for i in range(b)]
    return affinity, anti


def _place(
    mem_mib: np.ndarray,
    hosts: _Hosts,
    affinity: list[list[int]],
    anti: list[list[int]],
    rng: np.random.Generator,
) -> np.ndarray:
    """Spread VMs, largest first, each on the emptier (by memory share) of two random hosts it fits on.

    An affinity pair moves as one item; an anti-affinity member avoids its group's hosts."""
    paired = {v for g in affinity for v in g}
    items = [list(g) for g in affinity] + [[v] for v in rng.permutation(len(mem_mib)) if v not in paired]
    item_mem = np.array([mem_mib[i].sum() for i in items])
    group_of = {v: gi for gi, g in enumerate(anti) for v in g}
    used_by_group: list[set[int]] = [set() for _ in anti]
    used = np.zeros(len(hosts.mem_mib))
    host_of = np.empty(len(mem_mib), dtype=np.int64)
    for k in np.argsort(-item_mem, kind="stable"):
        need = item_mem[k]
        fits = hosts.carries & (used + need <= hosts.mem_mib)
        group = group_of.get(items[k][0])
        if group is not None:
            fits[list(used_by_group[group])] = False
        candidates = np.flatnonzero(fits)
        if not len(candidates):
            total = mem_mib.sum() / GIB
            room = hosts.mem_mib[hosts.carries].sum() / GIB
            raise InputError(
                f"synthetic: {len(mem_mib)} VMs ({total:.0f} GiB) do not fit in the memory of the hosts that "
                f"carry VMs ({room:.0f} GiB); lower synthetic.vms or raise synthetic.hosts"
            )
        idle_maintenance = candidates[(used[candidates] == 0) & ~hosts.can_run[candidates]]
        if len(idle_maintenance):  # every host in maintenance carries VMs (if there are enough VMs)
            candidates = idle_maintenance
        pair = rng.choice(candidates, size=min(2, len(candidates)), replace=False)
        h = int(pair[np.argmin((used[pair] + need) / hosts.mem_mib[pair])])
        used[h] += need
        host_of[items[k]] = h
        if group is not None:
            used_by_group[group].add(h)
    return host_of


def _pins(
    settings: SyntheticSettings,
    host_of: np.ndarray,
    hosts: _Hosts,
    taken: set[int],
    rng: np.random.Generator,
) -> dict[int, tuple[int, ...]]:
    """VMs on up hosts, outside affinity groups, pinned to their host and one other host that can run VMs."""
    up = hosts.state == HostState.UP.value
    free = [v for v in range(len(host_of)) if v not in taken and up[host_of[v]]]
    if len(free) < settings.pinned_vms:
        raise InputError(
            f"synthetic.pinned_vms ({settings.pinned_vms}) is more than the VMs free to pin ({len(free)})"
        )
    pins = {}
    for v in sorted(int(x) for x in rng.choice(free, size=settings.pinned_vms, replace=False)):
        others = np.flatnonzero(hosts.can_run & (np.arange(len(up)) != host_of[v]))
        pins[v] = (int(host_of[v]), *([int(rng.choice(others))] if len(others) else []))
    return pins


def _cpu_util(
    profile: np.ndarray,
    vcpus: np.ndarray,
    host_of: np.ndarray,
    hosts: _Hosts,
    t: np.ndarray,
    settings: SyntheticSettings,
    rng: np.random.Generator,
) -> np.ndarray:
    """CPU in use as a share of each VM's vCPUs (VMs x steps, float32), calibrated per the docstring."""
    n, steps = len(profile), len(t)
    business, batch = profile == 0, profile == 1
    base = np.where(
        business,
        rng.uniform(0.25, 0.5, n),
        np.where(batch, rng.uniform(0.2, 0.4, n), rng.uniform(0.7, 0.9, n)),
    )
    phase_h = np.where(batch, 12.0, 0.0) + rng.normal(0.0, 1.5, n)
    weekend = np.where(
        business,
        rng.uniform(0.4, 0.7, n),
        np.where(batch, rng.uniform(0.8, 1.0, n), rng.uniform(0.85, 1.0, n)),
    )
    sigma = rng.uniform(0.08, 0.3, n).astype(np.float32)
    spread = rng.lognormal(0.0, 0.5, n)

    local_h = ((t % 86400) / 3600.0).astype(np.float32)[None, :] + phase_h.astype(np.float32)[:, None]
    day_shift = np.floor(local_h / np.float32(24.0))
    hour = local_h - np.float32(24.0) * day_shift
    day = (t // 86400 + 3).astype(np.float32)  # 1970-01-01 was a Thursday: day % 7 is 0 on Mondays
    is_weekend = (day[None, :] + day_shift) % 7 >= 5
    office = 1.0 / (1.0 + np.exp(-(hour - 8.5) / 0.75)) / (1.0 + np.exp(-(17.5 - hour) / 0.75))
    shape = base[:, None].astype(np.float32) + (1.0 - base[:, None].astype(np.float32)) * office
    shape *= np.where(is_weekend, weekend[:, None].astype(np.float32), np.float32(1.0))
    shape /= shape.mean(axis=1, keepdims=True)

    noise = _recursive(rng.standard_normal((n, steps), dtype=np.float32), 0.8, np.sqrt(1 - 0.8**2), 0.0)
    shape *= np.exp(sigma[:, None] * noise - sigma[:, None] ** 2 / 2)
    bursts = _bursts(n, steps, settings, rng)

    carries = np.flatnonzero(np.bincount(host_of, minlength=len(hosts.cores)) > 0)
    order = np.argsort(host_of, kind="stable")
    starts = np.searchsorted(host_of[order], carries)
    up = carries[hosts.state[carries] == HostState.UP.value]
    by_ratio = up[
        np.argsort(-np.bincount(host_of, vcpus, len(hosts.cores))[up] / hosts.cores[up], kind="stable")
    ]
    hot = by_ratio[: max(1, round(HOT_SHARE * len(up)))]
    is_hot = np.isin(carries, hot)

    # Per-host factors: hot hosts aim at HOT_P95 at their P95; the others share what is left of the target
    # mean in proportion to a random weight, so that their loads differ as in a drifted cluster.
    weight = rng.uniform(0.8, 1.2, len(carries))
    factor = np.ones(len(carries))
    vm_host = np.searchsorted(carries, host_of)
    every = max(1, steps // 1000)  # calibrate on about 1,000 of the steps: enough for a mean and a P95
    coarse_shape, coarse_bursts = shape[:, ::every], bursts[:, ::every]
    for _ in range(12):
        level = (factor[vm_host] * spread)[:, None].astype(np.float32)
        util = np.clip(level * coarse_shape + coarse_bursts, 0.0, 1.0)
        host_util = (
            np.add.reduceat((util * vcpus[:, None])[order], starts, axis=0) / hosts.cores[carries][:, None]
        )
        mean = host_util.mean(axis=1)
        p95 = np.percentile(host_util, 95, axis=1)
        left = settings.target_cpu_util * len(carries) - mean[is_hot].sum()
        goal = np.where(is_hot, 0.0, weight * left / max(weight[~is_hot].sum(), 1e-9))
        want = np.where(is_hot, HOT_P95 / np.maximum(p95, 1e-9), goal / np.maximum(mean, 1e-9))
        if np.abs(want - 1.0).max() < 0.01:
            break
        factor *= np.clip(want, 0.5, 2.0)
    level = (factor[vm_host] * spread)[:, None].astype(np.float32)
    return np.clip(level * shape + bursts, 0.0, 1.0)


def _bursts(n: int, steps: int, settings: SyntheticSettings, rng: np.random.Generator) -> np.ndarray:
    """Short spikes (share of vCPUs added for 5 to 60 minutes), about one every two days per VM."""
    counts = rng.poisson(rng.uniform(0.0, 1.0, n) * settings.days)
    vm = np.repeat(np.arange(n), counts)
    start = rng.integers(0, steps, len(vm))
    length = np.maximum(1, np.round(rng.uniform(300, 3600, len(vm)) / settings.step_s)).astype(np.int64)
    length = np.minimum(length, steps - start)
    height = rng.uniform(0.2, 0.7, len(vm)).astype(np.float32)
    offset = np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length)
    out = np.zeros((n, steps), dtype=np.float32)
    np.add.at(out, (np.repeat(vm, length), np.repeat(start, length) + offset), np.repeat(height, length))
    return out


def _mem_in_use(util: np.ndarray, mem_mib: np.ndarray, step_s: int, rng: np.random.Generator) -> np.ndarray:
    """A stable base share of the size plus a share that follows CPU slowly (exponential smoothing)."""
    n, steps = len(util), util.shape[1]
    base = rng.uniform(0.3, 0.6, n).astype(np.float32)
    follow = rng.uniform(0.1, 0.35, n).astype(np.float32)
    alpha = 1.0 - np.exp(-step_s / MEM_FOLLOW_S)
    smooth = _recursive(util, 1.0 - alpha, alpha, util[:, 0])
    share = base[:, None] + follow[:, None] * smooth + rng.normal(0.0, 0.01, (n, steps)).astype(np.float32)
    return np.clip(share, 0.05, 1.0) * mem_mib[:, None].astype(np.float32)


def _recursive(x: np.ndarray, keep: float, gain: float, start: float | np.ndarray) -> np.ndarray:
    """y[:, k] = keep * y[:, k - 1] + gain * x[:, k], with y[:, -1] = start: AR(1) noise and smoothing,
    looping over time and vectorised over VMs (time-major so that each step is contiguous)."""
    y = np.ascontiguousarray(x.T, dtype=np.float32)
    prev = np.broadcast_to(np.asarray(start, dtype=np.float32), y.shape[1:]).copy()
    k_keep, k_gain = np.float32(keep), np.float32(gain)
    for row in y:
        prev *= k_keep
        prev += k_gain * row
        row[:] = prev
    return np.ascontiguousarray(y.T)


def _power(kind: int, base: PowerModel) -> PowerModel:
    if kind == 0:
        return base
    if kind == 1:
        f = LARGE_POWER
        return PowerModel(
            base.idle_w * f, base.max_w * f, base.standby_w * f, tuple(w * f for w in base.curve_w)
        )
    return PowerModel(standby_w=base.standby_w, curve_w=tuple(w * base.max_w for w in OLD_CURVE))


def _cluster(
    settings: SyntheticSettings,
    power: PowerSettings,
    hosts: _Hosts,
    vcpus: np.ndarray,
    mem_mib: np.ndarray,
    profile: np.ndarray,
    host_of: np.ndarray,
    affinity: list[list[int]],
    anti: list[list[int]],
    pins: dict[int, tuple[int, ...]],
) -> Cluster:
    name = f"synthetic-{settings.seed}"
    base = power.model()
    h_width, v_width = max(3, len(str(len(hosts.cores)))), max(3, len(str(len(vcpus))))
    h_names = [f"host-{i + 1:0{h_width}d}" for i in range(len(hosts.cores))]
    v_names = [f"vm-{i + 1:0{v_width}d}" for i in range(len(vcpus))]
    host_list = tuple(
        Host(
            h_names[i],
            float(hosts.cores[i]),
            float(hosts.mem_mib[i]),
            cluster=name,
            state=HostState(hosts.state[i]),
            power=_power(int(hosts.kind[i]), base),
            labels={"model": HOST_TYPES[int(hosts.kind[i])][0]},
        )
        for i in range(len(h_names))
    )
    vms = tuple(
        VM(
            v_names[i],
            h_names[host_of[i]],
            int(vcpus[i]),
            float(mem_mib[i]),
            labels={"profile": PROFILES[profile[i]]},
        )
        for i in range(len(v_names))
    )
    rules = Rules(
        affinity=tuple(tuple(v_names[v] for v in g) for g in affinity),
        anti_affinity=tuple(tuple(v_names[v] for v in g) for g in anti),
        pins={v_names[v]: tuple(h_names[h] for h in hs) for v, hs in pins.items()},
    )
    return Cluster(name, host_list, vms, rules)
