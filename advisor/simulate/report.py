"""A simulation's HTML page: active hosts, energy and overloaded hosts over the day, one line per policy,
and the totals table. Self-contained (PNG data URIs)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from advisor.files import write_text
from advisor.report.plots import DPI, data_uri
from advisor.simulate.engine import STEP_S, Result

SERIES = (
    ("step_active_hosts", "active hosts"),
    ("step_energy_kwh", "energy per step, kWh"),
    ("step_overloaded_hosts", "hosts short of requested MIPS"),
)


def series_figure(results: Sequence[Result]) -> Figure:
    """Three panels over the hours of the day, a line per run."""
    fig = Figure(figsize=(9, 7.5), dpi=DPI)
    axes = fig.subplots(len(SERIES), 1, sharex=True)
    for ax, (attr, label) in zip(axes, SERIES, strict=True):
        for r in results:
            y = np.asarray(getattr(r, attr), dtype=float)
            ax.plot(np.arange(1, len(y) + 1) * STEP_S / 3600, y, label=f"{r.policy} ({r.setup})", lw=1)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, ncol=3)
    axes[-1].set_xlabel("hour of the day")
    fig.tight_layout()
    return fig


def page(results: Sequence[Result]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(r.policy)}</td><td>{html.escape(r.setup)}</td><td>{r.energy_kwh:.2f}</td>"
        f"<td>{r.migrations}</td><td>{100 * r.slatah:.2f}</td><td>{100 * r.pdm:.4f}</td>"
        f"<td>{1e5 * r.slav:.2f}</td><td>{1e3 * r.esv:.3f}</td></tr>"
        for r in results
    )
    day = html.escape(results[0].day) if results else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>simulation {day}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.2em .8em;text-align:right}</style>"
        f"</head><body><h1>Replay of {day}</h1><table><tr><th>policy</th><th>setup</th><th>energy kWh</th>"
        "<th>migrations</th><th>SLATAH %</th><th>PDM %</th><th>SLAV x1e-5</th><th>ESV x1e-3</th></tr>"
        f"{rows}</table><img alt='series' src='{data_uri(series_figure(results))}'></body></html>"
    )


def write_report(results: Sequence[Result], path: Path) -> None:
    write_text(path, page(results))
