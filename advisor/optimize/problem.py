"""The placement problem compiled once for every solver: items, allowed hosts, conflicts, what must move.

An *item* is a set of VMs that must share a host (an affinity group, or one VM): solvers place items,
never half an affinity group. Capacities and demands are integers (CPU in milli-cores, memory in MiB),
demands rounded up and capacities down, so an integer-feasible placement is feasible in real numbers
too and every solver agrees on what fits.

Forced moves: items on a maintenance host, items breaking a rule, and on each overloaded host the
smallest-memory movable items until it fits again (Beloglazov's minimum-migration-time choice). The
migration cap is `max(floor(migration_cap x VMs), VMs of those items)`: forced moves count against the
cap first and are always allowed; whatever the cap has left goes to consolidation or balancing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from advisor.config import PlanSettings
from advisor.core import VM, Cluster, Forecast, Host, HostState, MigrationReason
from advisor.optimize.demand import VMDemand, demand_of

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
        state = Loads(self, assign)
        move = sum(item.cost(h) for item, h in zip(self.items, assign, strict=True))
        if self.goal == "balance":
            return self.settings.balance_w_per_pct * 100.0 * state.peak_util() + state.wake_w() + move
        return sum(state.watts(h) for h in range(len(self.hosts))) + move


class Loads:
    """Incremental per-host sums for one assignment (item -> host index, -1 unplaced)."""

    def __init__(self, problem: Problem, assign: Sequence[int]) -> None:
        self.p = problem
        n = len(problem.hosts)
        self.assign = [-1] * len(problem.items)
        self.cpu = [0] * n
        self.mem = [0] * n
        self.p50 = [0.0] * n
        self.on: list[set[int]] = [set() for _ in range(n)]
        self.keep_up = problem.goal == "balance"
        for i, h in enumerate(assign):
            if h >= 0:
                self.add(i, h)

    def add(self, i: int, h: int) -> None:
        item = self.p.items[i]
        self.assign[i] = h
        self.cpu[h] += item.cpu
        self.mem[h] += item.mem
        self.p50[h] += item.cpu50
        self.on[h].add(i)

    def remove(self, i: int) -> None:
        h = self.assign[i]
        item = self.p.items[i]
        self.assign[i] = -1
        self.cpu[h] -= item.cpu
        self.mem[h] -= item.mem
        self.p50[h] -= item.cpu50
        self.on[h].discard(i)
        if not self.on[h]:
            self.p50[h] = 0.0  # no float residue on an empty host

    def fits(self, i: int, h: int) -> bool:
        item = self.p.items[i]
        return (
            h in item.allowed
            and self.cpu[h] + item.cpu <= self.p.cpu_cap[h]
            and self.mem[h] + item.mem <= self.p.mem_cap[h]
            and not any(self.assign[j] == h for j in self.p.conflicts[i])
        )

    def active(self, h: int) -> bool:
        return bool(self.on[h]) or (self.keep_up and self.p.up[h])

    def watts(self, h: int) -> float:
        host = self.p.hosts[h]
        if not self.active(h):
            return host.power.standby_w
        return host.power.watts(self.p50[h] / host.cpu_cores)

    def power_increase(self, i: int, h: int) -> float:
        host = self.p.hosts[h]
        return host.power.watts((self.p50[h] + self.p.items[i].cpu50) / host.cpu_cores) - self.watts(h)

    def util(self, h: int) -> float:
        return self.cpu[h] / CPU_SCALE / self.p.hosts[h].cpu_cores

    def util2d(self, h: int) -> float:
        return max(self.cpu[h] / max(self.p.cpu_cap[h], 1), self.mem[h] / max(self.p.mem_cap[h], 1))

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


def build_problem(cluster: Cluster, forecast: Forecast, settings: PlanSettings) -> Problem:
    demand = demand_of(cluster, forecast)
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
    for group in _affinity_components(cluster):
        item, why = _compile_item(
            [vm_by_name[n] for n in group], cluster, demand, settings, host_index, usable, caps
        )
        items.append(item)
        problems.extend([why] if why else [])
    conflicts, anti_groups = _anti_affinity(cluster, items, problems)
    _check_unmovable(cluster, items, conflicts, caps, problems)

    cpu_now = [0] * len(hosts)
    mem_now = [0] * len(hosts)
    for vm in cluster.vms:
        cpu_now[host_index[vm.host]] += cpu_units(demand[vm.name].cpu_p95)
        mem_now[host_index[vm.host]] += mem_units(demand[vm.name].mem_mib)
    overloaded = frozenset(h for h in range(len(hosts)) if cpu_now[h] > cpu_cap[h] or mem_now[h] > mem_cap[h])
    start, evicted = _forced_moves(items, conflicts, len(hosts), usable, caps)
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
    )


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
        if sum(items[i].cpu for i in fixed) > caps[0][h] or sum(items[i].mem for i in fixed) > caps[1][h]:
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
    settings: PlanSettings,
    host_index: Mapping[str, int],
    usable: Sequence[bool],
    caps: tuple[Sequence[int], Sequence[int]],
) -> tuple[Item, Contradiction | None]:
    members = tuple(v.name for v in vms)
    hosts = cluster.hosts
    vm_hosts = tuple(host_index[v.host] for v in vms)
    cpu = sum(cpu_units(demand[v.name].cpu_p95) for v in vms)
    mem = sum(mem_units(demand[v.name].mem_mib) for v in vms)
    per_gib = settings.migration_cost_w_per_gib
    cost = tuple(settings.migration_cost_w + per_gib * v.mem_mib / 1024.0 for v in vms)
    names = ", ".join(members)
    why: Contradiction | None = None

    clusters = {hosts[h].cluster for h in vm_hosts}
    allowed = {i for i, h in enumerate(hosts) if h.cluster in clusters and len(clusters) == 1}
    if len(clusters) > 1:
        why = Contradiction(
            f"VMs {names} must share a host but run in different clusters ({', '.join(sorted(clusters))})",
            members,
        )
    for v in vms:
        pins = cluster.rules.pins.get(v.name)
        if pins is not None:
            allowed &= {host_index[h] for h in pins}
    pinned_usable = {h for h in allowed if usable[h]}
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
        allowed = {fixed}

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
        c = sum(items[i].cpu for i in kept)
        m = sum(items[i].mem for i in kept)
        for i in sorted((i for i in kept if items[i].fixed is None), key=lambda i: (items[i].mem, i)):
            if c <= caps[0][h] and m <= caps[1][h]:
                break
            evicted[i] = MigrationReason.OVERLOAD
            c -= items[i].cpu
            m -= items[i].mem
        for i in kept:
            if i not in evicted:
                start[i] = h
    return tuple(start), evicted
