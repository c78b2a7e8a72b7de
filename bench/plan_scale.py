"""Planning at scale: a random cluster (default 200 hosts, 2,000 VMs) through plan_cluster with default
settings, and each heuristic alone for comparison. Prints one JSON line per run.

    .venv/bin/python bench/plan_scale.py --hosts 200 --vms 2000 --seed 1
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime

import numpy as np

from advisor.config import PlanSettings
from advisor.core import VM, Cluster, Forecast, Host, HostState, PowerModel, Rules, VMForecast
from advisor.execute import dry_run
from advisor.optimize import plan_cluster
from advisor.optimize.figures import active_after, placement_figures
from advisor.optimize.heuristics import ffd, pabfd, pabfd2d
from advisor.optimize.problem import build_problem
from advisor.optimize.sequencer import sequence

GIB = 1024.0
SMALL = (32.0, 256 * GIB, PowerModel(idle_w=120, max_w=280, standby_w=8))
LARGE = (
    64.0,
    512 * GIB,
    PowerModel(curve_w=(170, 205, 230, 255, 280, 305, 335, 370, 410, 455, 505), standby_w=12),
)


def random_cluster(n_hosts: int, n_vms: int, seed: int, util: float = 0.45) -> tuple[Cluster, Forecast]:
    """Two host types, lognormal CPU (mean utilisation `util`), memory in {4..64} GiB, VMs spread over
    hosts at random (first fit from a random host), three hosts pushed over 80% CPU, 2% in maintenance,
    and a sprinkling of rules."""
    rng = np.random.default_rng(seed)
    n_maint = max(1, round(0.02 * n_hosts))
    hosts = []
    for i in range(n_hosts):
        cores, ram, power = SMALL if i % 2 == 0 else LARGE
        state = HostState.MAINTENANCE if i < n_maint else HostState.UP
        hosts.append(Host(f"h{i:04d}", cores, ram, state=state, power=power))
    total = sum(h.cpu_cores for h in hosts)
    raw = rng.lognormal(0.0, 0.8, n_vms)
    p95 = np.minimum(raw / raw.sum() * total * util, 24.0)
    mems = rng.choice([4, 8, 16, 32, 64], n_vms, p=[0.3, 0.3, 0.2, 0.15, 0.05]) * GIB
    cpu = [0.0] * n_hosts
    mem = [0.0] * n_hosts
    hot = set(range(n_maint, n_maint + 3))
    vms = []
    for k in range(n_vms):
        start = int(rng.integers(n_hosts))
        filling = [h for h in sorted(hot) if cpu[h] < 0.9 * hosts[h].cpu_cores]  # pushed over 80% headroom
        order = filling + [(start + j) % n_hosts for j in range(n_hosts)]
        h = next(
            (
                h
                for h in order
                if cpu[h] + p95[k] <= hosts[h].cpu_cores * (0.95 if h in hot else 0.7)
                and mem[h] + mems[k] <= hosts[h].mem_mib
            ),
            start,
        )
        cpu[h] += p95[k]
        mem[h] += mems[k]
        vms.append(VM(f"vm{k:05d}", hosts[h].name, int(max(1, np.ceil(p95[k] * 1.5))), float(mems[k])))
    names = [v.name for v in vms]
    q = n_vms // 4  # five rules of each kind, on VMs spread over the list
    rules = Rules(
        affinity=tuple((names[10 * g], names[10 * g + 1]) for g in range(5)),
        anti_affinity=tuple(tuple(names[q + 10 * g + j] for j in range(3)) for g in range(5)),
        pins={names[2 * q + g]: tuple(h.name for h in hosts[-max(3, n_hosts // 10) :]) for g in range(5)},
    )
    cluster = Cluster("bench", tuple(hosts), tuple(vms), rules)
    dirty = rng.lognormal(2.5, 1.0, n_vms)
    forecast = Forecast(
        datetime(2026, 3, 1, tzinfo=UTC),
        86_400,
        "bench",
        cluster.fingerprint(),
        {
            v.name: VMForecast(0.6 * p95[k], p95[k], v.mem_mib * 0.6, v.mem_mib * 0.8, float(dirty[k]))
            for k, v in enumerate(vms)
        },
    )
    return cluster, forecast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--vms", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-limit-s", type=float, default=PlanSettings().time_limit_s)
    parser.add_argument(
        "--seq-vms", type=int, default=10_000, help="VMs of the sequencing-only run (0: skip)"
    )
    parser.add_argument("--migration-cost-w", type=float, default=PlanSettings().migration_cost_w)
    parser.add_argument(
        "--migration-cost-w-per-gib", type=float, default=PlanSettings().migration_cost_w_per_gib
    )
    args = parser.parse_args()
    settings = PlanSettings(
        time_limit_s=args.time_limit_s,
        migration_cost_w=args.migration_cost_w,
        migration_cost_w_per_gib=args.migration_cost_w_per_gib,
    )
    cluster, forecast = random_cluster(args.hosts, args.vms, args.seed)

    t = time.perf_counter()
    plan = plan_cluster(cluster, forecast, settings)
    wall = time.perf_counter() - t
    check = dry_run(cluster, forecast, plan, settings)
    moved = {v.name for v in cluster.vms if plan.placement[v.name] != v.host}
    migration_w = sum(
        settings.migration_cost_w + settings.migration_cost_w_per_gib * cluster.vm_by_name[v].mem_mib / GIB
        for v in moved
    )
    print(
        json.dumps(
            {
                "run": "plan_cluster",
                "hosts": args.hosts,
                "vms": args.vms,
                "wall_s": round(wall, 2),
                "solver": plan.solver,
                "status": plan.status.value,
                "hosts_active_before": plan.before.active_hosts,
                "hosts_active_after": plan.after.active_hosts,
                "energy_kwh_day_before": round(plan.before.energy_kwh_per_day, 1),
                "energy_kwh_day_after": round(plan.after.energy_kwh_per_day, 1),
                "bounds": {
                    "hosts_cpu": plan.bounds.hosts_cpu,
                    "hosts_mem": plan.bounds.hosts_mem,
                    "energy_kwh_day": round(plan.bounds.energy_kwh_per_day, 1),
                },
                "migrations": len(plan.migrations),
                "waves": max((m.wave for m in plan.migrations), default=0),
                "parked": sum(1 for m in plan.migrations if m.reason.value == "park"),
                "over_headroom_before": plan.before.hosts_over_headroom,
                "over_headroom_after": plan.after.hosts_over_headroom,
                "objective_w": round(plan.after.energy_kwh_per_day * 1000 / 24 + migration_w, 1),
                "dry_run_ok": check.ok,
                "message": plan.message,
            }
        )
    )
    problem = build_problem(cluster, forecast, settings)
    for heuristic in (ffd, pabfd, pabfd2d):
        t = time.perf_counter()
        result = heuristic(problem)
        wall = time.perf_counter() - t
        placement = problem.placement(result.assign)
        figures = placement_figures(
            cluster, problem.demand, placement, active_after(cluster, placement, settings.goal), settings
        )
        print(
            json.dumps(
                {
                    "run": result.name,
                    "wall_s": round(wall, 2),
                    "complete": result.complete,
                    "hosts_active_after": figures.active_hosts,
                    "energy_kwh_day_after": round(figures.energy_kwh_per_day, 1),
                    "migrations": problem.moves(result.assign),
                    "within_cap": problem.moves(result.assign) <= problem.limit,
                    "objective_w": round(problem.objective(result.assign), 1),
                }
            )
        )

    if args.seq_vms:
        bench_sequencer(args.seq_vms, args.seed, settings)


def bench_sequencer(n_vms: int, seed: int, settings: PlanSettings) -> None:
    """The sequencer alone on a big cluster: the pabfd2d target (a real plan's moves) and the ffd target
    (nearly every VM moves, the worst case)."""
    cluster, forecast = random_cluster(n_vms // 10, n_vms, seed)
    problem = build_problem(cluster, forecast, settings)
    for heuristic in (pabfd2d, ffd):
        target = problem.placement(heuristic(problem).assign)
        t = time.perf_counter()
        result = sequence(cluster, problem.demand, cluster.placement, target, settings)
        wall = time.perf_counter() - t
        print(
            json.dumps(
                {
                    "run": f"sequence {heuristic.__name__} target",
                    "vms": n_vms,
                    "hosts": len(cluster.hosts),
                    "wall_s": round(wall, 3),
                    "moves": sum(1 for v, h in target.items() if cluster.placement[v] != h),
                    "migrations": len(result.migrations),
                    "waves": result.waves,
                    "parked": len(result.parked),
                    "infeasible": result.infeasible,
                }
            )
        )


if __name__ == "__main__":
    main()
