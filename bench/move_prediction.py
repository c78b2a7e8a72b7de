"""What the migration model costs the plan: predicting every VM's move and sequencing a fleet's moves.

    cd bench && ../.venv/bin/python move_prediction.py --hosts 1000 --vms 10000 --seed 1 \
        --measurements ../data/migrations.csv

The instance is solver.py's; the moves are PABFD-2D's target at migration cap 1. Prints one JSON object:
seconds (best of --repeats) for `predict_moves` over every VM, analytic and learned, for `sequence` with
the plan stage's predictions and without them (analytic, one batch inside), and the wave count.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from instances import random_cluster

from advisor.config import PlanSettings
from advisor.migration import fit_correction, predict_moves
from advisor.optimize.demand import demand_of
from advisor.optimize.heuristics import pabfd2d
from advisor.optimize.problem import build_problem
from advisor.optimize.sequencer import sequence


def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return round(best, 3), result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=1000)
    p.add_argument("--vms", type=int, default=10000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--measurements", default="../data/migrations.csv", help="CSV the correction is fitted on")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()

    cluster, fc = random_cluster(a.hosts, a.vms, a.seed)
    settings = PlanSettings(migration_cap=1.0)
    problem = build_problem(cluster, fc, settings)
    target = problem.placement(pabfd2d(problem).assign)
    mem = {v.name: v.mem_mib for v in cluster.vms}
    dirty = {v.name: fc.vms[v.name].dirty_mibps for v in cluster.vms}
    bw, downtime = settings.bandwidth_mibps, settings.max_downtime_ms
    fit_s, correction = best_of(1, lambda: fit_correction(a.measurements))
    analytic_s, _ = best_of(a.repeats, lambda: predict_moves(mem, dirty, bw, downtime))
    learned_s, moves = best_of(a.repeats, lambda: predict_moves(mem, dirty, bw, downtime, correction))
    plain = demand_of(cluster, fc)
    predicted = demand_of(cluster, fc, moves)
    inside_s, seq = best_of(a.repeats, lambda: sequence(cluster, plain, cluster.placement, target, settings))
    given_s, _ = best_of(a.repeats, lambda: sequence(cluster, predicted, cluster.placement, target, settings))
    print(
        json.dumps(
            {
                "vms": len(cluster.vms),
                "moves": len(seq.migrations),
                "waves": seq.waves,
                "fit_correction_s": fit_s,
                "predict_moves_analytic_s": analytic_s,
                "predict_moves_learned_s": learned_s,
                "sequence_predicting_inside_s": inside_s,
                "sequence_with_plan_predictions_s": given_s,
            }
        )
    )


if __name__ == "__main__":
    main()
