"""Host-emptying search (goal consolidate): energy is saved by emptying whole hosts, so the moves this
search makes are whole-host evacuations, in the order that saves the most per migration.

It starts from the current placement with the forced moves made (maintenance, rules, overload: placed
where power rises least). A fluid plan says which hosts to empty: an LP in which every host keeps its
VMs or sheds them in proportion, running hosts take divisible load within headroom, power follows each
curve's convex hull and each VM moved costs its migration cost. That LP keeps whole host types on and
others off (at 1,000 hosts its answer is integral but for one or two hosts), which a greedy ranking
by watts per migration misses: it empties lightly loaded efficient hosts and keeps the inefficient ones.

Hosts the fluid plan empties are tried first, then the others; within each group by the watts their
evacuation would save (draw over standby, less the dynamic draw their VMs add at a receiving host's
marginal rate, less the migrations' cost) per VM moved. A try places the host's items, largest first,
on the running host where power rises least (PABFD-2D's rule), and is kept only when the exact objective
(real power curves plus migration cost) falls and the migration cap holds. Then exchanges: an emptied
host takes its own items back and a running host cheaper to empty is emptied instead, or two running
hosts (one host fewer), kept when the objective falls. Which host to empty is otherwise never
revisited, and once the running hosts are full (78-80% CPU) no single host can be emptied into them;
on the 50-host benchmark seeds 4-9, 12-14 and 21 the exchanges emptied a further host on 3 of 10 for
0.4-1.1 s of CPU (0.4-0.9 s more at 200 and 1,000 hosts, where they gained 0-26 W-equivalent).
Last, moved items whose own host still runs go back home where that lowers the objective (one
migration fewer). The search may also start from a complete plan (plan.py starts it from the
candidate that draws least power when the objective prefers another).

Measured and dropped: when the greedy try fails, a CP-SAT sub-model asking "can this host be emptied
into these hosts" (twelve receivers chosen for free CPU and memory complementing the host's load, their
own VMs free to be rearranged among them). On the benchmark instance at 200 and 1,000 hosts it emptied
0-5 more hosts and left the objective no better (by up to 40 W worse, the extra rearranging moves
costing more than they saved) for 1-4 s more: once the search is done the running hosts sit at 78-80%
CPU, so no rearrangement frees a host. CP-SAT repacking rounds over host groups (cpsat.py) after the
search gained under 5 W in 10-20 s.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ortools.linear_solver import pywraplp

from advisor.optimize.heuristics import best_host, item_size
from advisor.optimize.power import hull_lines
from advisor.optimize.problem import Loads, Problem

PASSES = 3  # rounds of ranking; a host that failed twice is not tried again
SWAP_TRIES = 8  # running hosts tried in exchange for one emptied host
PAIR_HOSTS = 16  # emptied hosts tried in exchange for two running ones (28 pairs each)


@dataclass(frozen=True)
class EvacuationResult:
    assign: tuple[int, ...]
    tried: int  # evacuations attempted
    emptied: int  # evacuations kept
    returned: int  # items sent back to their own host


def evacuate(
    problem: Problem, hint: Sequence[int] | None, deadline: float, start: Sequence[int] | None = None
) -> EvacuationResult | None:
    """A complete assignment within the migration cap, from the forced moves (or from `hint`, complete
    and within the cap, when they cannot all be placed greedily) by whole-host evacuations; None when
    there is neither. `start` (complete, within the cap): search from that plan instead."""
    if start is None:
        start = forced_start(problem)
    if start is None:
        if hint is None:
            return None
        start = tuple(hint)
    state = Loads(problem, start)
    search = _Search(state, fluid_plan(problem))
    for _ in range(PASSES):
        if not search.round(deadline):
            break
    search.swap_round(deadline)
    returned = search.send_home(deadline)
    return EvacuationResult(tuple(state.assign), search.tried, search.emptied, returned)


def forced_start(problem: Problem) -> tuple[int, ...] | None:
    """Every item where it is, but those that must move, placed where power rises least (PABFD-2D's
    first phase); None if one of them fits nowhere."""
    state = Loads(problem, problem.start)
    pending = [i for i, h in enumerate(problem.start) if h < 0]
    for i in sorted(pending, key=lambda i: (-item_size(problem, i, True), i)):
        h = best_host(state, i, True, active_only=False)
        if h is None:
            return None
        state.add(i, h)
    return tuple(state.assign)


def fluid_plan(problem: Problem) -> np.ndarray:
    """Per host, how much of it the fluid plan keeps running (1: on, 0: emptied); see the module doc.
    Not a bound (shedding in proportion overstates the moves a partial shed needs), a direction."""
    n = len(problem.hosts)
    keep = np.ones(n)
    solver = pywraplp.Solver.CreateSolver("GLOP")
    if solver is None:  # pragma: no cover - GLOP ships with every OR-Tools wheel
        return keep
    inf = solver.infinity()
    state = Loads(problem, problem.start)
    pool = [0.0, 0.0, 0.0]
    for i, h in enumerate(problem.start):
        if h < 0:
            item = problem.items[i]
            pool = [pool[0] + item.cpu, pool[1] + item.mem, pool[2] + item.cpu50]
    flows = [solver.Constraint(x, x) for x in pool]  # what runs hosts take in = what is shed + forced
    objective = solver.Objective()
    on: dict[int, pywraplp.Variable] = {}
    for h, host in enumerate(problem.hosts):
        if not problem.usable[h]:
            continue
        must = any(problem.items[i].stays for i in state.on[h])
        load = (float(state.cpu[h]), float(state.mem[h]), float(state.p50[h]))
        y = solver.NumVar(1.0 if must else 0.0, 1.0, f"y{h}")
        z = solver.NumVar(0.0, 0.0 if must else 1.0, f"z{h}")  # share of its load shed
        take = [solver.NumVar(0.0, inf, f"in{d}_{h}") for d in range(3)]
        power = solver.NumVar(-inf, inf, f"p{h}")
        row = solver.Constraint(1.0, inf)  # z >= 1 - y: a host off sheds everything
        row.SetCoefficient(z, 1.0)
        row.SetCoefficient(y, 1.0)
        for d in range(3):
            flows[d].SetCoefficient(take[d], 1.0)
            flows[d].SetCoefficient(z, -load[d])
        for d, cap in ((0, problem.cpu_cap[h]), (1, problem.mem_cap[h])):
            row = solver.Constraint(-inf, -load[d])  # load (1 - z) + in <= cap y
            row.SetCoefficient(z, -load[d])
            row.SetCoefficient(take[d], 1.0)
            row.SetCoefficient(y, -float(cap))
        for a, b in hull_lines(host.power):
            k = b / host.cpu_cores
            row = solver.Constraint(k * load[2], inf)  # power >= a y + k (p50 (1 - z) + in)
            row.SetCoefficient(power, 1.0)
            row.SetCoefficient(y, -a)
            row.SetCoefficient(take[2], -k)
            row.SetCoefficient(z, k * load[2])
        cost = sum(
            c
            for i in state.on[h]
            for vm_host, c in zip(problem.items[i].vm_hosts, problem.items[i].vm_cost, strict=True)
            if vm_host == h
        )
        objective.SetCoefficient(power, 1.0)
        objective.SetCoefficient(y, -host.power.standby_w)
        objective.SetCoefficient(z, cost)
        on[h] = y
    objective.SetMinimization()
    if solver.Solve() in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        for h, y in on.items():
            keep[h] = y.solution_value()
    return keep


class _Search:
    def __init__(self, state: Loads, keep: np.ndarray) -> None:
        self.s = state
        self.p = state.p
        self.keep = keep
        p = self.p
        n = len(p.hosts)
        self.moves = p.moves(state.assign)
        self.locked = np.zeros(n, dtype=bool)  # hosts holding an item that may only stay
        self.locked[[it.home for it in p.items if it.stays and it.home is not None]] = True
        self.failures = np.zeros(n, dtype=np.int64)
        self.tried = self.emptied = 0

    def round(self, deadline: float) -> bool:
        """One pass over the ranked hosts; whether any host was emptied."""
        emptied = self.emptied
        for src in self.ranked():
            if time.perf_counter() > deadline:
                break
            if self.s.count[src] == 0 or self.failures[src] >= 2:
                continue
            self.tried += 1
            if self.try_greedy(src):
                self.emptied += 1
            else:
                self.failures[src] += 1
        return self.emptied > emptied

    def ranked(self) -> list[int]:
        """Running, evacuable hosts whose evacuation should save watts, by saving per migration."""
        s, p = self.s, self.p
        a = s.a
        candidates = np.flatnonzero((s.count > 0) & ~self.locked & (self.failures < 2))
        if not len(candidates):
            return []
        saved = s.watts_all()[candidates] - a.power.standby[candidates]
        slope = self.receiver_slope()
        cost = np.zeros(len(candidates))
        moves = np.zeros(len(candidates))
        for k, h in enumerate(candidates):
            for i in s.on[h]:
                item = p.items[i]
                for host, c in zip(item.vm_hosts, item.vm_cost, strict=True):
                    if host == h:  # a VM still on its own host: emptying h moves it
                        cost[k] += c
                        moves[k] += 1
        net = saved - slope * s.p50[candidates] - cost
        worth = net > 0
        hosts = candidates[worth]
        score = net[worth] / np.maximum(moves[worth], 0.5)
        return [int(h) for h in hosts[np.lexsort((hosts, -score, self.keep[hosts] > 0.5))]]

    def receiver_slope(self) -> float:
        """Watts per P50 core that load adds on a typical running host with room (the lower quartile)."""
        s = self.s
        a = s.a
        room = (s.count > 0) & (s.cpu < 0.9 * a.cpu_cap)
        if not room.any():
            return 0.0
        hosts = np.flatnonzero(room)
        step = 1.0
        rise = a.power.at_p50(s.p50 + step)[hosts] - a.power.at_p50(s.p50)[hosts]
        return float(np.percentile(rise / step, 25))

    def try_greedy(self, src: int) -> bool:
        s, p = self.s, self.p
        before = {src: s.watts(src)}
        moved: list[tuple[int, int]] = []
        for i in sorted(s.on[src], key=lambda i: (-item_size(p, i, True), i)):
            s.remove(i)
            dst = best_host(s, i, True, active_only=True, exclude=src)
            if dst is None:
                s.add(i, src)
                self.undo(moved, src)
                return False
            before.setdefault(dst, s.watts(dst))
            s.add(i, dst)
            moved.append((i, dst))
        return self.keep_or_undo(before, moved, src)

    def keep_or_undo(self, before: dict[int, float], moved: list[tuple[int, int]], src: int) -> bool:
        p = self.p
        extra = sum(p.items[i].moves(dst) - p.items[i].moves(src) for i, dst in moved)
        delta = sum(self.s.watts(h) - w for h, w in before.items())
        delta += sum(p.items[i].cost(dst) - p.items[i].cost(src) for i, dst in moved)
        if delta < -1e-6 and self.moves + extra <= p.limit:
            self.moves += extra
            return True
        self.undo(moved, src)
        return False

    def undo(self, moved: list[tuple[int, int]], src: int) -> None:
        for i, _ in moved:
            self.s.remove(i)
            self.s.add(i, src)

    def swap_round(self, deadline: float) -> int:
        """Exchange an emptied host for running ones: the emptied host's own items go back to it and a
        running host is emptied instead, or two (one host fewer), kept when the objective falls. The
        greedy passes only ever empty hosts, so an early choice of which host to empty is never
        revisited otherwise, and once the running hosts are full no single host can be emptied into
        them. Per emptied host, by the migration cost its return would save: the `SWAP_TRIES` running
        hosts cheapest to empty that cost less, then (for the first `PAIR_HOSTS` emptied hosts) the
        pairs among the `SWAP_TRIES` running hosts cheapest to empty."""
        s = self.s
        swapped = 0
        back, stay = self.back_cost(), self.stay_cost()
        for k, e in enumerate(self.swap_order(back)):
            running = np.flatnonzero((s.count > 0) & ~self.locked)
            ranked = running[np.lexsort((running, stay[running]))]
            singles = [(int(r),) for r in ranked[stay[ranked] < back[e]][:SWAP_TRIES]]
            pairs = list(itertools.combinations(map(int, ranked[:SWAP_TRIES]), 2)) if k < PAIR_HOSTS else []
            for rs in singles + pairs:
                if time.perf_counter() > deadline:
                    return swapped
                if self.try_swap(e, *rs):
                    swapped += 1
                    back, stay = self.back_cost(), self.stay_cost()
                    break
        return swapped

    def swap_order(self, back: np.ndarray) -> list[int]:
        """Emptied usable hosts that were not overloaded, those whose VMs cost most to move first."""
        s, p = self.s, self.p
        off = np.flatnonzero((s.count == 0) & s.a.usable & (back > 0))
        off = np.array([h for h in off if h not in p.overloaded], dtype=np.int64)
        return [int(h) for h in off[np.lexsort((off, -back[off]))]]

    def back_cost(self) -> np.ndarray:
        """Per host, the migration cost of its own VMs that run elsewhere."""
        out = np.zeros(len(self.p.hosts))
        for i, item in enumerate(self.p.items):
            where = self.s.assign[i]
            for x, c in zip(item.vm_hosts, item.vm_cost, strict=True):
                if x != where:
                    out[x] += c
        return out

    def stay_cost(self) -> np.ndarray:
        """Per host, the migration cost of emptying it: its own VMs still on it."""
        out = np.zeros(len(self.p.hosts))
        for i, item in enumerate(self.p.items):
            where = self.s.assign[i]
            for x, c in zip(item.vm_hosts, item.vm_cost, strict=True):
                if x == where:
                    out[x] += c
        return out

    def try_swap(self, e: int, *rs: int) -> bool:
        s, p = self.s, self.p
        before: dict[int, float] = {h: s.watts(h) for h in (e, *rs)}
        moved: list[tuple[int, int]] = []  # (item, where it was), in order, for undoing
        origin: dict[int, int] = {}  # item -> where it was before the exchange
        back = [i for i, item in enumerate(p.items) if item.home == e and s.assign[i] != e]
        ok = True
        for i in back:
            src = s.assign[i]
            before.setdefault(src, s.watts(src))
            s.remove(i)
            if not s.fits(i, e):
                s.add(i, src)
                ok = False
                break
            s.add(i, e)
            moved.append((i, src))
            origin.setdefault(i, src)
        for r in rs:
            if not ok:
                break
            for i in sorted(s.on[r], key=lambda i: (-item_size(p, i, True), i)):
                s.remove(i)
                dst = best_host(s, i, True, active_only=True, exclude=r)
                if dst is None:
                    s.add(i, r)
                    ok = False
                    break
                before.setdefault(dst, s.watts(dst))
                s.add(i, dst)
                moved.append((i, r))
                origin.setdefault(i, r)
        if ok:
            extra = sum(p.items[i].moves(s.assign[i]) - p.items[i].moves(src) for i, src in origin.items())
            delta = sum(s.watts(h) - w for h, w in before.items())
            delta += sum(p.items[i].cost(s.assign[i]) - p.items[i].cost(src) for i, src in origin.items())
            if delta < -1e-6 and self.moves + extra <= p.limit:
                self.moves += extra
                return True
        for i, src in reversed(moved):
            s.remove(i)
            s.add(i, src)
        return False

    def send_home(self, deadline: float) -> int:
        """Moved items whose own host still runs go back where that lowers the objective."""
        s, p = self.s, self.p
        returned = 0
        for i, item in enumerate(p.items):
            if time.perf_counter() > deadline:
                break
            home, cur = item.home, s.assign[i]
            if home is None or cur == home or not s.active(home) or not s.fits(i, home):
                continue
            before = s.watts(cur) + s.watts(home)
            s.remove(i)
            s.add(i, home)
            delta = s.watts(cur) + s.watts(home) - before + item.cost(home) - item.cost(cur)
            if delta < -1e-6:
                self.moves += item.moves(home) - item.moves(cur)
                returned += 1
            else:
                s.remove(i)
                s.add(i, cur)
        return returned
