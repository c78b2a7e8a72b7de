"""The HTML report: one self-contained page (inline CSS, plots as data URIs) that opens offline and can be
mailed or archived next to the plan it describes."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

import jinja2

from advisor import __version__
from advisor.core import Cluster, Forecast, HostState, Plan, PlanStatus
from advisor.files import write_text
from advisor.report import figures, plots


@functools.cache
def environment() -> jinja2.Environment:
    """The pages' templates (base.html holds the shared look); shared by the plan and what-if reports."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("advisor.report", "templates"),
        autoescape=True,  # VM, host and cluster names come from the inventory: never trusted as markup
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_report(
    cluster: Cluster,
    forecast: Forecast,
    plan: Plan,
    dry_run: Mapping[str, Any] | None = None,
    headroom: float = 0.8,
    mem_headroom: float = 1.0,
    pareto: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """The page for `plan` on `cluster` under `forecast`; `dry_run` is a DryRunResult.to_dict().
    `headroom` and `mem_headroom` are the CPU and memory limits drawn on the plots; `pareto` holds the
    points of an energy/migration sweep (ParetoPoint.to_dict()), plotted when given."""
    dry = figures.dry_run_view(dry_run) if dry_run is not None else None  # cheap checks before plotting
    loads = figures.host_loads(cluster, forecast, plan)
    migrations = figures.migration_rows(cluster, plan)
    images = [
        (
            "cpu",
            "Per-host CPU utilisation at forecast P95, before and after the plan",
            plots.utilisation_figure(loads, "cpu", headroom),
        ),
        (
            "mem",
            "Per-host memory reserved, before and after the plan",
            plots.utilisation_figure(loads, "mem", mem_headroom),
        ),
        (
            "totals",
            "Active hosts and energy per day: before, after and the lower bound",
            plots.totals_figure(plan),
        ),
    ]
    if pareto:
        images.append(
            (
                "pareto",
                "Energy per day against migrations under several migration caps: what each migration buys",
                plots.pareto_figure(pareto, plan, plan.bounds.energy_kwh_per_day),
            )
        )
    stale = [
        what
        for what, made_for, current in (
            ("cluster", plan.cluster_fingerprint, cluster.fingerprint()),
            ("forecast", plan.forecast_fingerprint, forecast.fingerprint()),
        )
        if made_for != current
    ]
    return (
        environment()
        .get_template("report.html")
        .render(
            version=__version__,
            cluster=cluster,
            plan=plan,
            forecast=forecast,
            horizon_h=forecast.horizon_s / 3600,
            created_at=plan.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            infeasible=plan.status == PlanStatus.INFEASIBLE,
            stale=stale,
            maintenance=[h.name for h in cluster.hosts if h.state == HostState.MAINTENANCE],
            summary=figures.summary_rows(cluster, plan),
            savings=figures.savings(plan),
            plots=[(key, alt, plots.data_uri(fig)) for key, alt, fig in images],
            waves=figures.wave_rows(cluster, plan),
            migrations=migrations,
            not_converging=sum(not m.converges for m in migrations),
            cannot_move_live=figures.live_rows(plan),
            dry_run=dry,
            headroom=figures.pct(headroom),
        )
    )


def write_report(
    path: str | Path,
    cluster: Cluster,
    forecast: Forecast,
    plan: Plan,
    dry_run: Mapping[str, Any] | None = None,
    headroom: float = 0.8,
    mem_headroom: float = 1.0,
    pareto: Sequence[Mapping[str, Any]] | None = None,
) -> None:
    """Render and write atomically, so a reader never opens half a page."""
    write_text(Path(path), render_report(cluster, forecast, plan, dry_run, headroom, mem_headroom, pareto))
