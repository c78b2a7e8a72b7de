"""Lower bounds: no placement can use fewer hosts or less energy, so they say how far from the best
possible a plan might be. Both relax the rules (a relaxation can only lower the optimum)."""

from __future__ import annotations

from collections.abc import Sequence

from ortools.linear_solver import pywraplp

from advisor.core import Bounds
from advisor.optimize.figures import HOURS_PER_DAY
from advisor.optimize.power import hull_lines
from advisor.optimize.problem import CPU_SCALE, Problem


def lower_bounds(problem: Problem) -> Bounds:
    usable = [h for h, ok in enumerate(problem.usable) if ok]
    hosts_cpu = _hosts_needed([problem.cpu_cap[h] for h in usable], sum(i.cpu for i in problem.items))
    hosts_mem = _hosts_needed([problem.mem_cap[h] for h in usable], sum(i.mem for i in problem.items))
    return Bounds(hosts_cpu, hosts_mem, energy_bound_w(problem) * HOURS_PER_DAY / 1000.0)


def _hosts_needed(caps: Sequence[int], total: int) -> int:
    """Fewest hosts whose capacities could hold `total`: the largest first. If even all of them
    cannot, all of them (the plan is then infeasible and the bound moot)."""
    covered = 0
    for k, cap in enumerate(sorted(caps, reverse=True)):
        if covered >= total:
            return k
        covered += cap
    return len(caps)


def energy_bound_w(problem: Problem) -> float:
    """Fluid relaxation solved by GLOP: demand is divisible and aggregated (CPU P95, memory and energy
    load flow to hosts independently), hosts may be partly on (y in [0, 1]) and power is the lower
    convex hull of each curve. The energy load of an item is min(P50, P95) so that it never exceeds the
    capacity it rides on; both only lower the bound. Hosts that must run (unmovable VMs on them; every
    up host when the goal is balance) are fixed on."""
    hosts = problem.hosts
    floor_w = sum(min(h.power.standby_w, h.power.idle_w) for h in hosts)
    solver = pywraplp.Solver.CreateSolver("GLOP")
    if solver is None:  # pragma: no cover - GLOP ships with every OR-Tools wheel
        return floor_w
    must_run = {i.fixed for i in problem.items if i.fixed is not None}
    if problem.goal == "balance":
        must_run |= {h for h, up in enumerate(problem.up) if up and problem.usable[h]}
    cpu_sum, mem_sum, energy_sum = [], [], []
    objective = solver.Objective()
    constant = 0.0
    for h, host in enumerate(hosts):
        standby = host.power.standby_w
        if not problem.usable[h]:
            constant += standby
            continue
        y = solver.NumVar(1.0 if h in must_run else 0.0, 1.0, f"y{h}")
        c = solver.NumVar(0.0, solver.infinity(), f"c{h}")
        m = solver.NumVar(0.0, solver.infinity(), f"m{h}")
        e = solver.NumVar(0.0, solver.infinity(), f"e{h}")
        p = solver.NumVar(-solver.infinity(), solver.infinity(), f"p{h}")
        solver.Add(c <= problem.cpu_cap[h] * y)
        solver.Add(m <= problem.mem_cap[h] * y)
        solver.Add(e * CPU_SCALE <= c)
        for a, b in hull_lines(host.power):
            solver.Add(p >= a * y + (b / host.cpu_cores) * e)
        objective.SetCoefficient(p, 1.0)
        objective.SetCoefficient(y, -standby)
        constant += standby
        cpu_sum.append(c)
        mem_sum.append(m)
        energy_sum.append(e)
    if not cpu_sum:
        return constant
    solver.Add(solver.Sum(cpu_sum) == sum(i.cpu for i in problem.items))
    solver.Add(solver.Sum(mem_sum) == sum(i.mem for i in problem.items))
    solver.Add(solver.Sum(energy_sum) == sum(min(i.cpu50, i.cpu / CPU_SCALE) for i in problem.items))
    objective.SetMinimization()
    if solver.Solve() != pywraplp.Solver.OPTIMAL:
        return floor_w
    # GLOP's own tolerance could put the value a hair above the true LP optimum
    return max(floor_w, objective.Value() + constant - 1e-6 * (1.0 + abs(objective.Value())))
