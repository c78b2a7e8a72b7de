"""The what-if page: the comparison table and the plots, one self-contained file (PNG data URIs, inline
CSS, no script, no external reference) like the plan report whose template folder it shares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from advisor import __version__
from advisor.core import Cluster, Forecast
from advisor.report.figures import kwh, pct
from advisor.report.html import environment
from advisor.report.plots import data_uri
from advisor.whatif import plots
from advisor.whatif.score import ScenarioResult


@dataclass(frozen=True)
class Row:
    name: str
    description: str
    status: str
    active_hosts: str
    usable_hosts: str
    energy: str
    peak_cpu: str
    peak_mem: str
    migrations: str
    full: str
    changes: str
    message: str


def full_text(days: int | None) -> str:
    return "not within 10 years" if days is None else ("already full" if days == 0 else f"{days:,} days")


def changes_text(r: ScenarioResult) -> str:
    """The scenario's changes in a few words, for the table."""
    s = r.scenario
    parts = []
    if s.growth_pct:
        parts.append(
            f"demand {s.growth_pct:+g}% per {s.growth_per}, x{r.input.factor:.2f} at month {s.planned_month}"
        )
    if r.input.new_vms:
        parts.append(f"{len(r.input.new_vms)} new VMs")
    if r.input.retired:
        parts.append(f"{len(r.input.retired)} hosts retired")
    added = sum(h.count for h in s.add_hosts)
    if added:
        parts.append(f"{added} hosts added")
    if s.maintenance:
        parts.append(f"{len(s.maintenance)} hosts in maintenance")
    if s.cpu_headroom is not None or s.mem_headroom is not None:
        parts.append(
            f"headroom CPU {pct(r.input.settings.cpu_headroom)}, memory {pct(r.input.settings.mem_headroom)}"
        )
    if s.power is not None:
        parts.append("power model " + (", ".join(s.power.types) if s.power.types else "of all hosts"))
    return "; ".join(parts) or "as today"


def rows(results: Sequence[ScenarioResult]) -> list[Row]:
    return [
        Row(
            name=r.scenario.name,
            description=r.scenario.description,
            status=r.plan.status.value,
            active_hosts=str(r.active_hosts),
            usable_hosts=str(r.usable_hosts),
            energy=kwh(r.energy_kwh_per_day),
            peak_cpu=pct(r.plan.after.peak_cpu_util),
            peak_mem=pct(r.plan.after.peak_mem_util),
            migrations=str(r.migrations),
            full=full_text(r.days_until_full),
            changes=changes_text(r),
            message=r.plan.message,
        )
        for r in results
    ]


def render_whatif(cluster: Cluster, forecast: Forecast, results: Sequence[ScenarioResult]) -> str:
    images = [
        (
            "hosts-needed",
            "Hosts needed week by week, from P50 to P95 demand, against the usable hosts",
            plots.hosts_needed_figure(results),
        ),
        (
            "heatmap",
            "CPU utilisation of the active hosts by hour of day after each scenario's plan",
            plots.heatmap_figure(results),
        ),
        ("energy", "Energy per day and active hosts of each scenario's plan", plots.energy_figure(results)),
    ]
    return (
        environment()
        .get_template("whatif.html")
        .render(
            version=__version__,
            cluster=cluster,
            forecast=forecast,
            horizon_h=forecast.horizon_s / 3600,
            rows=rows(results),
            plots=[(key, alt, data_uri(fig)) for key, alt, fig in images],
        )
    )
