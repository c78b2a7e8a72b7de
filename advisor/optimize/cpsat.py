"""The CP-SAT placement model, warm-started from the best heuristic.

Each item may only go to a few candidate hosts: where its VMs run now, where the hint puts it, and
`candidate_hosts` others ranked by how cheaply they take it in the hint's state (hosts it fits first,
then least power increase, or lowest resulting utilisation for goal balance). Under the joint peak model
(`plan.peak_model`) a host's CPU is the P95 of its VMs' summed history, not linear in them: the model
is not built and the heuristics and the host-emptying search plan alone. The objective is in
deci-watts: idle draw of running hosts, a linear (lower-convex-hull) dynamic draw from P50 CPU, and the
migration cost; goal balance swaps energy for the peak CPU utilisation (`plan.balance_w_per_pct`) and the
idle draw of woken hosts.

Small clusters are solved as one model. Past `FULL_MODEL_VARS` candidate pairs one model stops paying:
at 200 hosts / 2,000 VMs (19k Booleans) CP-SAT spent 5 s in presolve and found nothing better than the
hint in 20 s, because saving energy means emptying a host, i.e. moving all of its VMs at once, which
random neighbourhoods rarely do. There goal consolidate takes the host-emptying search's placement
(evacuate.py) as it is: repacking rounds over groups of hosts after it gained under 5 W in 10-20 s at
200 and 1,000 hosts, the running hosts being at 78-80% CPU. Goal balance runs the same model as a
large-neighbourhood search: each round frees the items of the hottest hosts, the coolest and a few
more, keeps every other item where the incumbent has it, and lets CP-SAT repack the freed items over
those hosts; a round's result is kept only if the real objective improves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from advisor.optimize.power import hull_lines
from advisor.optimize.problem import CPU_SCALE, Loads, Problem

UNIT = 10  # objective unit: deci-watts
SEED = 20240601
FULL_MODEL_VARS = 6000  # candidate (item, host) pairs up to which one model is solved
ROUND_HOSTS = 10  # hosts freed per neighbourhood round (tuned on bench/plan_scale.py)
SKIPPED = "skipped"  # the model was not built: the hint comes back as it is
ROUND_LIMIT_S = 0.4  # CP-SAT time per round: many small rounds beat a few long ones


@dataclass(frozen=True)
class CpSatResult:
    assign: tuple[int, ...] | None  # None: CP-SAT found no placement in time
    status: str  # "optimal", "feasible", "infeasible" or "unknown" (restricted model), or "skipped"
    restricted: bool  # some item could not use some allowed host (candidates or neighbourhoods)
    rounds: int = 1  # neighbourhood rounds (1: one full model)
    improved: int = 0  # rounds that improved the incumbent


def solve_cpsat(problem: Problem, hint: Sequence[int], time_limit_s: float, workers: int) -> CpSatResult:
    """Solve the placement; `hint` is an assignment (-1 for items the heuristics could not place).
    A complete hint is given on every variable; a feasible one (complete, within the migration cap)
    comes back unless CP-SAT beats it on the real objective."""
    deadline = time.perf_counter() + time_limit_s
    valid = all(h >= 0 for h in hint) and problem.moves(hint) <= problem.limit
    if problem.series is not None:  # the model is linear in per-VM CPU; a joint peak is not
        return CpSatResult(tuple(hint) if valid else None, SKIPPED, True, rounds=0)
    candidates, restricted = candidate_hosts(problem, hint)
    pairs = sum(len(c) for c, it in zip(candidates, problem.items, strict=True) if it.fixed is None)
    if pairs > FULL_MODEL_VARS and valid:
        if problem.goal == "consolidate":  # the host-emptying search has done it (see the module doc)
            return CpSatResult(tuple(hint), SKIPPED, True, rounds=0)
        return _neighbourhood_search(problem, hint, deadline, workers)
    built = _Model(problem, candidates, hint)
    status, assign = _solve(built, time_limit_s, workers)
    if assign is not None and valid and problem.objective(assign) >= problem.objective(hint):
        assign = tuple(hint)  # the model's linear power is an approximation: never trade down for it
    return CpSatResult(assign, status, restricted)


def _solve(built: _Model, time_limit_s: float, workers: int) -> tuple[str, tuple[int, ...] | None]:
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(time_limit_s, 0.01)
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = SEED
    status = solver.solve(built.model)
    names = {cp_model.OPTIMAL: "optimal", cp_model.FEASIBLE: "feasible", cp_model.INFEASIBLE: "infeasible"}
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return names.get(status, "unknown"), None
    assign = list(built.frozen)
    for (i, h), v in built.x.items():
        if solver.value(v):
            assign[i] = h
    return names[status], tuple(assign)


def _neighbourhood_search(
    problem: Problem, hint: Sequence[int], deadline: float, workers: int
) -> CpSatResult:
    rng = np.random.default_rng(SEED)
    best = tuple(hint)
    best_obj = problem.objective(best)
    rounds = improved = 0
    while (left := deadline - time.perf_counter()) > 0.05:
        hosts = _neighbourhood(problem, best, rng)
        frozen = [
            h if h not in hosts or problem.items[i].fixed is not None else -1 for i, h in enumerate(best)
        ]
        candidates = [
            sorted(hosts & it.allowed) if frozen[i] < 0 else [frozen[i]] for i, it in enumerate(problem.items)
        ]
        _, assign = _solve(_Model(problem, candidates, best, frozen), min(left, ROUND_LIMIT_S), workers)
        rounds += 1
        if assign is not None:
            obj = problem.objective(assign)
            if obj < best_obj - 1e-6:
                best, best_obj = assign, obj
                improved += 1
    return CpSatResult(best, "feasible", True, rounds, improved)


def _neighbourhood(problem: Problem, assign: Sequence[int], rng: np.random.Generator) -> set[int]:
    """Goal balance: the hottest hosts, the coolest and a few more drawn at random, so that rounds
    differ."""
    state = Loads(problem, assign)
    active = [h for h in range(len(problem.hosts)) if state.active(h) and problem.usable[h]]
    if len(active) <= ROUND_HOSTS:
        return set(active)
    by_util = sorted(active, key=lambda h: (state.util2d(h), h))
    hot = by_util[-4:]
    rest = by_util[: len(by_util) - 4]
    cool = rest[: ROUND_HOSTS // 2]
    pool = rest[ROUND_HOSTS // 2 :]
    extra = rng.choice(pool, size=max(0, min(len(pool), ROUND_HOSTS - len(hot) - len(cool))), replace=False)
    return {*hot, *cool, *map(int, extra)}


class _Model:
    """x[i, h]: item i on host h; y[h]: host h runs (absent when it must run anyway)."""

    def __init__(
        self,
        problem: Problem,
        candidates: Sequence[Sequence[int]],
        hint: Sequence[int],
        frozen: Sequence[int] | None = None,
    ) -> None:
        """`frozen`: the host of each item held in place (-1: free); by default the unmovable ones."""
        self.p = problem
        self.frozen = tuple(
            frozen if frozen is not None else [-1 if it.fixed is None else it.fixed for it in problem.items]
        )
        self.model = cp_model.CpModel()
        self.hint = Loads(problem, hint)
        self.hints: dict[cp_model.IntVar, int] = {}
        self.terms: list[cp_model.IntVar] = []
        self.coeffs: list[int] = []
        n = len(problem.hosts)
        self.x: dict[tuple[int, int], cp_model.IntVar] = {}
        self.on_host: list[list[tuple[int, cp_model.IntVar]]] = [[] for _ in range(n)]
        self.fixed_on: list[list[int]] = [[] for _ in range(n)]
        self._placement(candidates, hint)
        self.y: dict[int, cp_model.IntVar] = {}
        for h in self.hosts():
            if not (self.fixed_on[h] or (problem.goal == "balance" and problem.up[h])):
                self.y[h] = self.model.new_bool_var(f"y{h}")
                self.hints[self.y[h]] = int(self.hint.active(h))
                for _, v in self.on_host[h]:
                    self.model.add_implication(v, self.y[h])
        self._capacity()
        self._anti_affinity()
        self._migration_cap()
        if problem.goal == "balance":
            self._balance_objective()
        else:
            self._energy_objective()
        self.model.minimize(cp_model.LinearExpr.weighted_sum(self.terms, self.coeffs))
        if all(h >= 0 for h in hint):
            for v, value in self.hints.items():
                self.model.add_hint(v, value)
        else:  # a partial hint: only what the heuristics did place
            for (i, h), v in self.x.items():
                if hint[i] >= 0:
                    self.model.add_hint(v, int(hint[i] == h))

    def hosts(self) -> list[int]:
        return [h for h in range(len(self.p.hosts)) if self.on_host[h]]

    def running(self, h: int, coeff: int) -> cp_model.LinearExpr:
        """`coeff` if host h runs, else 0."""
        if h in self.y:
            return cp_model.LinearExpr.term(self.y[h], coeff)
        return cp_model.LinearExpr.constant(coeff)

    def cost(self, var: cp_model.IntVar, deci_watts: float) -> None:
        if round(deci_watts):
            self.terms.append(var)
            self.coeffs.append(round(deci_watts))

    def _placement(self, candidates: Sequence[Sequence[int]], hint: Sequence[int]) -> None:
        for i, item in enumerate(self.p.items):
            if self.frozen[i] >= 0:
                self.fixed_on[self.frozen[i]].append(i)
                continue
            row = []
            for h in candidates[i]:
                v = self.model.new_bool_var(f"x{i}_{h}")
                self.x[i, h] = v
                self.on_host[h].append((i, v))
                self.hints[v] = int(hint[i] == h)
                self.cost(v, UNIT * item.cost(h))
                row.append(v)
            self.model.add_exactly_one(row)

    def _sum(self, h: int, weight: Sequence[int] | Mapping[int, int]) -> cp_model.LinearExpr:
        pairs = self.on_host[h]
        return cp_model.LinearExpr.weighted_sum([v for _, v in pairs], [weight[i] for i, _ in pairs])

    def _capacity(self) -> None:
        items = self.p.items
        cpu = [it.cpu for it in items]
        mem = [it.mem for it in items]
        for h in self.hosts():
            fixed_cpu = sum(cpu[i] for i in self.fixed_on[h])
            fixed_mem = sum(mem[i] for i in self.fixed_on[h])
            self.model.add(self._sum(h, cpu) + fixed_cpu <= self.running(h, self.p.cpu_cap[h]))
            self.model.add(self._sum(h, mem) + fixed_mem <= self.running(h, self.p.mem_cap[h]))

    def _anti_affinity(self) -> None:
        for group in self.p.anti_groups:
            for h in self.hosts():
                vs = [self.x[i, h] for i in group if (i, h) in self.x]
                fixed = sum(1 for i in group if self.frozen[i] == h)
                if len(vs) + fixed > 1:
                    self.model.add(sum(vs) + fixed <= 1)

    def _migration_cap(self) -> None:
        items = self.p.items
        pairs = [(v, items[i].moves(h)) for (i, h), v in self.x.items() if items[i].moves(h)]
        fixed = sum(it.moves(h) for it, h in zip(items, self.frozen, strict=True) if h >= 0)
        if pairs:
            moved = cp_model.LinearExpr.weighted_sum([v for v, _ in pairs], [c for _, c in pairs])
            self.model.add(moved <= self.p.limit - fixed)

    def _energy_objective(self) -> None:
        """Idle over standby draw through y, dynamic draw per item; a curved power model gets an
        epigraph variable above each line of its lower convex hull."""
        items = self.p.items
        for h in self.hosts():
            host = self.p.hosts[h]
            standby = host.power.standby_w
            lines = hull_lines(host.power)
            if len(lines) == 1:
                a, b = lines[0]
                if h in self.y:
                    self.cost(self.y[h], UNIT * (a - standby))
                for i, v in self.on_host[h]:
                    self.cost(v, UNIT * b / host.cpu_cores * items[i].cpu50)
                continue
            top = 2 * math.ceil(UNIT * host.power.max_w) + len(self.on_host[h]) + 10
            p = self.model.new_int_var(0, top, f"p{h}")
            p_hint = 0
            for a, b in lines:
                weight = {
                    i: round(UNIT * b / host.cpu_cores * items[i].cpu50)
                    for i in (*self.fixed_on[h], *(i for i, _ in self.on_host[h]), *self.hint.on[h])
                }
                fixed = sum(weight[i] for i in self.fixed_on[h])
                self.model.add(p >= self.running(h, round(UNIT * a)) + self._sum(h, weight) + fixed)
                if self.hint.active(h):
                    p_hint = max(p_hint, round(UNIT * a) + sum(weight[i] for i in self.hint.on[h]))
            self.hints[p] = min(top, p_hint)
            self.terms.append(p)
            self.coeffs.append(1)
            if h in self.y:
                self.cost(self.y[h], -UNIT * standby)

    def _balance_objective(self) -> None:
        """Peak CPU utilisation in per-mille (rounded up) times its weight, plus woken hosts' idle draw."""
        items = self.p.items
        outside = [
            self.hint.util(h) for h in range(len(self.p.hosts)) if not self.on_host[h] and self.hint.active(h)
        ]
        floor = min(1000, math.ceil(max(outside, default=0.0) * 1000 - 1e-9))
        peak = self.model.new_int_var(floor, 1000, "peak")
        weight = [it.cpu * 1000 for it in items]
        for h in self.hosts():
            host = self.p.hosts[h]
            fixed = sum(weight[i] for i in self.fixed_on[h])
            self.model.add(self._sum(h, weight) + fixed <= peak * round(host.cpu_cores * CPU_SCALE))
            if h in self.y and not self.p.up[h]:
                self.cost(self.y[h], UNIT * (host.power.idle_w - host.power.standby_w))
        self.cost(peak, UNIT * self.p.settings.balance_w_per_pct * 100 / 1000)
        self.hints[peak] = min(1000, math.ceil(self.hint.peak_util() * 1000 - 1e-9))


def candidate_hosts(problem: Problem, hint: Sequence[int]) -> tuple[list[list[int]], bool]:
    """Per item: current hosts, hint host, and the best `candidate_hosts` others (see module doc);
    and whether any list was cut short."""
    k = problem.settings.candidate_hosts
    n = len(problem.hosts)
    state = Loads(problem, hint)
    free_cpu = np.array([problem.cpu_cap[h] - state.cpu[h] for h in range(n)], dtype=float)
    free_mem = np.array([problem.mem_cap[h] - state.mem[h] for h in range(n)], dtype=float)
    cores = np.array([h.cpu_cores for h in problem.hosts])
    slope = np.array([(h.power.max_w - h.power.idle_w) / h.cpu_cores for h in problem.hosts])
    wake = np.array(
        [
            0.0 if state.active(h) else h_.power.idle_w - h_.power.standby_w
            for h, h_ in enumerate(problem.hosts)
        ]
    )
    used = np.array(state.cpu, dtype=float)
    out: list[list[int]] = []
    restricted = False
    for i, item in enumerate(problem.items):
        if item.fixed is not None:
            out.append([item.fixed])
            continue
        must = {h for h in item.vm_hosts if h in item.allowed} | ({hint[i]} if hint[i] >= 0 else set())
        others = np.array(sorted(item.allowed - must), dtype=int)
        if len(others) > k:
            restricted = True
            fits = (free_cpu[others] >= item.cpu) & (free_mem[others] >= item.mem)
            if problem.goal == "balance":
                score = (used[others] + item.cpu) / cores[others] / CPU_SCALE + wake[others]
            else:
                score = wake[others] + slope[others] * item.cpu50
            jitter = ((others * 7919 + i * 104729) % 997) * 1e-7  # spreads ties over hosts
            score = score + jitter + np.where(fits, 0.0, 1e9)
            others = others[np.argsort(score, kind="stable")[:k]]
        out.append(sorted(must | {int(h) for h in others}))
    return out, restricted
