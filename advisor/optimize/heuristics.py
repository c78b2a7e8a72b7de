"""Greedy placements: fast, complete when they can be, and the warm start CP-SAT improves on.

Every heuristic places whole items (an affinity group moves as one), never puts two members of an
anti-affinity group on one host, honours pins and maintenance (through `Item.allowed`) and leaves
unmovable VMs where they are. Each returns a full assignment or names what it could not place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from advisor.optimize.problem import CPU_SCALE, Loads, Problem


@dataclass(frozen=True)
class HeuristicResult:
    name: str
    assign: tuple[int, ...]  # item -> host index; -1 where it could not place the item
    unplaced: tuple[int, ...]

    @property
    def complete(self) -> bool:
        return not self.unplaced


def ffd(problem: Problem) -> HeuristicResult:
    """First-fit decreasing from scratch: the classic bin-packing baseline, blind to where VMs run now."""
    cpu_ref, mem_ref = max(problem.cpu_cap), max(problem.mem_cap)
    hosts = sorted(
        (h for h, ok in enumerate(problem.usable) if ok),
        key=lambda h: (not problem.up[h], -(problem.cpu_cap[h] / cpu_ref + problem.mem_cap[h] / mem_ref), h),
    )
    order = sorted(
        range(len(problem.items)),
        key=lambda i: (
            problem.items[i].fixed is None,
            -max(problem.items[i].cpu / cpu_ref, problem.items[i].mem / mem_ref),
            i,
        ),
    )
    ranked = np.array(hosts, dtype=np.int64)
    state = Loads(problem, [-1] * len(problem.items))
    unplaced = []
    for i in order:
        h = _first_fit(state, i, ranked[state.fits_all(i, exact=False)[ranked]])
        if h is None:
            unplaced.append(i)
        else:
            state.add(i, h)
    return HeuristicResult("ffd", tuple(state.assign), tuple(sorted(unplaced)))


def pabfd(problem: Problem) -> HeuristicResult:
    """Power-aware best-fit decreasing (Beloglazov & Buyya 2012), starting from the current placement:
    forced moves (maintenance, rules, overload with minimum-migration-time selection) go where power
    rises least; then the least-utilised hosts are emptied, all or nothing, while that saves energy."""
    return _power_aware(problem, "pabfd", two_d=False)


def pabfd2d(problem: Problem) -> HeuristicResult:
    """PABFD that sees memory as well as CPU: sorts by the larger normalised demand, breaks power ties
    towards hosts whose free CPU and memory stay balanced, and empties hosts by max(cpu, mem) use."""
    return _power_aware(problem, "pabfd2d", two_d=True)


def spread(problem: Problem) -> HeuristicResult:
    """Goal balance: forced moves go to the least-utilised host that fits; then VMs leave the hottest
    host while that lowers the peak by more than the migrations cost. Never wakes a host unless a
    forced move has nowhere else to go."""
    state = Loads(problem, problem.start)
    unplaced = []
    for i in sorted(_pending(problem), key=lambda i: (-problem.items[i].cpu, i)):
        item = problem.items[i]
        options = [
            (not state.active(h), (state.cpu[h] + item.cpu) / problem.cpu_cap[h], h)
            for h in item.allowed
            if state.fits(i, h)
        ]
        if options:
            state.add(i, min(options)[2])
        else:
            unplaced.append(i)
    if not unplaced:
        _lower_peak(state)
    return HeuristicResult("spread", tuple(state.assign), tuple(unplaced))


HEURISTICS: dict[str, tuple[Callable[[Problem], HeuristicResult], ...]] = {
    "consolidate": (ffd, pabfd, pabfd2d),
    "balance": (spread,),
}


def _pending(problem: Problem) -> list[int]:
    return [i for i, h in enumerate(problem.start) if h < 0]


def item_size(problem: Problem, i: int, two_d: bool) -> float:
    item = problem.items[i]
    a = problem.arrays
    cpu = item.cpu / a.cpu_ref
    return max(cpu, item.mem / a.mem_ref) if two_d else cpu


def best_host(state: Loads, i: int, two_d: bool, active_only: bool, exclude: int = -1) -> int | None:
    """Least power increase (in whole milliwatts, so that float noise cannot break ties), then for 2-D
    the most balanced free CPU and memory (per mille), then the lowest index; over every host at once."""
    p = state.p
    item = p.items[i]
    ok = state.fits_all(i, exact=False)
    if active_only:
        ok &= state.active_all()
    if exclude >= 0:
        ok[exclude] = False
    hosts = np.flatnonzero(ok)
    if not len(hosts):
        return None
    rise = np.trunc(state.power_increase_all(i)[hosts] * 1000.0)
    if not two_d:
        return _first_fit(state, i, hosts[np.lexsort((hosts, rise))])
    a = state.a
    free_cpu = (a.cpu_cap[hosts] - state.cpu[hosts] - item.cpu) / a.cpu_cap[hosts]
    free_mem = (a.mem_cap[hosts] - state.mem[hosts] - item.mem) / a.mem_cap[hosts]
    balance = np.trunc(np.abs(free_cpu - free_mem) * 1000.0)
    return _first_fit(state, i, hosts[np.lexsort((hosts, balance, rise))])


def _first_fit(state: Loads, i: int, ranked: np.ndarray) -> int | None:
    """The first of `ranked` whose CPU takes the item (all do under the sum model: `fits_all` checked)."""
    if state.series is None:
        return int(ranked[0]) if len(ranked) else None
    return next((int(h) for h in ranked if state.fits_cpu(i, int(h))), None)


def _power_aware(problem: Problem, name: str, two_d: bool) -> HeuristicResult:
    state = Loads(problem, problem.start)
    unplaced = []
    for i in sorted(_pending(problem), key=lambda i: (-item_size(problem, i, two_d), i)):
        h = best_host(state, i, two_d, active_only=False)
        if h is None:
            unplaced.append(i)
        else:
            state.add(i, h)
    if not unplaced and problem.goal == "consolidate":
        _empty_underloaded(state, two_d)
    return HeuristicResult(name, tuple(state.assign), tuple(unplaced))


def _empty_underloaded(state: Loads, two_d: bool) -> None:
    """Try each active host once, least utilised first; keep an evacuation only if every item found a
    running host, the move budget allows it and energy saved beats the migration cost."""
    p = state.p
    moves = p.moves(state.assign)
    open_ = np.ones(len(p.hosts), dtype=bool)  # not tried yet, and holding nothing unmovable
    open_[[it.fixed for it in p.items if it.fixed is not None]] = False
    cores = np.array([h.cpu_cores for h in p.hosts])
    while True:
        util = state.util2d_all() if two_d else state.cpu / CPU_SCALE / cores
        candidates = open_ & (state.count > 0)
        if not candidates.any():
            return
        src = int(np.argmin(np.where(candidates, util, np.inf)))  # the first of equals: lowest index
        open_[src] = False
        before = {src: state.watts(src)}
        delta = 0.0
        placed: list[int] = []
        for i in sorted(state.on[src], key=lambda i: (-item_size(p, i, two_d), i)):
            state.remove(i)
            placed.append(i)
            dst = best_host(state, i, two_d, active_only=True, exclude=src)
            if dst is None:
                break
            before.setdefault(dst, state.watts(dst))
            state.add(i, dst)
            item = p.items[i]
            delta += item.cost(dst) - item.cost(src)
        ok = all(state.assign[i] >= 0 for i in placed)
        extra = sum(p.items[i].moves(state.assign[i]) - p.items[i].moves(src) for i in placed) if ok else 0
        if ok:
            delta += sum(state.watts(h) - w for h, w in before.items())
        if not ok or delta >= -1e-9 or moves + extra > p.limit:
            for i in placed:
                if state.assign[i] >= 0:
                    state.remove(i)
                state.add(i, src)
        else:
            moves += extra


def _lower_peak(state: Loads) -> None:
    """Move one item at a time off the hottest host while the objective (peak CPU in watts-equivalent
    plus migration cost) falls; stops at a tie for the peak. Bounded by the number of items."""
    p = state.p
    n = len(p.hosts)
    moves = p.moves(state.assign)
    weight = p.settings.balance_w_per_pct * 100.0
    for _ in range(len(p.items)):
        ranked = sorted((h for h in range(n) if state.active(h)), key=lambda h: -state.util(h))
        if len(ranked) < 2:
            return
        hot = ranked[0]
        peak = state.util(hot)
        best: tuple[float, int, int] | None = None
        for i in sorted(state.on[hot]):
            item = p.items[i]
            if item.fixed is not None:
                continue
            hot_after = (state.cpu[hot] - item.cpu) / CPU_SCALE / p.hosts[hot].cpu_cores
            for dst in item.allowed:
                if dst == hot or not state.active(dst) or not state.fits(i, dst):
                    continue
                others = next((state.util(h) for h in ranked if h not in (hot, dst)), 0.0)
                dst_after = (state.cpu[dst] + item.cpu) / CPU_SCALE / p.hosts[dst].cpu_cores
                gain = weight * (peak - max(hot_after, dst_after, others)) - (item.cost(dst) - item.cost(hot))
                if gain > 1e-9 and (best is None or gain > best[0]):
                    best = (gain, i, dst)
        if best is None:
            return
        _, i, dst = best
        extra = p.items[i].moves(dst) - p.items[i].moves(hot)
        if moves + extra > p.limit:
            return
        state.remove(i)
        state.add(i, dst)
        moves += extra
