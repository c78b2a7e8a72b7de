"""The replay loop. The `cloudsim` setup is SETUP.md with its accounting quirks; `realistic` keeps the same
clock, scheduler and metrics but holds VM memory at all times, keeps idle VMs, lets an emptied host draw idle
power until it is put in standby, and times migrations with the pre-copy model.

Decisions happen at T_k = 300 k + 0.1 s, k = 1..287 (CloudSim's clock runs 0.1 s behind the trace). Each
interval is cut at the migrations' completion times; in every piece the allocation is fixed, demand is
linear, and the accounting is CloudSim's: the trapezoid of the power at both ends (nothing if the host was
idle at the start), host SLA time and the VMs' requested and migration-degraded MIPS from the state at the
start of the piece. A VM whose demand is exactly zero at a decision time is deallocated for good, as
CloudSim's "completed VM" rule does. Nothing is accounted before T_1 (no host has been updated yet, so each
reads 0% and the trapezoid rule gives 0), and the day ends with the last migrations started at T_287.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from advisor.migration.precopy import predict_precopy_batch
from advisor.simulate.datacentre import HOST_BW_KBIT, VM_BW_KBIT, DataCentre
from advisor.simulate.trace import Day

STEP_S = 300.0
CLOCK_OFFSET_S = 0.1
HISTORY = 30
MIGRATION_MBPS = HOST_BW_KBIT / 16000.0  # half of the link, kbit/s to MB/s
SOURCE_SHARE = 0.9  # a migrating VM gets 90% of its demand
TARGET_SHARE = 0.1  # and reserves 10% on the destination

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Setup:
    """How the data centre behaves. The defaults (`CLOUDSIM`) are SETUP.md; the rest are realistic knobs."""

    name: str = "cloudsim"
    standby_after_s: float | None = None  # None: an empty host draws 0 W at once (CloudSim)
    standby_w: float = 0.0
    bandwidth_mibps: float = MIGRATION_MBPS
    max_downtime_ms: float = 300.0
    dirty_mibps_per_core: float = 0.0  # > 0: pre-copy model; the dirty rate follows CPU use

    @property
    def realistic(self) -> bool:
        return self.standby_after_s is not None


CLOUDSIM = Setup()


@dataclass
class StepView:
    """What a policy sees at a decision time: only the past and the present."""

    k: int
    dc: DataCentre
    mips: np.ndarray
    ram: np.ndarray
    req: np.ndarray  # MIPS each VM asks for now (0 once deallocated)
    host_of: np.ndarray  # -1: deallocated
    members: list[list[int]]  # VMs per host, in arrival order
    util_mips: np.ndarray  # MIPS allocated per host now
    avail: np.ndarray  # MIPS a host can still hand out without over-subscription
    history: np.ndarray  # VM utilisation, most recent first (N x min(k, 30))
    ram_free: np.ndarray | None  # MB left per host when memory binds (realistic), else None

    @property
    def util(self) -> np.ndarray:
        u = self.util_mips / self.dc.cap
        return np.where((u > 1.0) & (u < 1.01), 1.0, u)


Migration = tuple[int, int]  # (VM, destination host)


class Policy(Protocol):
    name: str

    def initial(self, dc: DataCentre, mips: np.ndarray, ram: np.ndarray) -> np.ndarray:
        """Host of every VM at t = 0, when each asks for its full MIPS and RAM."""
        ...

    def decide(self, view: StepView) -> list[Migration]:
        """Migrations to start now; a VM may appear more than once (CloudSim's chained moves)."""
        ...


@dataclass
class Result:
    """Run totals (SLATAH, PDM, SLAV as fractions) and per-step series."""

    day: str
    policy: str
    setup: str
    vms: int
    hosts: int
    energy_kwh: float
    migrations: int
    slatah: float
    pdm: float
    wall_s: float
    step_energy_kwh: list[float] = field(default_factory=list)
    step_active_hosts: list[int] = field(default_factory=list)
    step_overloaded_hosts: list[int] = field(default_factory=list)

    @property
    def slav(self) -> float:
        return self.slatah * self.pdm

    @property
    def esv(self) -> float:
        return self.energy_kwh * self.slav

    def summary(self) -> dict[str, object]:
        """The issue's JSON contract."""
        return {
            "day": self.day,
            "vms": self.vms,
            "hosts": self.hosts,
            "energy_kwh": round(self.energy_kwh, 4),
            "migrations": self.migrations,
            "slatah": self.slatah,
            "pdm": self.pdm,
            "slav": self.slav,
            "esv": self.esv,
            "wall_s": round(self.wall_s, 2),
        }


def first_fit(dc: DataCentre, mips: np.ndarray, ram: np.ndarray) -> np.ndarray:
    """CloudSim's Simple/NonPowerAware placement: lowest-id host with room for full MIPS, RAM, bandwidth."""
    return _place_at_zero(dc, mips, ram, lambda fits, vm: int(np.argmax(fits)))


def pabfd_at_zero(dc: DataCentre, mips: np.ndarray, ram: np.ndarray) -> np.ndarray:
    """The migration policies' t = 0 placement: PABFD in VM order, each VM at its full MIPS. The power
    before is read at 0% (no update has run yet) and the power after counts the VMs placed so far; the
    overload check never bites, because a VM already created asks for nothing until its cloudlet starts."""
    idle = dc.curve[:, 0]
    used = np.zeros(dc.size)

    def best(fits: np.ndarray, vm: int) -> int:
        hosts = np.flatnonzero(fits)
        diff = dc.watts((used[hosts] + mips[vm]) / dc.cap[hosts], hosts) - idle[hosts]
        h = int(hosts[np.argmin(diff)])
        used[h] += mips[vm]
        return h

    return _place_at_zero(dc, mips, ram, best)


def _place_at_zero(
    dc: DataCentre, mips: np.ndarray, ram: np.ndarray, choose: Callable[[np.ndarray, int], int]
) -> np.ndarray:
    free_mips = dc.cap.copy()
    free_ram = dc.ram.copy()
    free_bw = np.full(dc.size, HOST_BW_KBIT)
    out = np.empty(len(mips), dtype=int)
    for j in range(len(mips)):
        fits = (dc.pe >= mips[j]) & (free_mips >= mips[j]) & (free_ram >= ram[j]) & (free_bw >= VM_BW_KBIT)
        if not fits.any():
            raise ValueError(f"VM {j} fits on none of the {dc.size} hosts at t = 0")
        h = choose(fits, j)
        out[j] = h
        free_mips[h] -= mips[j]
        free_ram[h] -= ram[j]
        free_bw[h] -= VM_BW_KBIT
    return out


@dataclass
class _Piece:
    """The allocation structure of one piece of an interval: who sits where, and who is moving."""

    vm: np.ndarray  # entries, ordered by host then arrival (CloudSim sums in that order)
    host: np.ndarray
    role: np.ndarray  # 0 resident, 1 migrating out, 2 migrating in


@dataclass
class _HostState:
    util_mips: np.ndarray
    req: np.ndarray
    vm_req: np.ndarray  # per entry
    vm_alloc: np.ndarray  # per entry


def _state(
    dc: DataCentre, piece: _Piece, demand: np.ndarray, mips: np.ndarray, quirks: bool = True
) -> _HostState:
    """CloudSim's time-shared over-subscription scheduler for one instant. With `quirks` an incoming VM
    counts its full demand as requested on the destination and the source adds back 90% / 0.9 in floating
    point; without, the destination only asks for the 10% it gets."""
    h = piece.host
    r = demand[piece.vm] * mips[piece.vm]
    c = np.minimum(r, dc.pe[h])
    incoming = piece.role == 2
    outgoing = piece.role == 1
    need = np.bincount(h, np.where(incoming, c * TARGET_SHARE, c), minlength=dc.size)
    over = need > dc.cap
    scale = np.where(over, dc.cap / np.where(over, need, 1.0), 1.0)[h]
    plain = np.where(outgoing, c * SOURCE_SHARE, np.where(incoming, c * TARGET_SHARE, c))
    squeezed = np.floor(
        np.where(outgoing, c * scale * SOURCE_SHARE, np.where(incoming, c * TARGET_SHARE * scale, c * scale))
    )
    alloc = np.where(over[h], squeezed, plain)
    if quirks:
        contrib = np.where(outgoing, alloc / SOURCE_SHARE, alloc)
        asked = r
    else:
        contrib = np.where(outgoing, np.where(over[h], alloc / SOURCE_SHARE, c), alloc)
        asked = np.where(incoming, c * TARGET_SHARE, r)
    return _HostState(
        np.bincount(h, contrib, minlength=dc.size), np.bincount(h, asked, minlength=dc.size), r, alloc
    )


def _clamp(u: np.ndarray) -> np.ndarray:
    return np.where((u > 1.0) & (u < 1.01), 1.0, u)


class Replay:
    """One day, one policy: the mutable state of the data centre between decisions."""

    def __init__(self, day: Day, dc: DataCentre, policy: Policy, setup: Setup = CLOUDSIM):
        self.day, self.dc, self.policy, self.setup = day, dc, policy, setup
        n = len(day.mips)
        u = np.concatenate([day.util, day.util[:, -1:]], axis=1)  # CloudSim repeats the last sample
        self.samples = u
        # utilisation at every decision time T_k (0.1 s past the sample): exactly 0 only if both ends are
        frac = CLOCK_OFFSET_S / STEP_S
        self.at_decision = u[:, :-1] + (u[:, 1:] - u[:, :-1]) * frac
        self.host_of = policy.initial(dc, day.mips, day.ram).astype(int)
        self.members: list[list[int]] = [[] for _ in range(dc.size)]
        for j in range(n):
            self.members[self.host_of[j]].append(j)
        self.stamp = np.arange(n, dtype=float)
        self.next_stamp = float(n)
        # realistic: when an empty host goes to standby (inf while it holds VMs, -inf: asleep from the start)
        self.awake_until = np.where(np.bincount(self.host_of, minlength=dc.size) > 0, np.inf, -np.inf)

    def _durations(self, moving: dict[int, list[int]], req: np.ndarray) -> dict[int, tuple[float, float]]:
        """(migration time s, downtime s) per moving VM."""
        st, ram = self.setup, self.day.ram
        if st.dirty_mibps_per_core <= 0:
            return {j: (ram[j] / st.bandwidth_mibps, 0.0) for j in moving}
        vms = list(moving)
        est = predict_precopy_batch(
            ram[vms].astype(float),
            st.dirty_mibps_per_core * req[vms] / 1000.0,
            st.bandwidth_mibps,
            st.max_downtime_ms,
        )
        times = np.minimum(est["total_time_s"], STEP_S - 1.0)
        pauses = est["downtime_ms"] / 1000.0
        return {j: (float(t), float(d)) for j, t, d in zip(vms, times, pauses, strict=True)}

    def demand(self, k: int, offset: float) -> np.ndarray:
        """VM utilisation at T_k + offset, linear between samples."""
        a = CLOCK_OFFSET_S + offset
        if a >= STEP_S:
            return self.at_decision[:, k + 1]
        return self.samples[:, k] + (self.samples[:, k + 1] - self.samples[:, k]) * (a / STEP_S)

    def _piece(self, moving: dict[int, list[int]]) -> _Piece:
        alive = np.flatnonzero(self.host_of >= 0)
        vm = [alive]
        host = [self.host_of[alive]]
        role = [np.where(np.isin(alive, list(moving)), 1, 0)]
        stamp = [self.stamp[alive]]
        extra = self.next_stamp
        for j, dests in moving.items():
            for d in dests:
                vm.append(np.array([j]))
                host.append(np.array([d]))
                role.append(np.array([2]))
                stamp.append(np.array([extra]))
                extra += 1
        v, h, r, s = (np.concatenate(x) for x in (vm, host, role, stamp))
        order = np.lexsort((s, h))
        return _Piece(v[order], h[order], r[order])

    def run(self, progress: Progress | None = None) -> Result:
        day, dc = self.day, self.dc
        started = time.perf_counter()
        n, steps = day.util.shape
        mips, ram = day.mips, day.ram
        energy_j = 0.0
        active_s = violating_s = 0.0
        requested = degraded = 0.0
        migrations = 0
        step_energy: list[float] = []
        step_active: list[int] = []
        step_over: list[int] = []
        last = steps - 1
        real = self.setup.realistic
        quirks = not real
        for k in range(1, steps):
            if progress and k % 48 == 0:
                progress(f"{self.policy.name}: {k * STEP_S / 3600:.0f} h replayed")
            now = self.at_decision[:, k]
            if not real:
                gone = np.flatnonzero((self.host_of >= 0) & (now == 0.0))
                for g in gone:
                    self.members[self.host_of[g]].remove(int(g))
                self.host_of[gone] = -1
            resident = self._piece({})
            pre = _state(dc, resident, now, mips, quirks)
            step_active.append(int((pre.util_mips > 0).sum()))
            step_over.append(int((pre.util_mips < pre.req).sum()))
            need = np.bincount(resident.host, np.minimum(pre.vm_req, dc.pe[resident.host]), minlength=dc.size)
            view = StepView(
                k=k,
                dc=dc,
                mips=mips,
                ram=ram,
                req=np.where(self.host_of >= 0, now * mips, 0.0),
                host_of=self.host_of.copy(),
                members=[list(m) for m in self.members],
                util_mips=pre.util_mips,
                avail=np.maximum(dc.cap - need, 0.0),
                history=self.at_decision[:, max(1, k - HISTORY + 1) : k + 1][:, ::-1],
                ram_free=(dc.ram - np.bincount(resident.host, ram[resident.vm], minlength=dc.size))
                if real
                else None,
            )
            plan = self.policy.decide(view)
            migrations += len(plan)
            moving: dict[int, list[int]] = {}
            for j, d in plan:
                moving.setdefault(j, []).append(d)
            timing = self._durations(moving, view.req)
            duration = {j: t for j, (t, _) in timing.items()}
            for j, (_, down) in timing.items():
                degraded += view.req[j] * down
            ends = sorted({duration[j] for j in moving})
            cuts = [0.0, *ends] + ([] if k == last else [STEP_S])
            e_step = 0.0
            for i in range(len(cuts) - 1):
                t0, t1 = cuts[i], cuts[i + 1]
                flying = {j: ds for j, ds in moving.items() if duration[j] > t0}
                piece = self._piece(flying)
                a = _state(dc, piece, self.demand(k, t0), mips, quirks)
                b = _state(dc, piece, self.demand(k, t1), mips, quirks)
                dt = t1 - t0
                ua, ub = _clamp(a.util_mips / dc.cap), _clamp(b.util_mips / dc.cap)
                busy_w = (dc.watts(ua) + dc.watts(ub)) / 2.0
                if real:
                    held = np.bincount(piece.host, minlength=dc.size) > 0
                    awake = np.where(held, dt, np.clip(self.awake_until - (k * STEP_S + t0), 0.0, dt))
                    e = (busy_w * awake + self.setup.standby_w * (dt - awake)).sum()
                    on = held
                else:
                    e = np.where(ua > 0, busy_w * dt, 0.0).sum()
                    on = a.util_mips > 0
                e_step += float(e)
                active_s += float(on.sum()) * dt
                violating_s += float((on & (a.util_mips < a.req)).sum()) * dt
                mine = piece.role != 2
                requested += float(a.vm_req[mine].sum()) * dt
                out = piece.role == 1
                short = np.maximum(a.vm_req[out] - a.vm_alloc[out], 0.0)
                degraded += float(short.sum()) * dt
                for j in sorted((j for j in flying if duration[j] <= t1), key=lambda j: (duration[j], j)):
                    self._arrive(j, moving[j][-1], k * STEP_S + t1)
            energy_j += e_step
            step_energy.append(e_step / 3.6e6)
        return Result(
            day=day.name,
            policy=self.policy.name,
            setup=self.setup.name,
            vms=n,
            hosts=dc.size,
            energy_kwh=energy_j / 3.6e6,
            migrations=migrations,
            slatah=violating_s / active_s if active_s else 0.0,
            pdm=degraded / requested if requested else 0.0,
            wall_s=time.perf_counter() - started,
            step_energy_kwh=step_energy,
            step_active_hosts=step_active,
            step_overloaded_hosts=step_over,
        )

    def _arrive(self, j: int, dest: int, at: float) -> None:
        src = self.host_of[j]
        self.members[src].remove(j)
        if not self.members[src]:
            self.awake_until[src] = at + (self.setup.standby_after_s or 0.0)
        self.awake_until[dest] = np.inf
        self.members[dest].append(j)
        self.host_of[j] = dest
        self.stamp[j] = self.next_stamp
        self.next_stamp += 1


def replay(
    day: Day, dc: DataCentre, policy: Policy, setup: Setup = CLOUDSIM, progress: Progress | None = None
) -> Result:
    """Replay `day` under `policy`."""
    return Replay(day, dc, policy, setup).run(progress)
