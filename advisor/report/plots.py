"""The report's plots as matplotlib Figures, and their embedding as PNG data URIs so the page opens offline.

Figures are built with `matplotlib.figure.Figure` (Agg canvas), never through pyplot: no global state,
no display, safe in a server or a worker process.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter

from advisor.core import Plan
from advisor.report.figures import HostLoad

MAX_LABELLED_HOSTS = 60  # beyond this, host names on the axis overlap and are left out
BEFORE_COLOR = "#8da0b3"
AFTER_COLOR = "#2f6fb0"
OVER_COLOR = "#d1495b"
MAINTENANCE_COLOR = "#f4c27a"
STANDBY_COLOR = "#d5dbe3"
BOUND_COLOR = "#6aa84f"
DPI = 110

Dimension = Literal["cpu", "mem"]


def utilisation_figure(loads: Sequence[HostLoad], dimension: Dimension, limit: float) -> Figure:
    """Two panels sharing the host axis, before above and after below, so a host is compared with
    itself; bars above `limit` stand out, maintenance and standby hosts are shaded behind."""
    n = len(loads)
    before = np.array([h.cpu_before if dimension == "cpu" else h.mem_before for h in loads])
    after = np.array([h.cpu_after if dimension == "cpu" else h.mem_after for h in loads])
    top = max(1.0, float(before.max(initial=0.0)), float(after.max(initial=0.0))) * 1.05
    width = min(max(7.0, 4.0 + 0.09 * n), 14.0)
    fig = Figure(figsize=(width, 5.6), dpi=DPI, layout="constrained")
    ax_before, ax_after = fig.subplots(2, 1, sharex=True, sharey=True)
    x = np.arange(n)
    title = "CPU utilisation at forecast P95" if dimension == "cpu" else "Memory reserved"
    limit_label = f"headroom {limit:.0%}"
    for ax, values, base_color, label, standby in (
        (ax_before, before, BEFORE_COLOR, "Before", [h.standby_before for h in loads]),
        (ax_after, after, AFTER_COLOR, "After plan", [h.standby_after for h in loads]),
    ):
        _shade(ax, x, [h.maintenance for h in loads], top, MAINTENANCE_COLOR)
        _shade(ax, x, standby, top, STANDBY_COLOR)
        colors = np.where(values > limit + 1e-9, OVER_COLOR, base_color)
        ax.bar(x, values, width=0.8, color=colors, zorder=2)
        ax.axhline(limit, color=OVER_COLOR, linestyle="--", linewidth=1.2, zorder=3)
        ax.set_ylim(0, top)
        ax.set_xlim(-0.6, n - 0.4)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_ylabel(label)
        ax.grid(axis="y", color="#dddddd", linewidth=0.6, zorder=0)
        ax.spines[["top", "right"]].set_visible(False)
    ax_before.set_title(title, loc="left", fontsize=11)
    if n <= MAX_LABELLED_HOSTS:
        ax_after.set_xticks(x, [h.name for h in loads], rotation=90, fontsize=7)
    else:
        ax_after.set_xticks([])
    ax_after.set_xlabel(f"{n} hosts, in order of CPU load after the plan")
    legend = [
        Patch(color=BEFORE_COLOR, label="before"),
        Patch(color=AFTER_COLOR, label="after"),
        Patch(color=OVER_COLOR, label=f"over {limit_label}"),
        Patch(color=MAINTENANCE_COLOR, label="maintenance"),
        Patch(color=STANDBY_COLOR, label="standby"),
    ]
    fig.legend(handles=legend, loc="outside upper right", ncols=5, fontsize=8, frameon=False)
    return fig


def _shade(ax: Axes, x: np.ndarray, mask: Sequence[bool], top: float, color: str) -> None:
    marked = x[np.asarray(mask, dtype=bool)]
    if marked.size:
        ax.bar(marked, top, width=1.0, color=color, zorder=1, linewidth=0)


def totals_figure(plan: Plan) -> Figure:
    """Active hosts and energy per day next to their lower bounds: how far the plan is from the best
    any placement could do."""
    fig = Figure(figsize=(7.0, 2.8), dpi=DPI, layout="constrained")
    labels = ["before", "after", "lower bound"]
    colors = [BEFORE_COLOR, AFTER_COLOR, BOUND_COLOR]
    series: list[tuple[str, list[float], str]] = [
        (
            "Active hosts",
            [plan.before.active_hosts, plan.after.active_hosts, plan.bounds.hosts],
            "{:.0f}",
        ),
        (
            "Energy (kWh/day)",
            [plan.before.energy_kwh_per_day, plan.after.energy_kwh_per_day, plan.bounds.energy_kwh_per_day],
            "{:,.1f}",
        ),
    ]
    for ax, (title, values, fmt) in zip(fig.subplots(1, 2), series, strict=True):
        bars = ax.bar(labels, values, color=colors, width=0.6)
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize=8, padding=2)
        ax.set_title(title, loc="left", fontsize=10)
        ax.set_ylim(0, max(max(values), 1e-9) * 1.18)
        ax.tick_params(labelsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    return fig


def pareto_figure(points: Sequence[Mapping[str, Any]], plan: Plan, energy_bound: float) -> Figure:
    """Energy per day against migrations, one point per migration cap of the sweep: what each extra
    migration buys, the chosen plan marked, the energy lower bound as the floor."""
    fig = Figure(figsize=(7.0, 3.2), dpi=DPI, layout="constrained")
    ax = fig.subplots()

    def beats(q: Mapping[str, Any], p: Mapping[str, Any]) -> bool:
        return (q["migrations"], q["energy_kwh_per_day"]) < (p["migrations"], p["energy_kwh_per_day"]) and (
            q["energy_kwh_per_day"] <= p["energy_kwh_per_day"]
        )

    feasible = [p for p in points if p["status"] != "infeasible"]
    front = sorted(
        (p for p in feasible if not any(beats(q, p) for q in feasible)), key=lambda p: p["migrations"]
    )
    rest = [p for p in points if p not in front]
    ax.plot(
        [p["migrations"] for p in front],
        [p["energy_kwh_per_day"] for p in front],
        "o-",
        color=AFTER_COLOR,
        label="sweep (Pareto front)",
    )
    for p in front:
        ax.annotate(
            f"cap {p['migration_cap']:g}",
            (p["migrations"], p["energy_kwh_per_day"]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    if rest:
        ax.plot(
            [p["migrations"] for p in rest],
            [p["energy_kwh_per_day"] for p in rest],
            "x",
            color=BEFORE_COLOR,
            label="dominated",
        )
    ax.plot(
        [len(plan.migrations)],
        [plan.after.energy_kwh_per_day],
        "*",
        markersize=14,
        color=OVER_COLOR,
        label="this plan",
    )
    ax.plot([0], [plan.before.energy_kwh_per_day], "s", color=BEFORE_COLOR, label="no migration")
    ax.axhline(energy_bound, color=BOUND_COLOR, linestyle="--", linewidth=1, label="lower bound")
    ax.set_xlabel("migrations", fontsize=9)
    ax.set_ylabel("energy (kWh/day)", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=7, frameon=False)
    return fig


def data_uri(fig: Figure) -> str:
    """PNG rather than inline SVG: a fixed size whatever the host count, and no element ids to clash
    between several plots on one page."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
