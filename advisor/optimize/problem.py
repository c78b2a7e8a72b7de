"""The placement problem compiled once for every solver: items, allowed hosts, conflicts, what must move.

An *item* is a set of VMs that must share a host (an affinity group, or one VM): solvers place items,
never half an affinity group. Capacities and demands are integers (CPU in milli-cores, memory in MiB),
demands rounded up and capacities down, so an integer-feasible placement is feasible in real numbers
too and every solver agrees on what fits.

Forced moves: items on a maintenance host, items breaking a rule, and on each overloaded host the
smallest-memory movable items until it fits again (Beloglazov's minimum-migration-time choice; VMs that
moved recently go last). The migration cap is `max(floor(migration_cap x VMs), VMs of those items)`:
forced moves count against the cap first and are always allowed; whatever the cap has left goes to
consolidation or balancing.

Anti-ping-pong: a VM moved less than `plan.sticky_h` ago that need not move may only stay, and each
migration is charged so that it pays back within `plan.payback_h` (the costs are watts-equivalent over
the forecast horizon; a payback half as long charges twice as much). A move is charged by the MiB the
migration model predicts it sends (`VMDemand.move_mib`); a VM whose live move is predicted not to
converge at its forecast dirty rate is held like a recent mover: it moves only if it must.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property

import numpy as np

from advisor.config import PlanSettings
from advisor.core import VM, Cluster, Forecast, Host, HostState, MigrationReason
from advisor.errors import InputError
from advisor.migration.live_window import cannot_move_live
from advisor.migration.predict import MigrationPrediction
from advisor.optimize.demand import JointHistory, VMDemand, demand_of, peak_index
from advisor.optimize.power import PowerTable

CPU_SCALE = 1000  # integer CPU unit: milli-cores


@dataclass(frozen=True)
class Item:
    vms: tuple[str, ...]
    cpu: int  # P95, milli-cores
    mem: int  # MiB
    cpu50: float  # P50 cores, for energy
    allowed: frozenset[int]  # host indices it may run on
    fixed: int | None  # host index when it may not move
    home: int | None  # the host all its VMs run on now, if they share one
    vm_hosts: tuple[int, ...]  # current host of each VM
    vm_cost: tuple[float, ...]  # watts-equivalent charged for moving each VM

    def moves(self, h: int) -> int:
        """VMs that migrate if the item ends up on host `h`."""
        return sum(1 for x in self.vm_hosts if x != h)

    def cost(self, h: int) -> float:
        return sum(c for x, c in zip(self.vm_hosts, self.vm_cost, strict=True) if x != h)

    @property
    def stays(self) -> bool:
        """It can only be where it is: unmovable, or pinned or sticky to its own host."""
        return self.home is not None and self.allowed == frozenset({self.home})


@dataclass(frozen=True)
class Contradiction:
    """Why no placement can exist, and the VMs to blame."""

    message: str
    vms: tuple[str, ...]


@dataclass(frozen=True)
class Problem:
    cluster: Cluster
    settings: PlanSettings
    demand: Mapping[str, VMDemand]
    cpu_cap: tuple[int, ...]
    mem_cap: tuple[int, ...]
    usable: tuple[bool, ...]  # not in maintenance
    up: tuple[bool, ...]
    items: tuple[Item, ...]
    conflicts: tuple[frozenset[int], ...]  # anti-affinity, item level
    anti_groups: tuple[tuple[int, ...], ...]  # the items of each anti-affinity group
    start: tuple[int, ...]  # host of each item once forced moves are taken out; -1 if it must move
    evicted: Mapping[int, MigrationReason]  # item -> why it must move
    overloaded: frozenset[int]  # hosts above headroom in the current placement
    limit: int  # most VMs a plan may move
    contradictions: tuple[Contradiction, ...] = field(default=())
    series: np.ndarray | None = None  # peak model joint: each item's CPU history, milli-cores (items, steps)

    def cpu_floor(self, i: int) -> int:
        """CPU an item surely adds to any host's peak: its P95 (sum model), its least sample (joint);
        what a lower bound may count."""
        if self.series is None:
            return self.items[i].cpu
        return math.floor(float(self.series[i].min()))

    @cached_property
    def arrays(self) -> HostArrays:
        return HostArrays(self)

    @property
    def hosts(self) -> tuple[Host, ...]:
        return self.cluster.hosts

    @property
    def goal(self) -> str:
        return self.settings.goal

    def placement(self, assign: Sequence[int]) -> dict[str, str]:
        """VM -> host name; an unassigned item stays where its VMs are."""
        names = [h.name for h in self.hosts]
        out = {}
        for item, h in zip(self.items, assign, strict=True):
            for vm, cur in zip(item.vms, item.vm_hosts, strict=True):
                out[vm] = names[h if h >= 0 else cur]
        return out

    def moves(self, assign: Sequence[int]) -> int:
        return sum(item.moves(h) for item, h in zip(self.items, assign, strict=True))

    def objective(self, assign: Sequence[int]) -> float:
        """What the planner minimises, in watts-equivalent: energy (consolidate) or peak CPU and woken
        hosts (balance), plus migration cost. Uses the real power curves."""
        move = sum(item.cost(h) for item, h in zip(self.items, assign, strict=True))
        if self.goal == "balance":
            state = Loads(self, assign)
            return self.settings.balance_w_per_pct * 100.0 * state.peak_util() + state.wake_w() + move
        return self.watts(assign) + move

    def watts(self, assign: Sequence[int]) -> float:
        """Power of the whole cluster (standby hosts included), real curves."""
        state = Loads(self, assign)
        return sum(state.watts(h) for h in range(len(self.hosts)))


class HostArrays:
    """The problem's per-host figures as arrays, for searches that look at every host at once."""

    def __init__(self, problem: Problem) -> None:
        hosts = problem.hosts
        self.cpu_cap = np.array(problem.cpu_cap, dtype=np.int64)
        self.mem_cap = np.array(problem.mem_cap, dtype=np.int64)
        self.cpu_ref, self.mem_ref = max(problem.cpu_cap), max(problem.mem_cap)  # the largest host
        self.up = np.array(problem.up, dtype=bool)
        self.usable = np.array(problem.usable, dtype=bool)
        self.power = PowerTable([h.power for h in hosts], [h.cpu_cores for h in hosts])
        self._masks: dict[frozenset[int], np.ndarray] = {}

    def allowed(self, hosts: frozenset[int]) -> np.ndarray:
        """Boolean mask of a host set; items share their sets, so masks are made once per set."""
        mask = self._masks.get(hosts)
        if mask is None:
            mask = np.zeros(len(self.cpu_cap), dtype=bool)
            mask[list(hosts)] = True
            self._masks[hosts] = mask
        return mask


class Loads:
    """Incremental per-host sums for one assignment (item -> host index, -1 unplaced)."""

    def __init__(self, problem: Problem, assign: Sequence[int]) -> None:
        self.p = problem
        self.a = problem.arrays
        n = len(problem.hosts)
        self.assign = [-1] * len(problem.items)
        self.cpu = np.zeros(n, dtype=np.int64)
        self.mem = np.zeros(n, dtype=np.int64)
        self.p50 = np.zeros(n, dtype=float)
        self.count = np.zeros(n, dtype=np.int64)
        self.on: list[set[int]] = [set() for _ in range(n)]
        self.keep_up = problem.goal == "balance"
        # peak model joint: each host's summed CPU history; `cpu` is then its P95, not a sum of P95s
        self.series = None if problem.series is None else np.zeros((n, problem.series.shape[1]))
        self.k = 0 if problem.series is None else peak_index(problem.series.shape[1])
        for i, h in enumerate(assign):
            if h >= 0:
                self.add(i, h)

    def add(self, i: int, h: int) -> None:
        item = self.p.items[i]
        self.assign[i] = h
        self.mem[h] += item.mem
        self.p50[h] += item.cpu50
        self.count[h] += 1
        self.on[h].add(i)
        if self.series is None:
            self.cpu[h] += item.cpu
        else:
            self.series[h] += self.p.series[i]  # type: ignore[index]
            self.cpu[h] = self.peak(self.series[h])

    def remove(self, i: int) -> None:
        h = self.assign[i]
        item = self.p.items[i]
        self.assign[i] = -1
        self.mem[h] -= item.mem
        self.p50[h] -= item.cpu50
        self.count[h] -= 1
        self.on[h].discard(i)
        if self.series is None:
            self.cpu[h] -= item.cpu
        else:
            self.series[h] -= self.p.series[i]  # type: ignore[index]
            self.cpu[h] = self.peak(self.series[h])
        if not self.on[h]:
            self.p50[h] = 0.0  # no float residue on an empty host
            if self.series is not None:
                self.series[h] = 0.0
                self.cpu[h] = 0

    def peak(self, series: np.ndarray) -> int:
        """Milli-cores of the P95 of a summed history, rounded up with a hundredth to spare: single-
        precision histories summed in another order (the sequencer's, in cores) may differ by that."""
        return math.ceil(float(np.partition(series, self.k)[self.k]) + 0.01)

    def fits_cpu(self, i: int, h: int) -> bool:
        if self.series is None:
            return bool(self.cpu[h] + self.p.items[i].cpu <= self.p.cpu_cap[h])
        return self.peak(self.series[h] + self.p.series[i]) <= self.p.cpu_cap[h]  # type: ignore[index]

    def fits(self, i: int, h: int) -> bool:
        item = self.p.items[i]
        return bool(
            h in item.allowed
            and self.mem[h] + item.mem <= self.p.mem_cap[h]
            and not any(self.assign[j] == h for j in self.p.conflicts[i])
            and self.fits_cpu(i, h)
        )

    def fits_all(self, i: int, exact: bool = True) -> np.ndarray:
        """`fits(i, h)` for every host h at once. Peak model joint, not `exact`: only what the host's
        current peak plus the item's least sample rules out (callers check `fits_cpu` on what they pick)."""
        item = self.p.items[i]
        ok = self.a.allowed(item.allowed) & (self.mem + item.mem <= self.a.mem_cap)
        if self.series is None:
            ok &= self.cpu + item.cpu <= self.a.cpu_cap
        else:
            ok &= self.cpu + math.floor(float(self.p.series[i].min())) <= self.a.cpu_cap + 1  # type: ignore[index]
        for j in self.p.conflicts[i]:
            if self.assign[j] >= 0:
                ok[self.assign[j]] = False
        if exact and self.series is not None:
            for h in np.flatnonzero(ok):
                ok[h] = self.fits_cpu(i, int(h))
        return ok

    def active(self, h: int) -> bool:
        return bool(self.on[h]) or (self.keep_up and self.p.up[h])

    def active_all(self) -> np.ndarray:
        return (self.count > 0) | (self.a.up if self.keep_up else False)

    def watts(self, h: int) -> float:
        host = self.p.hosts[h]
        if not self.active(h):
            return host.power.standby_w
        return host.power.watts(float(self.p50[h]) / host.cpu_cores)

    def watts_all(self) -> np.ndarray:
        return np.where(self.active_all(), self.a.power.at_p50(self.p50), self.a.power.standby)

    def power_increase(self, i: int, h: int) -> float:
        host = self.p.hosts[h]
        return host.power.watts((float(self.p50[h]) + self.p.items[i].cpu50) / host.cpu_cores) - self.watts(h)

    def power_increase_all(self, i: int) -> np.ndarray:
        """`power_increase(i, h)` for every host h at once, bit for bit."""
        return self.a.power.at_p50(self.p50 + self.p.items[i].cpu50) - self.watts_all()

    def util(self, h: int) -> float:
        return float(self.cpu[h]) / CPU_SCALE / self.p.hosts[h].cpu_cores

    def util2d(self, h: int) -> float:
        cpu = float(self.cpu[h]) / max(self.p.cpu_cap[h], 1)
        return max(cpu, float(self.mem[h]) / max(self.p.mem_cap[h], 1))

    def util2d_all(self) -> np.ndarray:
        return np.maximum(self.cpu / np.maximum(self.a.cpu_cap, 1), self.mem / np.maximum(self.a.mem_cap, 1))

    def peak_util(self) -> float:
        return max((self.util(h) for h in range(len(self.cpu)) if self.active(h)), default=0.0)

    def wake_w(self) -> float:
        """Goal balance: a standby host woken to take VMs costs its idle draw over standby."""
        return sum(
            h.power.idle_w - h.power.standby_w
            for i, h in enumerate(self.p.hosts)
            if self.on[i] and not self.p.up[i]
        )


def cpu_units(cores: float) -> int:
    return math.ceil(cores * CPU_SCALE - 1e-9)


def mem_units(mib: float) -> int:
    return math.ceil(mib - 1e-9)


def build_problem(
    cluster: Cluster,
    forecast: Forecast,
    settings: PlanSettings,
    moved_at: Mapping[str, datetime] | None = None,
    history: JointHistory | None = None,
    moves: Mapping[str, MigrationPrediction] | None = None,
) -> Problem:
    """`moved_at`: when VMs last moved (a previous plan's or the journal's record): a VM moved less than
    `settings.sticky_h` before the forecast stays on its host unless it must move. `history`: the VMs'
    joint CPU history, which `settings.peak_model = "joint"` needs. `moves`: each VM's predicted live
    migration (the move cost, and whether it can move live now; see demand.py)."""
    demand = demand_of(cluster, forecast, moves)
    if settings.peak_model == "joint" and history is None:
        raise InputError(
            'plan.peak_model = "joint" needs the VMs\' metrics history (run `advisor collect`), or use "sum"'
        )
    joint = history if settings.peak_model == "joint" else None
    cpu_of = _cpu_of(demand, joint)
    hosts = cluster.hosts
    host_index = {h.name: i for i, h in enumerate(hosts)}
    usable = tuple(h.state != HostState.MAINTENANCE for h in hosts)
    up = tuple(h.state == HostState.UP for h in hosts)
    cpu_cap = tuple(math.floor(h.cpu_cores * settings.cpu_headroom * CPU_SCALE + 1e-9) for h in hosts)
    mem_cap = tuple(math.floor(h.mem_mib * settings.mem_headroom + 1e-9) for h in hosts)
    caps = (cpu_cap, mem_cap)

    problems: list[Contradiction] = []
    items: list[Item] = []
    vm_by_name = cluster.vm_by_name
    hosts_of: dict[object, frozenset[int]] = {}  # one shared set per cluster label, pin set, ...
    horizon_h = forecast.horizon_s / 3600.0
    per_move = horizon_h / settings.payback_h if settings.payback_h > 0 else 1.0
    for group in _affinity_components(cluster):
        item, why = _compile_item(
            [vm_by_name[n] for n in group],
            cluster,
            demand,
            cpu_of,
            settings,
            per_move,
            host_index,
            usable,
            caps,
            hosts_of,
        )
        items.append(item)
        problems.extend([why] if why else [])
    conflicts, anti_groups = _anti_affinity(cluster, items, problems)
    _check_unmovable(cluster, items, conflicts, cpu_of, caps, problems)

    on_host: list[list[str]] = [[] for _ in hosts]
    mem_now = [0] * len(hosts)
    for vm in cluster.vms:
        on_host[host_index[vm.host]].append(vm.name)
        mem_now[host_index[vm.host]] += mem_units(demand[vm.name].mem_mib)
    overloaded = frozenset(
        h for h in range(len(hosts)) if cpu_of(on_host[h]) > cpu_cap[h] or mem_now[h] > mem_cap[h]
    )
    sticky = _sticky(items, forecast.made_at, settings.sticky_h, moved_at or {})
    held = cannot_move_live(cluster, {vm: d.move for vm, d in demand.items() if d.move is not None})
    sticky |= _items_with(items, held)  # predicted not to converge live: held like a recent mover

    def items_cpu(kept: Sequence[int]) -> int:
        if joint is None:
            return sum(items[i].cpu for i in kept)
        return cpu_of([vm for i in kept for vm in items[i].vms])

    start, evicted = _forced_moves(items, conflicts, len(hosts), usable, caps, sticky, items_cpu)
    for i in sticky:
        if start[i] >= 0:  # a recent mover that need not move stays: no ping-pong
            items[i] = replace(items[i], allowed=frozenset({start[i]}))
    forced = sum(len(items[i].vms) for i in evicted)
    limit = max(math.floor(settings.migration_cap * len(cluster.vms) + 1e-9), forced)
    return Problem(
        cluster=cluster,
        settings=settings,
        demand=demand,
        cpu_cap=cpu_cap,
        mem_cap=mem_cap,
        usable=usable,
        up=up,
        items=tuple(items),
        conflicts=conflicts,
        anti_groups=anti_groups,
        start=start,
        evicted=evicted,
        overloaded=overloaded,
        limit=limit,
        contradictions=tuple(problems),
        series=None if joint is None else _item_series(items, joint),
    )


def _cpu_of(demand: Mapping[str, VMDemand], joint: JointHistory | None) -> Callable[[Sequence[str]], int]:
    """Milli-cores a set of VMs needs at its CPU peak: the sum of their P95s, or their joint P95."""
    if joint is None:
        return lambda vms: sum(cpu_units(demand[vm].cpu_p95) for vm in vms)
    return lambda vms: cpu_units(joint.peak(vms) + 1e-5)  # the margin Loads.peak keeps


def _item_series(items: Sequence[Item], joint: JointHistory) -> np.ndarray:
    out = np.zeros((len(items), joint.cpu.shape[1]), dtype=np.float32)
    for i, item in enumerate(items):
        for vm in item.vms:
            out[i] += joint.of(vm) * CPU_SCALE
    return out


def _sticky(
    items: Sequence[Item], now: datetime, sticky_h: float, moved_at: Mapping[str, datetime]
) -> set[int]:
    """Items with a VM that moved less than `sticky_h` hours before `now` (or after it)."""
    recent = {
        vm
        for vm, t in moved_at.items()
        if (now - (t if t.tzinfo else t.replace(tzinfo=UTC))).total_seconds() < sticky_h * 3600.0
    }
    return _items_with(items, recent)


def _items_with(items: Sequence[Item], vms: Iterable[str]) -> set[int]:
    names = set(vms)
    return {i for i, item in enumerate(items) if names.intersection(item.vms)} if names else set()


def _anti_affinity(
    cluster: Cluster, items: Sequence[Item], problems: list[Contradiction]
) -> tuple[tuple[frozenset[int], ...], tuple[tuple[int, ...], ...]]:
    item_of = {vm: i for i, item in enumerate(items) for vm in item.vms}
    conflicts: list[set[int]] = [set() for _ in items]
    anti_groups = []
    for group in cluster.rules.anti_affinity:
        by_item: dict[int, list[str]] = {}
        for vm in group:
            by_item.setdefault(item_of[vm], []).append(vm)
        for same in by_item.values():
            if len(same) > 1:
                names = ", ".join(same)
                problems.append(
                    Contradiction(
                        f"VMs {names} must share a host (affinity) and must not (anti-affinity)", tuple(same)
                    )
                )
        members = tuple(sorted(by_item))
        anti_groups.append(members)
        for i in members:
            conflicts[i].update(j for j in members if j != i)
        reachable = set().union(*(items[i].allowed for i in members))
        if len(reachable) < len(members):
            problems.append(
                Contradiction(
                    f"anti-affinity group [{', '.join(group)}] needs {len(members)} hosts, only "
                    f"{len(reachable)} are allowed and not in maintenance",
                    tuple(group),
                )
            )
    return tuple(frozenset(c) for c in conflicts), tuple(anti_groups)


def _check_unmovable(
    cluster: Cluster,
    items: Sequence[Item],
    conflicts: Sequence[frozenset[int]],
    cpu_of: Callable[[Sequence[str]], int],
    caps: tuple[Sequence[int], Sequence[int]],
    problems: list[Contradiction],
) -> None:
    """VMs that cannot move must fit, together, where they are."""
    fixed_on: dict[int, list[int]] = {}
    for i, item in enumerate(items):
        if item.fixed is not None:
            fixed_on.setdefault(item.fixed, []).append(i)
    for h, fixed in sorted(fixed_on.items()):
        host = cluster.hosts[h].name
        vms = tuple(vm for i in fixed for vm in items[i].vms)
        if cpu_of(vms) > caps[0][h] or sum(items[i].mem for i in fixed) > caps[1][h]:
            problems.append(
                Contradiction(f"VMs {', '.join(vms)} cannot leave host {host} and exceed its headroom", vms)
            )
        clash = tuple(vm for i in fixed if conflicts[i] & set(fixed) for vm in items[i].vms)
        if clash:
            problems.append(
                Contradiction(
                    f"VMs {', '.join(clash)} cannot leave host {host} and break an anti-affinity rule", clash
                )
            )


def _affinity_components(cluster: Cluster) -> list[tuple[str, ...]]:
    """Overlapping affinity groups merge; VMs keep cluster order inside and across items."""
    parent = {v.name: v.name for v in cluster.vms}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for group in cluster.rules.affinity:
        root = find(group[0])
        for vm in group[1:]:
            r = find(vm)
            if r != root:
                parent[r] = root
    comps: dict[str, list[str]] = {}
    for v in cluster.vms:
        comps.setdefault(find(v.name), []).append(v.name)
    return [tuple(c) for c in comps.values()]


def _compile_item(
    vms: Sequence[VM],
    cluster: Cluster,
    demand: Mapping[str, VMDemand],
    cpu_of: Callable[[Sequence[str]], int],
    settings: PlanSettings,
    per_move: float,
    host_index: Mapping[str, int],
    usable: Sequence[bool],
    caps: tuple[Sequence[int], Sequence[int]],
    hosts_of: dict[object, frozenset[int]],
) -> tuple[Item, Contradiction | None]:
    """`per_move` scales the migration cost so that a move pays back within `settings.payback_h`.
    `hosts_of` caches host sets by what they are made of: at 10,000 VMs most items share a few sets,
    and building each afresh cost 12 s at 1,000 hosts."""
    members = tuple(v.name for v in vms)
    hosts = cluster.hosts
    vm_hosts = tuple(host_index[v.host] for v in vms)
    cpu = cpu_of(members)
    mem = sum(mem_units(demand[v.name].mem_mib) for v in vms)
    per_gib = settings.migration_cost_w_per_gib
    cost = tuple(
        per_move * (settings.migration_cost_w + per_gib * demand[v.name].move_mib / 1024.0) for v in vms
    )
    names = ", ".join(members)
    why: Contradiction | None = None

    clusters = {hosts[h].cluster for h in vm_hosts}
    label = min(clusters) if len(clusters) == 1 else None
    if label not in hosts_of:
        hosts_of[label] = frozenset(i for i, h in enumerate(hosts) if h.cluster == label)
    allowed = hosts_of[label]
    if len(clusters) > 1:
        why = Contradiction(
            f"VMs {names} must share a host but run in different clusters ({', '.join(sorted(clusters))})",
            members,
        )
    pin_sets = tuple(frozenset(cluster.rules.pins[v.name]) for v in vms if v.name in cluster.rules.pins)
    key = (label, pin_sets)
    if key not in hosts_of:
        pinned = set(allowed)
        for pins in pin_sets:
            pinned &= {host_index[h] for h in pins}
        hosts_of[key] = frozenset(pinned)
        hosts_of[key, "usable"] = frozenset(h for h in pinned if usable[h])
    allowed, pinned_usable = hosts_of[key], hosts_of[key, "usable"]
    if why is None and not pinned_usable:
        only = "pinned only to hosts in maintenance" if allowed else "given no host that satisfies every pin"
        why = Contradiction(f"VMs {names} are {only}" if len(vms) > 1 else f"VM {names} is {only}", members)
    allowed = pinned_usable

    fixed: int | None = None
    stuck = [v for v in vms if not (v.movable and v.live_migratable)]
    if stuck:
        stuck_hosts = {host_index[v.host] for v in stuck}
        stuck_names = ", ".join(v.name for v in stuck)
        fixed = min(stuck_hosts)
        if why is None and len(stuck_hosts) > 1:
            why = Contradiction(
                f"VMs {stuck_names} cannot move, must share a host, and run on different hosts", members
            )
        elif why is None and not usable[fixed]:
            why = Contradiction(
                f"VM {stuck_names} cannot move but its host {hosts[fixed].name} is in maintenance", members
            )
        elif why is None and fixed not in allowed:
            why = Contradiction(
                f"VM {stuck_names} cannot move but its host {hosts[fixed].name} breaks a pin", members
            )
        allowed = frozenset({fixed})

    if why is None and not any(cpu <= caps[0][h] and mem <= caps[1][h] for h in allowed):
        what = "VMs " + names + " need" if len(vms) > 1 else "VM " + names + " needs"
        why = Contradiction(
            f"{what} {cpu / CPU_SCALE:.2f} cores at P95 and {mem} MiB, more than any allowed host holds "
            "within headroom",
            members,
        )
    home = vm_hosts[0] if len(set(vm_hosts)) == 1 else None
    item = Item(
        vms=members,
        cpu=cpu,
        mem=mem,
        cpu50=sum(demand[v.name].cpu_p50 for v in vms),
        allowed=frozenset(allowed),
        fixed=fixed,
        home=home,
        vm_hosts=vm_hosts,
        vm_cost=cost,
    )
    return item, why


def _forced_moves(
    items: Sequence[Item],
    conflicts: Sequence[frozenset[int]],
    n_hosts: int,
    usable: Sequence[bool],
    caps: tuple[Sequence[int], Sequence[int]],
    sticky: set[int],
    items_cpu: Callable[[Sequence[int]], int],
) -> tuple[tuple[int, ...], dict[int, MigrationReason]]:
    start = [-1] * len(items)
    evicted: dict[int, MigrationReason] = {}
    on: list[list[int]] = [[] for _ in range(n_hosts)]
    for i, item in enumerate(items):
        h = item.home
        if h is None:
            evicted[i] = MigrationReason.RULE
        elif not usable[h]:
            evicted[i] = MigrationReason.MAINTENANCE
        elif h not in item.allowed:
            evicted[i] = MigrationReason.RULE
        else:
            on[h].append(i)
    for h in range(n_hosts):
        kept: list[int] = []
        # unmovable first, then the largest: the small ones are the cheap ones to move
        for i in sorted(on[h], key=lambda i: (items[i].fixed is None, -items[i].mem, i)):
            if items[i].fixed is None and conflicts[i] & set(kept):
                evicted[i] = MigrationReason.RULE
            else:
                kept.append(i)
        left = list(kept)
        m = sum(items[i].mem for i in kept)
        # the smallest first (the cheapest to move), recent movers last
        movable = (i for i in kept if items[i].fixed is None)
        for i in sorted(movable, key=lambda i: (i in sticky, items[i].mem, i)):
            if m <= caps[1][h] and items_cpu(left) <= caps[0][h]:
                break
            evicted[i] = MigrationReason.OVERLOAD
            left.remove(i)
            m -= items[i].mem
        for i in kept:
            if i not in evicted:
                start[i] = h
    return tuple(start), evicted
