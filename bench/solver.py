"""Plan quality and speed: the optimizer issue's instance through FFD, PABFD, PABFD-2D and the advisor's
planner (default settings), side by side. Each approach runs in its own forked process, so its peak RSS
is its own (the instance, built before the fork, is included).

    .venv/bin/python bench/solver.py --hosts 200 --vms 2000 --seed 1 --json
    .venv/bin/python bench/solver.py --hosts 1000 --vms 10000 --seed 1 --json --sequencing

Without --json it prints a table. --sequencing adds the wave sequencer alone on the PABFD-2D and FFD
targets (the latter moves nearly every VM: the worst case).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time
from collections.abc import Callable
from typing import Any

from instances import GIB, random_cluster

from advisor.config import PlanSettings
from advisor.core import Cluster, Forecast
from advisor.execute import dry_run
from advisor.invariants import placement_violations
from advisor.optimize import plan_cluster
from advisor.optimize.bounds import lower_bounds
from advisor.optimize.demand import demand_of
from advisor.optimize.figures import active_after, active_before, placement_figures
from advisor.optimize.heuristics import ffd, pabfd, pabfd2d
from advisor.optimize.problem import build_problem
from advisor.optimize.sequencer import sequence

HEURISTICS = {"ffd": ffd, "pabfd": pabfd, "pabfd2d": pabfd2d}
SETTINGS = PlanSettings()


def _figures(cluster: Cluster, forecast: Forecast, target: dict[str, str]) -> dict[str, Any]:
    demand = demand_of(cluster, forecast)
    fig = placement_figures(cluster, demand, target, active_after(cluster, target, SETTINGS.goal), SETTINGS)
    moved = [v for v in cluster.vms if target[v.name] != v.host]
    return {
        "hosts_active": fig.active_hosts,
        "energy_w": round(fig.energy_kwh_per_day * 1000 / 24, 1),
        "migrations": len(moved),
        "mem_moved_gib": round(sum(v.mem_mib for v in moved) / GIB, 1),
        "max_cpu_util": round(fig.peak_cpu_util, 4),
        "violations": len(placement_violations(cluster, demand, target, SETTINGS)),
    }


def run_heuristic(name: str, cluster: Cluster, forecast: Forecast) -> dict[str, Any]:
    t = time.perf_counter()
    problem = build_problem(cluster, forecast, SETTINGS)
    result = HEURISTICS[name](problem)
    wall = time.perf_counter() - t
    out = _figures(cluster, forecast, problem.placement(result.assign))
    out |= {"complete": result.complete, "within_cap": problem.moves(result.assign) <= problem.limit}
    return out | {"wall_s": round(wall, 2)}


def run_advisor(cluster: Cluster, forecast: Forecast) -> dict[str, Any]:
    t = time.perf_counter()
    plan = plan_cluster(cluster, forecast, SETTINGS)
    wall = time.perf_counter() - t
    out = _figures(cluster, forecast, dict(plan.placement))
    check = dry_run(cluster, forecast, plan, SETTINGS)
    out["violations"] += len(check.violations)
    out |= {"solver": plan.solver, "status": plan.status.value, "waves": len(plan.waves)}
    return out | {"wall_s": round(wall, 2)}


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
    args = parser.parse_args()

    cluster, forecast = random_cluster(args.hosts, args.vms, args.seed)
    problem = build_problem(cluster, forecast, SETTINGS)
    before = placement_figures(cluster, problem.demand, cluster.placement, active_before(cluster), SETTINGS)
    bounds = lower_bounds(problem)
    lb = {"host_lb": bounds.hosts, "energy_lb_w": round(bounds.energy_kwh_per_day * 1000 / 24, 1)}
    approaches = {name: isolated(run_heuristic, name, cluster, forecast) | lb for name in HEURISTICS}
    approaches["advisor"] = isolated(run_advisor, cluster, forecast) | lb
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
    cols = ["hosts_active", "host_lb", "energy_w", "energy_lb_w", "migrations", "mem_moved_gib"]
    cols += ["max_cpu_util", "violations", "wall_s", "peak_rss_mb"]
    print("| approach | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, row in approaches.items():
        print(f"| {name} | " + " | ".join(str(row[c]) for c in cols) + " |")
    for name, row in result.get("sequencing", {}).items():
        print(f"sequencing {name} target: {json.dumps(row)}")


if __name__ == "__main__":
    main()
