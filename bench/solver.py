"""Plan quality and speed: the optimizer issue's instance through FFD, PABFD, PABFD-2D and the advisor's
planner (default settings), side by side. Each approach runs in its own forked process, so its peak RSS
is its own (the instance, built before the fork, is included); `cpu_s` is that process's CPU time, a
steadier figure than `wall_s` on a shared machine.

    .venv/bin/python bench/solver.py --hosts 200 --vms 2000 --seed 1 --json
    .venv/bin/python bench/solver.py --hosts 1000 --vms 10000 --seed 1 --json --sequencing

Beyond the issue's fields each approach has `objective` (the planner's: watts plus migration cost) and
`energy_lb_within_w`, the LP energy bound of any plan moving at most as many VMs as it does; the instance
has `objective_lb`, the bound of the planning objective. Without --json it prints a table. --sequencing
adds the wave sequencer alone on the PABFD-2D and FFD targets (the latter moves nearly every VM: the
worst case). --peak-model joint adds `advisor_joint`, the planner under `plan.peak_model = "joint"` on a
synthetic week of CPU history (bench/instances.py: random_history), and for every approach how many
hosts go over headroom at their P95 on the held-out eighth day (`future_over_headroom`, the worst
host's P95 utilisation `future_max_util`) and the share of running host-steps above 100% CPU that day
(`future_overload_share`): what the tighter packing risks.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from instances import GIB, random_cluster, random_history

from advisor.config import PlanSettings
from advisor.core import Cluster, Forecast
from advisor.execute import dry_run
from advisor.invariants import placement_violations
from advisor.optimize import plan_cluster
from advisor.optimize.bounds import energy_bound_within_w, lower_bounds, objective_bound_w
from advisor.optimize.demand import JointHistory, demand_of, peak_of, scaled_history
from advisor.optimize.figures import active_after, active_before, placement_figures
from advisor.optimize.heuristics import ffd, pabfd, pabfd2d
from advisor.optimize.problem import build_problem
from advisor.optimize.sequencer import sequence

HEURISTICS = {"ffd": ffd, "pabfd": pabfd, "pabfd2d": pabfd2d}
SETTINGS = PlanSettings()
JOINT = PlanSettings(peak_model="joint")
HISTORY_DAYS, HISTORY_STEP_S = 7, 900  # a week at 15 minutes, then the held-out day


def _figures(
    cluster: Cluster,
    forecast: Forecast,
    target: dict[str, str],
    checked: PlanSettings = SETTINGS,
    history: JointHistory | None = None,
) -> dict[str, Any]:
    """Figures of a target placement; its violations judged by `checked`'s peak model (`history`)."""
    demand = demand_of(cluster, forecast)
    problem = build_problem(cluster, forecast, SETTINGS)
    index = {h.name: k for k, h in enumerate(cluster.hosts)}
    assign = [index[target[item.vms[0]]] for item in problem.items]
    fig = placement_figures(cluster, demand, target, active_after(cluster, target, SETTINGS.goal), SETTINGS)
    moved = [v for v in cluster.vms if target[v.name] != v.host]
    return {
        "hosts_active": fig.active_hosts,
        "energy_w": round(fig.energy_kwh_per_day * 1000 / 24, 1),
        "migrations": len(moved),
        "mem_moved_gib": round(sum(v.mem_mib for v in moved) / GIB, 1),
        "max_cpu_util": round(fig.peak_cpu_util, 4),
        "violations": len(placement_violations(cluster, demand, target, checked, history)),
        "objective": round(problem.objective(assign), 1),
    }


def run_heuristic(name: str, cluster: Cluster, forecast: Forecast) -> dict[str, Any]:
    t, cpu = time.perf_counter(), time.process_time()
    problem = build_problem(cluster, forecast, SETTINGS)
    result = HEURISTICS[name](problem)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    out = _figures(cluster, forecast, problem.placement(result.assign))
    out |= {"complete": result.complete, "within_cap": problem.moves(result.assign) <= problem.limit}
    return out | {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "_placement": problem.placement(result.assign),
    }


def run_advisor(cluster: Cluster, forecast: Forecast, history: JointHistory | None = None) -> dict[str, Any]:
    """The planner with default settings, or with the joint peak model when given a history; its
    violations are the target placement's and the dry run's of every wave, by the plan's peak model."""
    settings = SETTINGS if history is None else JOINT
    t, cpu = time.perf_counter(), time.process_time()
    plan = plan_cluster(cluster, forecast, settings, history=history)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    out = _figures(cluster, forecast, dict(plan.placement), settings, history)
    out["violations"] += len(dry_run(cluster, forecast, plan, settings, history).violations)
    if history is not None:
        out["max_cpu_util"] = round(plan.after.peak_cpu_util, 4)
    out |= {"solver": plan.solver, "status": plan.status.value, "waves": len(plan.waves)}
    return out | {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "_placement": dict(plan.placement)}


def future_figures(
    cluster: Cluster, placement: dict[str, str], names: list[str], day: np.ndarray
) -> dict[str, Any]:
    """Hosts over CPU headroom at their P95 over the held-out day, and the worst host's P95 utilisation."""
    row = {vm: k for k, vm in enumerate(names)}
    load = {h.name: np.zeros(day.shape[1]) for h in cluster.hosts}
    for vm, host in placement.items():
        load[host] += day[row[vm]]
    util = {h.name: float(peak_of(load[h.name])) / h.cpu_cores for h in cluster.hosts}
    busy = [load[h.name] / h.cpu_cores for h in cluster.hosts if h.name in set(placement.values())]
    return {
        "future_over_headroom": sum(1 for u in util.values() if u > JOINT.cpu_headroom + 1e-9),
        "future_max_util": round(max(util.values()), 4),
        "future_overload_share": round(float(np.mean(np.concatenate(busy) > 1.0)), 6),
    }


def run_sequencing(name: str, cluster: Cluster, forecast: Forecast) -> dict[str, Any]:
    problem = build_problem(cluster, forecast, SETTINGS)
    target = problem.placement(HEURISTICS[name](problem).assign)
    t = time.perf_counter()
    result = sequence(cluster, problem.demand, cluster.placement, target, SETTINGS)
    wall = time.perf_counter() - t
    return {
        "moves": sum(1 for v, h in target.items() if cluster.placement[v] != h),
        "migrations": len(result.migrations),
        "waves": result.waves,
        "parked": len(result.parked),
        "infeasible": result.infeasible,
        "wall_s": round(wall, 3),
    }


def _child(conn: Any, fn: Callable[..., dict[str, Any]], args: tuple[Any, ...]) -> None:
    out = fn(*args)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    conn.send(out)


def isolated(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run `fn(*args)` in a forked process and return its result with that process's peak RSS."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args))
    proc.start()
    result = parent.recv()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--vms", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    parser.add_argument("--sequencing", action="store_true", help="also time the wave sequencer alone")
    parser.add_argument("--peak-model", choices=["sum", "joint"], default="sum", help="joint: see above")
    args = parser.parse_args()

    cluster, forecast = random_cluster(args.hosts, args.vms, args.seed)
    problem = build_problem(cluster, forecast, SETTINGS)
    before = placement_figures(cluster, problem.demand, cluster.placement, active_before(cluster), SETTINGS)
    bounds = lower_bounds(problem)
    lb = {"host_lb": bounds.hosts, "energy_lb_w": round(bounds.energy_kwh_per_day * 1000 / 24, 1)}
    approaches = {name: isolated(run_heuristic, name, cluster, forecast) | lb for name in HEURISTICS}
    approaches["advisor"] = isolated(run_advisor, cluster, forecast) | lb
    if args.peak_model == "joint":
        names, cpu = random_history(forecast, HISTORY_DAYS, HISTORY_STEP_S, args.seed)
        week = HISTORY_DAYS * 86_400 // HISTORY_STEP_S
        p95 = np.array([forecast.vms[n].cpu_p95 for n in names])
        history = scaled_history(names, p95, cpu[:, :week].astype(float))
        approaches["advisor_joint"] = isolated(run_advisor, cluster, forecast, history) | lb
        for row in approaches.values():
            row |= future_figures(cluster, row["_placement"], names, cpu[:, week:])
    for row in approaches.values():
        row.pop("_placement")
        within = energy_bound_within_w(problem, row["migrations"])
        row["energy_lb_within_w"] = None if within is None else round(within, 1)
    objective_lb = objective_bound_w(problem)
    result: dict[str, Any] = {
        "instance": {
            "hosts": args.hosts,
            "vms": args.vms,
            "seed": args.seed,
            "hosts_active": before.active_hosts,
            "hosts_over_headroom": before.hosts_over_headroom,
            "maintenance_hosts": sum(1 for h in cluster.hosts if h.state.value == "maintenance"),
            "energy_w": round(before.energy_kwh_per_day * 1000 / 24, 1),
            "migration_cap": problem.limit,
            "objective_lb": None if objective_lb is None else round(objective_lb, 1),
        },
        "approaches": approaches,
    }
    if args.sequencing:
        result["sequencing"] = {
            name: isolated(run_sequencing, name, cluster, forecast) for name in ("pabfd2d", "ffd")
        }
    if args.json:
        print(json.dumps(result))
        return
    print(json.dumps(result["instance"]))
    cols = ["hosts_active", "host_lb", "energy_w", "energy_lb_w", "energy_lb_within_w", "migrations"]
    cols += ["mem_moved_gib", "objective", "max_cpu_util", "violations", "wall_s", "cpu_s", "peak_rss_mb"]
    if args.peak_model == "joint":
        cols += ["future_over_headroom", "future_max_util", "future_overload_share"]
    print("| approach | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, row in approaches.items():
        print(f"| {name} | " + " | ".join(str(row[c]) for c in cols) + " |")
    for name, row in result.get("sequencing", {}).items():
        print(f"sequencing {name} target: {json.dumps(row)}")


if __name__ == "__main__":
    main()
