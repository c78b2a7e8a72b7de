"""The what-if plots as matplotlib Figures (Agg, no pyplot), one panel per scenario where the scenarios
differ in shape, one shared axis where they are compared on one number."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from advisor.report.plots import AFTER_COLOR, BOUND_COLOR, DPI, OVER_COLOR, STANDBY_COLOR
from advisor.whatif.profile import HOURS
from advisor.whatif.scenarios import DAYS_PER_MONTH
from advisor.whatif.score import ScenarioResult

MAX_LABELLED_HOSTS = 40
COLUMNS = 2


def _grid(n: int, height: float) -> tuple[Figure, list]:
    cols = min(COLUMNS, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(11.0, height * rows + 0.6), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def hosts_needed_figure(results: Sequence[ScenarioResult]) -> Figure:
    """Per scenario: the band of hosts needed from P50 to P95 demand week by week, the usable hosts, the
    plan's active hosts at the planned month, and the day capacity runs out."""
    fig, axes = _grid(len(results), 2.6)
    for ax, r in zip(axes, results, strict=True):
        months = np.array([w.day for w in r.weeks]) / DAYS_PER_MONTH
        p50 = np.array([w.hosts_p50 for w in r.weeks])
        p95 = np.array([w.hosts_p95 for w in r.weeks])
        ax.fill_between(
            months,
            p50,
            p95,
            step="post",
            color=AFTER_COLOR,
            alpha=0.25,
            linewidth=0,
            label="needed, P50 to P95 demand",
        )
        ax.step(months, p95, where="post", color=AFTER_COLOR, linewidth=1.4)
        ax.step(months, p50, where="post", color=AFTER_COLOR, linewidth=0.8, linestyle=":")
        ax.axhline(r.usable_hosts, color=OVER_COLOR, linestyle="--", linewidth=1.2, label="usable hosts")
        ax.plot([r.scenario.planned_month], [r.active_hosts], "o", color=BOUND_COLOR, label="active in plan")
        full = r.days_until_full
        if full is not None and full <= r.weeks[-1].day:
            ax.axvline(full / DAYS_PER_MONTH, color=OVER_COLOR, linewidth=1.0)
            ax.annotate(
                f"full at day {full}",
                (full / DAYS_PER_MONTH, r.usable_hosts),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
                color=OVER_COLOR,
            )
        ax.set_title(r.scenario.name, loc="left", fontsize=10)
        ax.set_xlim(0, months[-1])
        ax.set_ylim(0, max(float(p95.max()), r.usable_hosts, r.active_hosts) * 1.15 + 1)
        ax.set_xlabel("months from today", fontsize=8)
        ax.set_ylabel("hosts", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(color="#dddddd", linewidth=0.6)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].legend(fontsize=7, loc="lower right", frameon=False)
    return fig


def heatmap_figure(results: Sequence[ScenarioResult]) -> Figure:
    """Per scenario: CPU utilisation of each active host after the plan (rows, busiest on top) by UTC
    hour of day, from each VM's mean profile over its history, grown to the planned month."""
    fig, axes = _grid(len(results), 3.0)
    image = None
    for ax, r in zip(axes, results, strict=True):
        ax.set_title(r.scenario.name, loc="left", fontsize=10)
        ax.set_xlabel("hour of day (UTC)", fontsize=8)
        ax.tick_params(labelsize=7)
        if not r.heat_hosts:
            ax.text(0.5, 0.5, "no active host", ha="center", va="center", transform=ax.transAxes)
            continue
        image = ax.imshow(r.heat, aspect="auto", cmap="YlOrRd", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_xticks(range(0, HOURS, 3))
        if len(r.heat_hosts) <= MAX_LABELLED_HOSTS:
            ax.set_yticks(range(len(r.heat_hosts)), r.heat_hosts, fontsize=5)
        else:
            ax.set_yticks([])
            ax.set_ylabel(f"{len(r.heat_hosts)} active hosts", fontsize=8)
    if image is not None:
        bar = fig.colorbar(image, ax=axes, shrink=0.8, format=lambda v, _: f"{v:.0%}")
        bar.set_label("mean CPU utilisation", fontsize=8)
    return fig


def energy_figure(results: Sequence[ScenarioResult]) -> Figure:
    """Energy per day of each scenario's plan against its lower bound, and active against usable hosts."""
    names = [r.scenario.name for r in results]
    y = np.arange(len(results))
    fig = Figure(figsize=(11.0, 0.45 * len(results) + 1.6), dpi=DPI, layout="constrained")
    ax_e, ax_h = fig.subplots(1, 2, sharey=True)
    energy = [r.energy_kwh_per_day for r in results]
    colors = [AFTER_COLOR if r.feasible else OVER_COLOR for r in results]
    bars = ax_e.barh(y, energy, color=colors, height=0.6)
    ax_e.bar_label(bars, labels=[f"{e:,.1f}" for e in energy], fontsize=8, padding=3)
    ax_e.plot(
        [r.plan.bounds.energy_kwh_per_day for r in results],
        y,
        "|",
        color=BOUND_COLOR,
        markersize=16,
        markeredgewidth=2.5,
        label="lower bound",
    )
    ax_e.set_title("Energy (kWh/day)", loc="left", fontsize=10)
    ax_e.set_xlim(0, max(max(energy), 1e-9) * 1.2)
    ax_e.legend(fontsize=7, frameon=False, loc="lower right")
    ax_h.barh(y, [r.usable_hosts for r in results], color=STANDBY_COLOR, height=0.6, label="usable")
    bars = ax_h.barh(y, [r.active_hosts for r in results], color=colors, height=0.6, label="active")
    ax_h.bar_label(bars, labels=[str(r.active_hosts) for r in results], fontsize=8, padding=3)
    ax_h.set_title("Active / usable hosts", loc="left", fontsize=10)
    ax_h.legend(fontsize=7, frameon=False, loc="lower right")
    ax_e.set_yticks(y, names, fontsize=8)
    ax_e.invert_yaxis()
    for ax in (ax_e, ax_h):
        ax.tick_params(labelsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    return fig
