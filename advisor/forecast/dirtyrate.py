"""Forecasts of the memory dirty rate (`dirty_mibps`, MiB/s, measured by the libvirt collector) that the
pre-copy migration model needs: whether a migration converges depends on the rate during it.

The same global change model as CPU and memory (`HorizonForecaster`: P50 and a calibrated P95, per-VM
fallback to the last value where validation prefers it), defaulting to the 5-minute horizon: a
pre-copy migration lasts seconds to minutes, so the next step's rate is the one it meets.

Missing data, explicitly: a metrics frame without a `dirty_mibps` column, or with no value in it, is
an InputError (nothing to forecast from; CPU and memory forecasts are unaffected). Rows with NaN are
left out, so VMs the collector has no dirty rate for are absent from the forecast rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from advisor.errors import InputError
from advisor.forecast.horizons import (
    HORIZONS_S,
    HorizonForecaster,
    MetricGrid,
    horizon_rows,
    latest_rows,
    metric_grid,
    sample_pairs,
    scale_floor,
)

DIRTY = "dirty_mibps"


class DirtyRateForecaster(HorizonForecaster):
    """HorizonForecaster for `dirty_mibps` rows (HorizonRows.X of a `dirty_grid`), 5 min ahead by
    default; fit, predict (P50) and predict_quantiles ({0.5, upper}) as there."""

    def __init__(
        self,
        horizon: str = "5min",
        upper: float = 0.95,
        valid_share: float = 0.2,
        max_train_rows: int = 100_000,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 20,
        random_state: int | None = 0,
        threads: int = 1,
        n_jobs: int | None = None,
    ) -> None:
        super().__init__(
            horizon=horizon,
            upper=upper,
            valid_share=valid_share,
            max_train_rows=max_train_rows,
            max_iter=max_iter,
            learning_rate=learning_rate,
            max_leaf_nodes=max_leaf_nodes,
            min_samples_leaf=min_samples_leaf,
            random_state=random_state,
            threads=threads,
            n_jobs=n_jobs,
        )


def dirty_grid(metrics: pd.DataFrame) -> MetricGrid:
    """The dirty rate of every VM that has one, on its regular grid; InputError when none has."""
    return metric_grid(metrics, DIRTY)


@dataclass(frozen=True)
class FittedDirtyRate:
    """A fitted dirty-rate forecaster and the scale floor its rows were built with (predictions must
    use the same)."""

    model: DirtyRateForecaster
    floor: float


def fit_dirty_rate(
    metrics: pd.DataFrame, train_rows: int = 300_000, seed: int = 0, **params: Any
) -> FittedDirtyRate:
    """Fit on every (VM, origin) pair of the history whose target is observed (a uniform sample of
    `train_rows` beyond that); `params` go to DirtyRateForecaster."""
    grid = dirty_grid(metrics)
    model = DirtyRateForecaster(random_state=seed, **params)
    n_t = len(grid.times)
    origins = np.arange(0, n_t - grid.steps(HORIZONS_S[model.horizon]))
    floor = scale_floor(grid, n_t)
    rows = horizon_rows(grid, model.horizon, *sample_pairs(len(grid.vms), origins, train_rows, seed), floor)
    ok = np.isfinite(rows.target) & np.isfinite(rows.naive)
    try:
        model.fit(rows.X[ok], rows.target[ok])
    except ValueError:
        span_h = (grid.times[-1] - grid.times[0]).total_seconds() / 3600
        raise InputError(
            f"metrics: {DIRTY} covers {span_h:.1f} h, too little to learn a {model.horizon} forecast from"
        ) from None
    return FittedDirtyRate(model, floor)


def forecast_dirty_rate(fitted: FittedDirtyRate, metrics: pd.DataFrame) -> pd.DataFrame:
    """Every VM's dirty rate ahead from its last sample: columns vm, p50_mibps, upper_mibps."""
    grid = dirty_grid(metrics)
    q = fitted.model.predict_quantiles(latest_rows(grid, fitted.model.horizon, fitted.floor).X)
    return pd.DataFrame({"vm": grid.vms, "p50_mibps": q[0.5], "upper_mibps": q[fitted.model.upper]})
