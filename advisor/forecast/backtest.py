"""Rolling-origin backtests of the horizon forecasters against the naive, seasonal-naive and
moving-average baselines: MAE, MASE, pinball loss (P50, P95) and P95 coverage per metric and horizon.

A fold trains on everything before its cut and is scored on the origins of the following span, every
VM at every grid step: the same rows for every forecaster. MASE divides by the naive forecast's MAE
on the fold's training origins at that horizon (in-sample), pooled over VMs like the MAE itself, so a
value below 1 beats the last value by that share and figures of CPU in cores and of memory in MiB
compare. Pure: metrics DataFrames in, tidy DataFrames out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from advisor.errors import InputError
from advisor.forecast.horizons import (
    HORIZONS_S,
    PARTNER_OF,
    HorizonForecaster,
    HorizonRows,
    MetricGrid,
    MovingAverageBaseline,
    NaiveBaseline,
    Partner,
    SeasonalNaiveBaseline,
    aligned,
    horizon_rows,
    metric_grid,
    sample_pairs,
    scale_floor,
)

FORECASTERS = ("model", "naive", "seasonal_naive", "moving_average")
FIGURES = ("mae", "mase", "pinball_50", "pinball_95", "coverage_95", "rows")
VM_BLOCK = 100  # VMs whose test rows are built at once: bounds memory on long test spans
SCALE_ROWS = 200_000  # (VM, origin) pairs the in-sample naive MAE is measured on at most


def pinball(target: np.ndarray, forecast: np.ndarray, quantile: float) -> float:
    """Mean pinball (quantile) loss: under-forecasts cost `quantile` per unit, over-forecasts the rest."""
    diff = np.asarray(target, dtype=float) - np.asarray(forecast, dtype=float)
    return float(np.mean(np.maximum(quantile * diff, (quantile - 1) * diff)))


def mase(target: np.ndarray, forecast: np.ndarray, scale: float) -> float:
    """MAE over `scale`, the in-sample naive MAE at the same horizon (`insample_naive_mae`)."""
    return float(np.mean(np.abs(np.asarray(target) - np.asarray(forecast)))) / scale


def insample_naive_mae(grid: MetricGrid, horizon: str, end: int, seed: int = 0) -> float:
    """The naive forecast's MAE on origins whose target is before grid index `end` (at most
    SCALE_ROWS sampled pairs: exact on small grids, an estimate on large ones)."""
    origins = np.arange(0, end - grid.steps(HORIZONS_S[horizon]))
    if origins.size == 0:
        raise InputError(f"backtest: no training origin for the {horizon} horizon")
    rows = horizon_rows(grid, horizon, *sample_pairs(len(grid.vms), origins, SCALE_ROWS, seed), floor=1.0)
    ok = np.isfinite(rows.target) & np.isfinite(rows.naive)
    if not ok.any():
        raise InputError(f"backtest: no observed target in the training part for the {horizon} horizon")
    return float(np.mean(np.abs(rows.target[ok] - rows.naive[ok])))


@dataclass
class ErrorSums:
    """Running sums of one forecaster's errors over test blocks."""

    abs_err: float = 0.0
    pin50: float = 0.0
    pin95: float = 0.0
    covered: float = 0.0
    n: int = 0
    has_upper: bool = False

    def add(self, y: np.ndarray, p50: np.ndarray, upper: np.ndarray | None) -> None:
        self.abs_err += float(np.abs(y - p50).sum())
        self.pin50 += pinball(y, p50, 0.5) * len(y)
        if upper is not None:
            self.has_upper = True
            self.pin95 += pinball(y, upper, 0.95) * len(y)
            self.covered += float((y <= upper).sum())
        self.n += len(y)

    def figures(self, scale: float) -> dict[str, float]:
        n = max(self.n, 1)
        missing = float("nan")
        return {
            "mae": self.abs_err / n,
            "mase": self.abs_err / n / scale,
            "pinball_50": self.pin50 / n,
            "pinball_95": self.pin95 / n if self.has_upper else missing,
            "coverage_95": self.covered / n if self.has_upper else missing,
            "rows": float(self.n),
        }


def add_errors(
    sums: Mapping[str, ErrorSums],
    model: HorizonForecaster,
    moving: MovingAverageBaseline,
    X: pd.DataFrame,
    y: np.ndarray,
) -> None:
    """Every forecaster's errors on the rows X (HorizonRows.X) with observed targets y, into `sums`
    (one per FORECASTERS)."""
    q = model.predict_quantiles(X)
    sums["model"].add(y, q[0.5], q[model.upper])
    sums["naive"].add(y, NaiveBaseline().fit(X).predict(X), None)
    sums["seasonal_naive"].add(y, SeasonalNaiveBaseline().fit(X).predict(X), None)
    sums["moving_average"].add(y, moving.predict(X), None)


@dataclass(frozen=True)
class SplitResult:
    """One train/test split of one metric and horizon: figures per forecaster and the fitted model."""

    figures: pd.DataFrame  # index FORECASTERS, columns FIGURES
    model: HorizonForecaster
    moving_average: MovingAverageBaseline
    naive_insample_mae: float
    fit_s: float  # training rows' features, the fits, validation and refit
    test_s: float


def evaluate_split(
    grid: MetricGrid,
    horizon: str,
    first_test: int,
    end: int | None = None,
    params: Mapping[str, Any] | None = None,
    train_rows: int = 300_000,
    test_every: int = 1,
    seed: int = 0,
    partner: MetricGrid | None = None,
) -> SplitResult:
    """Fit on targets before grid index `first_test`, score every VM at origins first_test, first_test
    + test_every, ... before `end` (default: the grid end). `params` go to HorizonForecaster; `partner`
    is the other metric's grid (see horizons.Partner)."""
    n_t = len(grid.times)
    end = n_t if end is None else min(end, n_t)
    ahead = grid.steps(HORIZONS_S[horizon])
    train_origins = np.arange(0, first_test - ahead)
    if train_origins.size == 0 or first_test >= end:
        raise InputError(
            f"backtest: the split at {grid.times[min(first_test, n_t - 1)]} leaves no "
            f"training or no test data for the {horizon} horizon"
        )
    t0 = time.perf_counter()
    floor = scale_floor(grid, first_test)
    other = None if partner is None else Partner(partner, scale_floor(partner, first_test))
    pairs = sample_pairs(len(grid.vms), train_origins, train_rows, seed)
    train = horizon_rows(grid, horizon, *pairs, floor, other)
    ok = np.isfinite(train.target) & np.isfinite(train.naive)
    if not ok.any():
        raise InputError(f"backtest: no observed target before the split for the {horizon} horizon")
    try:
        model = HorizonForecaster(horizon=horizon, **dict(params or {})).fit(train.X[ok], train.target[ok])
    except ValueError as e:
        raise InputError(f"backtest: too little history before {grid.times[first_test]} ({e})") from None
    moving = MovingAverageBaseline().fit(train.X[ok], train.target[ok])
    t1 = time.perf_counter()
    scale = insample_naive_mae(grid, horizon, first_test, seed)
    sums = {f: ErrorSums() for f in FORECASTERS}
    origins = np.arange(first_test, end, test_every)
    for _, rows, keep in scored_blocks(grid, horizon, origins, floor, other):
        add_errors(sums, model, moving, rows.X[keep], rows.target[keep])
    if sums["model"].n == 0:
        raise InputError(f"backtest: no observed target after the split for the {horizon} horizon")
    figures = pd.DataFrame({f: s.figures(scale) for f, s in sums.items()}).T.loc[list(FORECASTERS)]
    return SplitResult(figures, model, moving, scale, t1 - t0, time.perf_counter() - t1)


def scored_blocks(
    grid: MetricGrid, horizon: str, origins: np.ndarray, floor: float, partner: Partner | None = None
) -> Iterator[tuple[slice, HorizonRows, np.ndarray]]:
    """Every VM's rows at `origins`, VM_BLOCK VMs at a time (bounds memory on long test spans): the
    block's VMs, its rows and which of them have an observed target and naive value. Blocks without
    any are skipped."""
    for start in range(0, len(grid.vms), VM_BLOCK):
        block = slice(start, start + VM_BLOCK)
        sub = _vm_block(grid, block)
        other = None if partner is None else Partner(_vm_block(partner.grid, block), partner.floor)
        n_vm = len(sub.vms)
        rows = horizon_rows(
            sub, horizon, np.repeat(np.arange(n_vm), len(origins)), np.tile(origins, n_vm), floor, other
        )
        keep = np.isfinite(rows.target) & np.isfinite(rows.naive)
        if keep.any():
            yield block, rows, keep


def _vm_block(grid: MetricGrid, block: slice) -> MetricGrid:
    return MetricGrid(grid.vms[block], grid.times, grid.step_s, grid.raw[block], grid.filled[block])


def backtest(
    metrics: pd.DataFrame,
    metric_names: Sequence[str] = ("cpu_cores", "mem_mib"),
    horizons: Sequence[str] = tuple(HORIZONS_S),
    folds: int = 3,
    test_days: float = 1.0,
    params: Mapping[str, Any] | None = None,
    train_rows: int = 300_000,
    test_every: int = 1,
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Rolling-origin backtest over the last `folds` spans of `test_days` origins (per horizon, ending
    at the last origin whose target is observed): fold k trains on all history before its span (an
    expanding window) and is scored on it. CPU and memory each have the other as partner
    (horizons.Partner) when both are backtested. `progress` hears of each split before it is fitted.

    One row per (metric, horizon, fold, forecaster): columns metric, horizon, fold, test_start,
    forecaster and FIGURES."""
    if folds < 1 or test_days <= 0:
        raise InputError(f"backtest: folds must be >= 1 and test_days > 0, got {folds} and {test_days:g}")
    out = []
    grids = {name: metric_grid(metrics, name) for name in metric_names}
    for name, grid in grids.items():  # every split checked before minutes of fitting
        for horizon in horizons:
            ahead, span = grid.steps(HORIZONS_S[horizon]), grid.steps(test_days * 86400)
            if len(grid.times) - ahead - folds * span - ahead <= 0:
                days = (folds * test_days) + 2 * HORIZONS_S[horizon] / 86400
                have = (grid.times[-1] - grid.times[0]).total_seconds() / 86400
                raise InputError(
                    f"backtest: {folds} fold(s) of {test_days:g} day(s) at the {horizon} horizon need more "
                    f"than {days:g} days of {name} history (there are {have:.2f}): use fewer folds, shorter "
                    "test days or leave that horizon out"
                )
    splits, done = len(grids) * folds * len(horizons), 0
    for name, grid in grids.items():
        other = PARTNER_OF.get(name, "")
        partner = aligned(grids[other], grid) if other in grids else None
        span = grid.steps(test_days * 86400)
        for fold in range(folds):
            for horizon in horizons:
                done += 1
                if progress is not None:
                    progress(f"{name} {horizon}, fold {fold + 1} of {folds} ({done} of {splits})")
                # the last fold's last origin is the last one whose target is in the grid
                last = len(grid.times) - grid.steps(HORIZONS_S[horizon])
                first_test = last - (folds - fold) * span
                result = evaluate_split(
                    grid,
                    horizon,
                    first_test,
                    first_test + span,
                    params,
                    train_rows,
                    test_every,
                    seed=fold,
                    partner=partner,
                )
                frame = result.figures.rename_axis("forecaster").reset_index()
                frame.insert(0, "test_start", grid.times[max(first_test, 0)])
                frame.insert(0, "fold", fold)
                frame.insert(0, "horizon", horizon)
                frame.insert(0, "metric", name)
                out.append(frame)
    tidy = pd.concat(out, ignore_index=True)
    tidy["rows"] = tidy["rows"].astype(int)
    return tidy
