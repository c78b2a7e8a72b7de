"""What the planner, the executor and the report ask of the migration model.

- `predict_migration(...)`: one move's time, downtime, bytes, whether it converges, and the deadlines to
  watch it by; `predict_migrations(frame)` does the same for many at once.
- `predict_moves(...)`: every VM's move at once, by name (what the plan stage hands the planner).
- `max_live_dirty_mibps(...)`: the fastest dirty rate at which a guest still moves live, for "cannot move
  now; could once its dirty rate falls below X"; `max_live_dirty_mibps_many` for many guests at once.
- `fit_correction(path)`: the learned correction fitted on a bench/migrations.py CSV (cached per file);
  `configured_correction(measurements)` reads `[migration] measurements` ("" = none).

Without a correction every figure is the analytic model's. "Converges" means: finishes before
`abort_deadline_s` (20 s + 1.5 copies of the memory), the rule the measured data were labelled by.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from advisor.errors import InputError
from advisor.migration.measured import INPUT_COLUMNS, abort_deadline_s, read_measured
from advisor.migration.precopy import analytic_frame

if TYPE_CHECKING:  # fitting and applying it need scikit-learn: imported when a correction is fitted
    from advisor.migration.model import MigrationCorrection

DEADLINE_FACTOR = 1.5  # as [apply] deadline_factor
DEADLINE_SLACK_S = 10.0  # as [apply] deadline_slack_s


@dataclass(frozen=True)
class MigrationPrediction:
    total_time_s: float
    downtime_ms: float  # the guest's pause at switch-over
    transferred_mib: float
    iterations: int  # the analytic model's live rounds (libvirt's memory_iteration counts ~2 more)
    converges: bool  # finishes before abort_s
    converge_probability: float  # the classifier's; 0 or 1 without a correction
    downtime_within_limit: bool  # converges with a downtime within max_downtime_ms
    deadline_s: float  # soft: escalate (auto-converge, more downtime) if still running
    abort_s: float  # hard: abort, the guest stays on its source
    learned: bool  # figures from the learned correction, not the analytic model alone


def predict_migrations(
    inputs: pd.DataFrame,
    correction: MigrationCorrection | None = None,
    deadline_factor: float = DEADLINE_FACTOR,
    deadline_slack_s: float = DEADLINE_SLACK_S,
) -> pd.DataFrame:
    """One row per input row (bench/migrations.py's input columns; `working_set_mib` may be NaN for
    "all memory"): total_time_s, downtime_ms, transferred_mib, iterations, converges,
    converge_probability, downtime_within_limit, deadline_s, abort_s."""
    missing = [c for c in INPUT_COLUMNS if c not in inputs.columns]
    if missing:
        raise InputError(f"migration prediction: missing input column(s) {', '.join(missing)}")
    X = inputs[list(INPUT_COLUMNS)].copy()
    X["working_set_mib"] = X["working_set_mib"].fillna(X["mem_mib"])
    an = analytic_frame(X)
    if correction is None:
        out = an.copy()
        out["converge_probability"] = an["converges"].astype(float)
        out["downtime_within_limit"] = an["converges"] & (an["downtime_ms"] <= X["max_downtime_ms"])
    else:
        out = correction.predict(X)
        out["iterations"] = an["iterations"]
    abort = np.array(
        [abort_deadline_s(m, b) for m, b in zip(X["mem_mib"], X["bandwidth_mibps"], strict=True)]
    )
    soft = deadline_factor * out["total_time_s"].to_numpy(float) + deadline_slack_s
    converges = out["converges"].to_numpy(bool)
    out["deadline_s"] = np.where(converges, soft, np.minimum(soft, abort))
    out["abort_s"] = np.maximum(abort, out["deadline_s"])
    return out[
        [
            "total_time_s",
            "downtime_ms",
            "transferred_mib",
            "iterations",
            "converges",
            "converge_probability",
            "downtime_within_limit",
            "deadline_s",
            "abort_s",
        ]
    ]


def predict_migration(
    mem_mib: float,
    dirty_mibps: float,
    bandwidth_mibps: float,
    max_downtime_ms: float,
    *,
    working_set_mib: float | None = None,
    auto_converge: bool = False,
    xbzrle: bool = False,
    correction: MigrationCorrection | None = None,
    deadline_factor: float = DEADLINE_FACTOR,
    deadline_slack_s: float = DEADLINE_SLACK_S,
) -> MigrationPrediction:
    """One migration; `working_set_mib` (default: all memory) bounds what the guest can dirty in a round."""
    row = pd.DataFrame(
        [
            {
                "mem_mib": mem_mib,
                "working_set_mib": mem_mib if working_set_mib is None else working_set_mib,
                "dirty_mibps": dirty_mibps,
                "bandwidth_mibps": bandwidth_mibps,
                "max_downtime_ms": max_downtime_ms,
                "auto_converge": auto_converge,
                "xbzrle": xbzrle,
            }
        ]
    )
    return _as_predictions(
        predict_migrations(row, correction, deadline_factor, deadline_slack_s), correction
    )[0]


def predict_moves(
    mem_mib: Mapping[str, float],
    dirty_mibps: Mapping[str, float],
    bandwidth_mibps: float,
    max_downtime_ms: float,
    correction: MigrationCorrection | None = None,
) -> dict[str, MigrationPrediction]:
    """Each VM of `mem_mib` moved plainly (no auto-converge, no xbzrle) at its dirty rate: one batch, so
    that the learned correction costs one call for a whole fleet."""
    names = list(mem_mib)
    frame = pd.DataFrame(
        {
            "mem_mib": [float(mem_mib[n]) for n in names],
            "working_set_mib": np.nan,
            "dirty_mibps": [float(dirty_mibps[n]) for n in names],
            "bandwidth_mibps": bandwidth_mibps,
            "max_downtime_ms": max_downtime_ms,
            "auto_converge": False,
            "xbzrle": False,
        }
    )
    return dict(zip(names, _as_predictions(predict_migrations(frame, correction), correction), strict=True))


def _as_predictions(out: pd.DataFrame, correction: MigrationCorrection | None) -> list[MigrationPrediction]:
    """predict_migrations' rows as MigrationPredictions (plain Python numbers)."""
    return [MigrationPrediction(**row, learned=correction is not None) for row in out.to_dict("records")]


def max_live_dirty_mibps(
    mem_mib: float,
    bandwidth_mibps: float,
    max_downtime_ms: float,
    *,
    working_set_mib: float | None = None,
    auto_converge: bool = False,
    xbzrle: bool = False,
    correction: MigrationCorrection | None = None,
    grid: int = 64,
) -> float:
    """The highest dirty rate (on a log grid up to 4x the bandwidth) below which every rate is predicted
    to converge; 0 when even an idle guest is not, the grid's top when all are."""
    ws = mem_mib if working_set_mib is None else working_set_mib
    return float(
        max_live_dirty_mibps_many(
            [mem_mib],
            bandwidth_mibps,
            max_downtime_ms,
            working_set_mib=[ws],
            auto_converge=auto_converge,
            xbzrle=xbzrle,
            correction=correction,
            grid=grid,
        )[0]
    )


def max_live_dirty_mibps_many(
    mem_mib: Sequence[float],
    bandwidth_mibps: float,
    max_downtime_ms: float,
    *,
    working_set_mib: Sequence[float] | None = None,
    auto_converge: bool = False,
    xbzrle: bool = False,
    correction: MigrationCorrection | None = None,
    grid: int = 64,
) -> np.ndarray:
    """`max_live_dirty_mibps` of many guests in one batch (one correction call for all of them; guests of
    one size share their answer)."""
    mem_all = np.asarray(mem_mib, dtype=float)
    ws_all = mem_all if working_set_mib is None else np.asarray(working_set_mib, dtype=float)
    sizes = np.column_stack([mem_all, ws_all])
    unique, back = np.unique(sizes, axis=0, return_inverse=True)
    mem, ws = unique[:, 0], unique[:, 1]
    rates = np.concatenate([[0.0], np.geomspace(0.01 * bandwidth_mibps, 4 * bandwidth_mibps, grid - 1)])
    frame = pd.DataFrame(
        {
            "mem_mib": np.repeat(mem, grid),
            "working_set_mib": np.repeat(ws, grid),
            "dirty_mibps": np.tile(rates, len(mem)),
            "bandwidth_mibps": bandwidth_mibps,
            "max_downtime_ms": max_downtime_ms,
            "auto_converge": auto_converge,
            "xbzrle": xbzrle,
        }
    )
    ok = predict_migrations(frame, correction)["converges"].to_numpy(bool).reshape(len(mem), grid)
    first_fail = np.where(ok.all(axis=1), grid, np.argmin(ok, axis=1))
    # the rate just below the first failure; the grid's top when none fails, 0 when the idle guest fails
    limits = np.where(first_fail == grid, rates[-1], np.where(first_fail > 0, rates[first_fail - 1], 0.0))
    return limits[back.reshape(-1)]


def fit_correction(path: Path | str, random_state: int = 0) -> MigrationCorrection:
    """The correction fitted on every row of a measured-migrations CSV; refitted when the file changes."""
    p = Path(path)
    try:
        stamp = p.stat().st_mtime_ns
    except FileNotFoundError:
        raise InputError(f"{p}: no such migrations file (run bench/migrations.py)") from None
    return _fit_cached(str(p.resolve()), stamp, random_state)


def configured_correction(measurements: str) -> MigrationCorrection | None:
    """`[migration] measurements`: "" for the analytic model alone, else the correction fitted on that
    CSV (a relative path from the working directory, as every path key)."""
    return fit_correction(measurements) if measurements else None


@lru_cache(maxsize=4)
def _fit_cached(path: str, stamp: int, random_state: int) -> MigrationCorrection:
    from advisor.migration.model import MigrationCorrection

    data = read_measured(Path(path))
    return MigrationCorrection(random_state=random_state).fit(data[list(INPUT_COLUMNS)], data)
