"""plan_cluster: from a cluster and its forecast to a checked, sequenced Plan (a pure function of its
inputs; only `solve_s` reads the clock)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from advisor.config import PlanSettings
from advisor.core import Cluster, Forecast, HostState, MigrationReason, Plan, PlanStatus
from advisor.migration.predict import MigrationPrediction
from advisor.optimize.bounds import lower_bounds
from advisor.optimize.cpsat import SKIPPED, solve_cpsat
from advisor.optimize.demand import JointHistory
from advisor.optimize.evacuate import evacuate
from advisor.optimize.figures import active_after, active_before, placement_figures
from advisor.optimize.heuristics import HEURISTICS, HeuristicResult
from advisor.optimize.problem import Problem, build_problem
from advisor.optimize.sequencer import SequenceResult, sequence

CPSAT = "cp-sat"
EVACUATION = "evacuation"
THRIFT_W = 1.0  # watts below the best plan by objective from which a plan is a different trade-off
Option = tuple[float, int, str, tuple[int, ...]]  # objective, tie-break rank, solver, assignment


def plan_cluster(
    cluster: Cluster,
    forecast: Forecast,
    settings: PlanSettings,
    progress: Callable[[str], None] | None = None,
    moved_at: Mapping[str, datetime] | None = None,
    history: JointHistory | None = None,
    moves: Mapping[str, MigrationPrediction] | None = None,
) -> Plan:
    """Heuristic warm starts, the host-emptying search (goal consolidate; from the forced moves, and
    from the candidate drawing least power when that is not the best), CP-SAT, then the wave
    sequencer. The best placement (by the planning objective) that can be sequenced safely wins; when
    none exists the plan is infeasible, keeps every VM where it is and names the VMs to blame. Never
    raises for an infeasible cluster. `moved_at`: when VMs last moved (anti-ping-pong, see problem.py);
    `history`: the VMs' joint CPU history, needed by `settings.peak_model = "joint"`; `moves`: each VM's
    predicted live migration (see build_problem)."""
    say = progress or (lambda _stage: None)
    started = time.perf_counter()
    forecast.check_covers(cluster)
    say("model")
    problem = build_problem(cluster, forecast, settings, moved_at, history, moves)
    joint = history if settings.peak_model == "joint" else None
    say("bounds")
    current = cluster.placement
    before = placement_figures(cluster, problem.demand, current, active_before(cluster), settings, joint)
    unchanged = Plan(
        cluster=cluster.name,
        cluster_fingerprint=cluster.fingerprint(),
        forecast_fingerprint=forecast.fingerprint(),
        created_at=forecast.made_at,
        goal=settings.goal,
        status=PlanStatus.INFEASIBLE,
        solver="none",
        placement=dict(current),
        migrations=(),
        standby=(),
        before=before,
        after=before,
        bounds=lower_bounds(problem),
    )

    def infeasible(message: str, blocking: Sequence[str]) -> Plan:
        return replace(
            unchanged,
            blocking_vms=tuple(sorted(set(blocking))),
            message=message,
            solve_s=time.perf_counter() - started,
        )

    if problem.contradictions:
        shown = problem.contradictions[:3]
        more = len(problem.contradictions) - len(shown)
        why = "; ".join(c.message for c in shown) + (f"; and {more} more" if more else "")
        return infeasible(f"infeasible rules: {why}", [vm for c in problem.contradictions for vm in c.vms])

    say("heuristics")
    results = [h(problem) for h in HEURISTICS[settings.goal]]
    valid = [r for r in results if r.complete and problem.moves(r.assign) <= problem.limit]
    options: list[Option] = [(problem.objective(r.assign), 1, r.name, tuple(r.assign)) for r in valid]
    deadline = time.perf_counter() + settings.time_limit_s
    if settings.goal == "consolidate":
        say(EVACUATION)
        evacuated = evacuate(problem, min(options)[3] if options else None, deadline)
        if evacuated is not None:
            options.append((problem.objective(evacuated.assign), 2, EVACUATION, evacuated.assign))
        _search_thriftiest(problem, options, deadline)
    # without a complete placement within the cap, CP-SAT starts from the VMs that may stay
    hint = min(options)[3] if options else problem.start
    say(CPSAT)
    cp = solve_cpsat(problem, hint, max(deadline - time.perf_counter(), 1.0), settings.workers)
    if cp.assign is not None:  # a tie keeps the simpler method
        options.append((problem.objective(cp.assign), 3, CPSAT, cp.assign))
    if not options:
        return infeasible(*_unplaceable(problem, results, cp.status))

    say("sequencing")
    refusals: list[SequenceResult] = []
    for _, _, solver, assign in sorted(options):
        target = problem.placement(assign)
        seq = sequence(cluster, problem.demand, current, target, settings, _reasons(problem, target), joint)
        if seq.infeasible:
            refusals.append(seq)
            continue
        optimal = solver == CPSAT and cp.status == "optimal" and not cp.restricted
        used = set(target.values())
        return replace(
            unchanged,
            status=PlanStatus.OPTIMAL if optimal else PlanStatus.FEASIBLE,
            solver=solver,
            placement=target,
            migrations=seq.migrations,
            standby=()
            if settings.goal == "balance"
            else tuple(h.name for h in cluster.hosts if h.state == HostState.UP and h.name not in used),
            after=placement_figures(
                cluster, problem.demand, target, active_after(cluster, target, settings.goal), settings, joint
            ),
            message=_summary(solver, cp.status, seq),
            solve_s=time.perf_counter() - started,
        )
    return infeasible(f"no safe migration order: {refusals[0].message}", refusals[0].blocking_vms)


def _search_thriftiest(problem: Problem, options: list[Option], deadline: float) -> None:
    """When a candidate draws less power than the best by objective (say PABFD-2D running a host fewer
    at more migrations), run the host-emptying search from it too: its exchanges of an emptied host for
    a running one cut the migrations that power costs. The search from the forced moves stops where
    running one host fewer means moving all the VMs of some full host at once, which it cannot undo;
    the two results compete on the same objective. On the 50-host benchmark it runs on 6 of seeds 4-39
    and, since the exchanges of two running hosts for one, wins none of them (before, 1 of 7); on seed
    1 it wins: 28 hosts instead of 29, 4.5 W-equivalent less, 0.2 s."""
    if not options:
        return
    least = min(options, key=lambda o: (problem.watts(o[3]), o[0]))
    if problem.watts(least[3]) >= problem.watts(min(options)[3]) - THRIFT_W:
        return
    searched = evacuate(problem, None, deadline, least[3])
    if searched is not None:
        options.append((problem.objective(searched.assign), 2, EVACUATION, searched.assign))


def _reasons(problem: Problem, target: Mapping[str, str]) -> dict[str, MigrationReason]:
    """Why each moved VM moves: its host's maintenance, a broken rule, an overloaded host, or the goal."""
    goal = MigrationReason.BALANCE if problem.goal == "balance" else MigrationReason.CONSOLIDATE
    out = {}
    for i, item in enumerate(problem.items):
        for vm, src in zip(item.vms, item.vm_hosts, strict=True):
            if target[vm] == problem.hosts[src].name:
                continue
            if not problem.usable[src]:
                out[vm] = MigrationReason.MAINTENANCE
            elif problem.evicted.get(i) == MigrationReason.RULE:
                out[vm] = MigrationReason.RULE
            elif src in problem.overloaded:
                out[vm] = MigrationReason.OVERLOAD
            else:
                out[vm] = goal
    return out


def _unplaceable(
    problem: Problem, results: Sequence[HeuristicResult], cp_status: str
) -> tuple[str, list[str]]:
    best = min(results, key=lambda r: len(r.unplaced))
    vms = [vm for i in best.unplaced for vm in problem.items[i].vms]
    if not vms:  # complete but over the migration cap, and CP-SAT found nothing within it
        return (
            f"no placement moves at most {problem.limit} VMs (the migration cap) and repairs every "
            f"maintenance, rule and overload problem (CP-SAT: {cp_status})",
            [],
        )
    shown = ", ".join(vms[:10]) + (" ..." if len(vms) > 10 else "")
    return (
        f"no placement found within headroom and rules (CP-SAT: {cp_status}); {len(vms)} VM(s) fit "
        f"nowhere: {shown}",
        vms,
    )


def _summary(solver: str, cp_status: str, seq: SequenceResult) -> str:
    parked = f", {len(seq.parked)} parked to break deadlocks" if seq.parked else ""
    kept = f" (CP-SAT {cp_status}, found nothing better)" if solver != CPSAT else ""
    if cp_status == SKIPPED:
        kept = " (CP-SAT not run: see advisor/optimize/cpsat.py)"
    return f"placement by {solver}{kept}; {len(seq.migrations)} migration(s) in {seq.waves} wave(s){parked}"
