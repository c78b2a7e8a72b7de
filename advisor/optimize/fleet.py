"""A fleet is planned cluster by cluster, in parallel processes or as Ray tasks (`plan.engine`).

Migrations never cross a host's `cluster` label (clusters share network and storage inside, not
across), so each cluster's plan is an independent pure function of its own hosts, VMs, rules and
forecast. The fleet's plan is the union of the clusters' plans.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from datetime import datetime
from typing import Any

from advisor.config import PlanSettings
from advisor.core import Bounds, Cluster, Forecast, Plan, PlanFigures, PlanStatus, Rules
from advisor.errors import InputError
from advisor.migration.predict import MigrationPrediction
from advisor.optimize.demand import JointHistory
from advisor.optimize.plan import plan_cluster

_WORST_FIRST = (PlanStatus.INFEASIBLE, PlanStatus.FEASIBLE, PlanStatus.OPTIMAL)


def split_by_cluster(cluster: Cluster, forecast: Forecast) -> list[tuple[Cluster, Forecast]]:
    """One (cluster, forecast) per `cluster` label of the hosts. Anti-affinity across clusters always
    holds and is dropped; affinity or pins that only another cluster could satisfy are an error."""
    labels = sorted({h.cluster for h in cluster.hosts})
    if len(labels) == 1:
        return [(cluster, forecast)]
    label_of = {h.name: h.cluster for h in cluster.hosts}
    vm_label = {v.name: label_of[v.host] for v in cluster.vms}
    for group in cluster.rules.affinity:
        if len({vm_label[vm] for vm in group}) > 1:
            raise InputError(
                f"rules.affinity: group [{', '.join(group)}] spans clusters "
                f"{', '.join(sorted({vm_label[vm] for vm in group}))}; VMs never move between clusters"
            )
    for vm, pinned in cluster.rules.pins.items():
        if not any(label_of[h] == vm_label[vm] for h in pinned):
            raise InputError(
                f"rules.pins: VM {vm} is pinned only to hosts outside its cluster {vm_label[vm]}"
            )
    parts = []
    for label in labels:
        hosts = tuple(h for h in cluster.hosts if h.cluster == label)
        vms = tuple(v for v in cluster.vms if vm_label[v.name] == label)
        names = {v.name for v in vms}
        rules = Rules(
            affinity=tuple(g for g in cluster.rules.affinity if g[0] in names),
            anti_affinity=tuple(
                kept
                for g in cluster.rules.anti_affinity
                if len(kept := tuple(v for v in g if v in names)) > 1
            ),
            pins={
                vm: tuple(h for h in allowed if label_of[h] == label)
                for vm, allowed in cluster.rules.pins.items()
                if vm in names
            },
        )
        part = Cluster(f"{cluster.name}/{label}", hosts, vms, rules)
        part_forecast = replace(
            forecast,
            cluster_fingerprint=part.fingerprint(),
            vms={vm: f for vm, f in forecast.vms.items() if vm in names},
        )
        parts.append((part, part_forecast))
    return parts


def merge_plans(cluster: Cluster, forecast: Forecast, plans: Sequence[Plan], solve_s: float) -> Plan:
    """The fleet's plan: every cluster's moves, figures added up (peaks: the highest), the worst status."""
    status = next(s for s in _WORST_FIRST if any(p.status == s for p in plans))
    return Plan(
        cluster=cluster.name,
        cluster_fingerprint=cluster.fingerprint(),
        forecast_fingerprint=forecast.fingerprint(),
        created_at=forecast.made_at,
        goal=plans[0].goal,
        status=status,
        solver="+".join(sorted({p.solver for p in plans})),
        placement={vm: h for p in plans for vm, h in p.placement.items()},
        migrations=tuple(sorted((m for p in plans for m in p.migrations), key=lambda m: (m.wave, m.vm))),
        standby=tuple(h for p in plans for h in p.standby),
        before=_add([p.before for p in plans]),
        after=_add([p.after for p in plans]),
        bounds=Bounds(
            hosts_cpu=sum(p.bounds.hosts_cpu for p in plans),
            hosts_mem=sum(p.bounds.hosts_mem for p in plans),
            energy_kwh_per_day=sum(p.bounds.energy_kwh_per_day for p in plans),
        ),
        blocking_vms=tuple(vm for p in plans for vm in p.blocking_vms),
        message="; ".join(f"{p.cluster}: {p.message}" for p in plans),
        solve_s=solve_s,
    )


def _add(figures: Sequence[PlanFigures]) -> PlanFigures:
    return PlanFigures(
        active_hosts=sum(f.active_hosts for f in figures),
        energy_kwh_per_day=sum(f.energy_kwh_per_day for f in figures),
        peak_cpu_util=max(f.peak_cpu_util for f in figures),
        peak_mem_util=max(f.peak_mem_util for f in figures),
        hosts_over_headroom=sum(f.hosts_over_headroom for f in figures),
    )


def _plan_part(
    part: tuple[Cluster, Forecast],
    settings: PlanSettings,
    moved_at: Mapping[str, datetime],
    history: JointHistory | None,
    moves: Mapping[str, MigrationPrediction],
) -> Plan:
    return plan_cluster(part[0], part[1], settings, moved_at=moved_at, history=history, moves=moves)


def plan_fleet(
    cluster: Cluster,
    forecast: Forecast,
    settings: PlanSettings,
    progress: Callable[[str], None] | None = None,
    moved_at: Mapping[str, datetime] | None = None,
    history: JointHistory | None = None,
    moves: Mapping[str, MigrationPrediction] | None = None,
) -> Plan:
    """plan_cluster for each cluster of the inventory, `settings.parallel_clusters` at a time.
    `moved_at`: when VMs last moved (anti-ping-pong); `history`: the VMs' joint CPU history (peak model
    joint); `moves`: each VM's predicted live migration (move cost, live or held)."""
    started = time.perf_counter()
    forecast.check_covers(cluster)
    parts = split_by_cluster(cluster, forecast)
    if len(parts) == 1:
        return plan_cluster(cluster, forecast, settings, progress, moved_at, history, moves)
    if progress:
        progress(f"{len(parts)} clusters, {min(settings.parallel_clusters, len(parts))} at a time")
    recent = [{vm: t for vm, t in (moved_at or {}).items() if vm in f.vms} for _, f in parts]
    histories = [None if history is None else history.subset(f.vms) for _, f in parts]
    predicted = [{vm: p for vm, p in (moves or {}).items() if vm in f.vms} for _, f in parts]
    work = list(zip(parts, [settings] * len(parts), recent, histories, predicted, strict=True))
    if settings.engine == "ray":
        plans = _on_ray(work, settings.workers)
    elif settings.parallel_clusters == 1:
        plans = [_plan_part(*args) for args in work]
    else:
        with ProcessPoolExecutor(max_workers=min(settings.parallel_clusters, len(parts))) as pool:
            plans = list(pool.map(_plan_part, *zip(*work, strict=True)))
    return merge_plans(cluster, forecast, plans, time.perf_counter() - started)


def _on_ray(work: Sequence[tuple[Any, ...]], workers: int) -> list[Plan]:
    """One Ray task per cluster, asking for the CPUs its CP-SAT workers use; on the Ray cluster that
    RAY_ADDRESS names, else on a local Ray started (and stopped) here."""
    try:
        import ray
    except ImportError:
        raise InputError(
            'plan.engine = "ray" needs Ray, which is not installed: pip install "advisor[ray]", '
            'or set plan.engine = "processes"'
        ) from None
    started = not ray.is_initialized()
    if started:
        ray.init(logging_level=logging.ERROR, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=workers)(_plan_part)
        return list(ray.get([task.remote(*args) for args in work]))
    finally:
        if started:
            ray.shutdown()
