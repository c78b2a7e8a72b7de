"""Lower bounds: no placement can use fewer hosts or less energy, so they say how far from the best
possible a plan might be. Both relax the rules (a relaxation can only lower the optimum). Under the
joint peak model an item counts the CPU it surely adds to any host's peak (its least sample): valid,
and much weaker than under the sum model."""

from __future__ import annotations

from collections.abc import Sequence

from ortools.linear_solver import pywraplp

from advisor.core import Bounds
from advisor.optimize.figures import HOURS_PER_DAY
from advisor.optimize.power import hull_lines
from advisor.optimize.problem import CPU_SCALE, Problem


def lower_bounds(problem: Problem) -> Bounds:
    usable = [h for h, ok in enumerate(problem.usable) if ok]
    cpu = sum(problem.cpu_floor(i) for i in range(len(problem.items)))
    hosts_cpu = _hosts_needed([problem.cpu_cap[h] for h in usable], cpu)
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
    floors = [problem.cpu_floor(i) for i in range(len(problem.items))]
    solver.Add(solver.Sum(cpu_sum) == sum(floors))
    solver.Add(solver.Sum(mem_sum) == sum(i.mem for i in problem.items))
    solver.Add(
        solver.Sum(energy_sum)
        == sum(min(i.cpu50, c / CPU_SCALE) for i, c in zip(problem.items, floors, strict=True))
    )
    objective.SetMinimization()
    if solver.Solve() != pywraplp.Solver.OPTIMAL:
        return floor_w
    # GLOP's own tolerance could put the value a hair above the true LP optimum
    return max(floor_w, objective.Value() + constant - 1e-6 * (1.0 + abs(objective.Value())))


def energy_bound_within_w(problem: Problem, max_moves: int) -> float | None:
    """No placement that moves at most `max_moves` VMs draws less (None: none moves so few, or the LP
    failed). It shows what a migration budget allows: the plain bound is reached only by moving almost
    every VM."""
    return _budget_lp(problem, max_moves, charge_moves=False)


def objective_bound_w(problem: Problem) -> float | None:
    """Goal consolidate: no placement within the migration cap has a lower planning objective (energy
    plus migration cost, `Problem.objective`)."""
    return _budget_lp(problem, problem.limit, charge_moves=True)


def _budget_lp(problem: Problem, max_moves: int, charge_moves: bool) -> float | None:
    """The fluid bound with the items kept: each movable item leaves its host in a share s in [0, 1]
    (all of it when the host is off: s >= 1 - y), what leaves flows as divisible CPU, memory and P50 load
    to running hosts, and the VMs leaving count against the budget (and, charged, cost their migration
    cost times s); items that must move count what their cheapest allowed host costs."""
    solver = pywraplp.Solver.CreateSolver("GLOP")
    if solver is None:  # pragma: no cover - GLOP ships with every OR-Tools wheel
        return None
    inf = solver.infinity()
    home: dict[int, list[int]] = {}
    pool = [0.0, 0.0, 0.0]
    forced = 0
    constant = 0.0
    for i, item in enumerate(problem.items):
        h = item.home
        if h is not None and problem.usable[h] and h in item.allowed:
            home.setdefault(h, []).append(i)
        else:
            pool = [pool[0] + problem.cpu_floor(i), pool[1] + item.mem, pool[2] + item.cpu50]
            forced += min(item.moves(g) for g in item.allowed)
            constant += min(item.cost(g) for g in item.allowed) if charge_moves else 0.0
    if forced > max_moves:
        return None
    flows = [solver.Constraint(x, x) for x in pool]  # taken in - shed = what must move
    budget = solver.Constraint(-inf, max_moves - forced)
    objective = solver.Objective()
    for h, host in enumerate(problem.hosts):
        standby = host.power.standby_w
        constant += standby
        if not problem.usable[h]:
            continue
        items = home.get(h, [])
        must = any(problem.items[i].stays for i in items)
        y = solver.NumVar(1.0 if must else 0.0, 1.0, f"y{h}")
        take = [solver.NumVar(0.0, inf, f"in{d}_{h}") for d in range(3)]
        power = solver.NumVar(-inf, inf, f"p{h}")
        load = [0.0, 0.0, 0.0]
        caps = [solver.Constraint(-inf, 0.0), solver.Constraint(-inf, 0.0)]  # kept + taken in <= cap y
        lines = [(a, b / host.cpu_cores, solver.Constraint(-inf, 0.0)) for a, b in hull_lines(host.power)]
        for d in range(3):
            flows[d].SetCoefficient(take[d], 1.0)
        for d, (row, cap) in enumerate(zip(caps, (problem.cpu_cap[h], problem.mem_cap[h]), strict=True)):
            row.SetCoefficient(take[d], 1.0)
            row.SetCoefficient(y, -float(cap))
        for i in items:
            item = problem.items[i]
            size = (float(problem.cpu_floor(i)), float(item.mem), item.cpu50)
            load = [load[d] + size[d] for d in range(3)]
            if item.stays:
                continue
            shed = solver.NumVar(0.0, 1.0, f"s{i}")
            row = solver.Constraint(1.0, inf)  # s >= 1 - y
            row.SetCoefficient(shed, 1.0)
            row.SetCoefficient(y, 1.0)
            budget.SetCoefficient(shed, float(len(item.vms)))
            if charge_moves:
                objective.SetCoefficient(shed, item.cost(-1))  # every VM of the item leaves
            for d in range(3):
                flows[d].SetCoefficient(shed, -size[d])
            for d, row in enumerate(caps):
                row.SetCoefficient(shed, -size[d])
            for _, k, row in lines:
                row.SetCoefficient(shed, -k * size[2])
        for d, row in enumerate(caps):  # the items' shares moved to the left-hand side
            row.SetBounds(-inf, -load[d])
        for a, k, row in lines:  # power >= a y + k (p50 kept + taken in)
            row.SetCoefficient(y, a)
            row.SetCoefficient(take[2], k)
            row.SetCoefficient(power, -1.0)
            row.SetBounds(-inf, -k * load[2])
        objective.SetCoefficient(power, 1.0)
        objective.SetCoefficient(y, -standby)
    objective.SetMinimization()
    if solver.Solve() != pywraplp.Solver.OPTIMAL:
        return None
    return objective.Value() + constant - 1e-6 * (1.0 + abs(objective.Value()))
