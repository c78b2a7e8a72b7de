"""Short-term forecasts in the product: the multi-horizon forecaster (`horizons.HorizonForecaster`) of
each metric, trained by `advisor train` beside the planner's forecaster, backtested, registered in the
same version and used by the forecast stage (`forecast-ahead.csv`).

What it forecasts: CPU and memory 5 min and 1 h ahead and their peak over the next 24 h, the dirty
rate 5 min ahead when the history has one (a migration meets the next minutes' rate); each as a P50
and a calibrated P95 (`forecast.ahead_horizons` chooses the horizons; empty: none).

How the history's VM batches are used: each batch goes on its own grid with its own scale floor
(`horizons.scale_floor`: 1% of the batch's mean level before its test days) and gives its share of
the training and test rows, in proportion to its VMs. Forecasts use the VM-weighted mean of the
batches' floors.

Backtest: each batch's last `forecast.ahead_test_days` of origins whose targets are observed are held
out; a model fitted on the rows whose targets end before them is scored there against the naive,
seasonal-naive and moving-average baselines, with `advisor.forecast.backtest`'s figures (MAE, MASE
against the in-sample naive MAE, pinball losses, P95 coverage). The registered models are fitted
again on every row.

Limitations: one held-out span, not rolling origins: those put the whole fleet's grid in memory,
which the batches avoid; `advisor backtest` (`rolling_backtest`) runs them on collected metrics with
the same settings, `bench/forecast.py` on the benchmark's split. These figures are reported, not a bar
to promotion: the planner's forecaster decides it (the short-term models fall back to naive per VM
where validation prefers it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from advisor.config import ForecastSettings
from advisor.errors import InputError
from advisor.forecast.backtest import FORECASTERS, ErrorSums, add_errors, backtest
from advisor.forecast.dirtyrate import DIRTY, DirtyRateForecaster
from advisor.forecast.horizons import (
    HORIZONS_S,
    PARTNER_OF,
    HorizonForecaster,
    MetricGrid,
    MovingAverageBaseline,
    Partner,
    TooLittleHistory,
    aligned,
    horizon_rows,
    latest_rows,
    metric_grid,
    sample_pairs,
    scale_floor,
)

METRICS = ("cpu_cores", "mem_mib")
DIRTY_HORIZONS = ("5min",)
COLUMNS = ("vm", "metric", "horizon", "p50", "p95")  # of forecast_ahead's frame and forecast-ahead.csv

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def key_of(metric: str, horizon: str) -> str:
    return f"{metric}/{horizon}"


def keys(settings: ForecastSettings, metrics: pd.DataFrame) -> list[tuple[str, str]]:
    """(metric, horizon) pairs to forecast from `metrics`: CPU and memory at every ahead horizon, the
    dirty rate at those of DIRTY_HORIZONS when it has a value."""
    out: list[tuple[str, str]] = [(m, h) for m in METRICS for h in settings.ahead_horizons]
    if DIRTY in metrics.columns and metrics[DIRTY].notna().any():
        out += [(DIRTY, h) for h in settings.ahead_horizons if h in DIRTY_HORIZONS]
    return out


def grids(metrics: pd.DataFrame, names: list[str]) -> dict[str, MetricGrid]:
    """The grid of each metric in `names` that has a value (its VMs: those with a value)."""
    return {m: metric_grid(metrics, m) for m in names if m in metrics.columns and metrics[m].notna().any()}


def _partner(metric: str, by_metric: Mapping[str, MetricGrid], floors: Mapping[str, float]) -> Partner | None:
    """The other metric (memory for CPU and back) on `metric`'s grid, for the partner features."""
    other = PARTNER_OF.get(metric, "")
    if other not in by_metric:
        return None
    return Partner(aligned(by_metric[other], by_metric[metric]), floors[other])


def make_forecaster(metric: str, horizon: str, settings: ForecastSettings) -> HorizonForecaster:
    common: dict[str, Any] = {"max_iter": settings.ahead_max_iter, "random_state": settings.seed}
    if metric == DIRTY:
        return DirtyRateForecaster(horizon=horizon, n_jobs=settings.ahead_jobs, **common)
    return HorizonForecaster(horizon=horizon, n_jobs=settings.ahead_jobs, **common)


@dataclass
class _Rows:
    X: list[pd.DataFrame] = field(default_factory=list)
    y: list[np.ndarray] = field(default_factory=list)
    before: list[np.ndarray] = field(default_factory=list)  # the target ends before the test origins

    def add(self, X: pd.DataFrame, y: np.ndarray, before: np.ndarray) -> None:
        self.X.append(X)
        self.y.append(y)
        self.before.append(before)

    def joined(self) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        return (
            pd.concat(self.X, ignore_index=True),
            np.concatenate(self.y),
            np.concatenate(self.before),
        )


@dataclass
class AheadRows:
    """Training and test rows of every (metric, horizon), gathered one VM batch at a time (`add`)."""

    settings: ForecastSettings
    inventory_vms: int
    train: dict[str, _Rows] = field(default_factory=dict)
    test: dict[str, _Rows] = field(default_factory=dict)
    floors: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # metric -> (floor, VMs)
    test_from: dict[str, pd.Timestamp] = field(default_factory=dict)
    wanted: set[str] = field(default_factory=set)  # keys asked for, with rows or not

    def add(self, batch: pd.DataFrame, index: int) -> None:
        """The rows of one batch of whole VMs (validated metrics); `index` seeds its samples."""
        s = self.settings
        wanted = keys(s, batch)
        if not wanted:
            return
        self.wanted |= {key_of(m, h) for m, h in wanted}
        by_metric = grids(batch, sorted({m for m, _ in wanted}))
        test_span = {m: g.steps(s.ahead_test_days * 86400) for m, g in by_metric.items()}
        floors = {m: scale_floor(g, max(1, len(g.times) - test_span[m])) for m, g in by_metric.items()}
        for metric, grid in by_metric.items():
            self.floors.setdefault(metric, []).append((floors[metric], len(grid.vms)))
        for metric, horizon in wanted:
            grid = by_metric[metric]
            ahead = grid.steps(HORIZONS_S[horizon])
            last = len(grid.times) - ahead  # origins before it have their target in the grid
            first_test = last - test_span[metric]
            if first_test - ahead <= 0:
                continue  # too short for this horizon: the key learns from other batches or not at all
            share = len(grid.vms) / max(self.inventory_vms, len(grid.vms))
            partner = _partner(metric, by_metric, floors)
            seed = 1000 * s.seed + 2 * index
            pairs = sample_pairs(len(grid.vms), np.arange(last), _rows(s.ahead_train_rows, share), seed)
            train = horizon_rows(grid, horizon, *pairs, floors[metric], partner)
            origins = np.arange(first_test, last)
            pairs = sample_pairs(len(grid.vms), origins, _rows(s.ahead_test_rows, share), seed + 1)
            test = horizon_rows(grid, horizon, *pairs, floors[metric], partner)
            k = key_of(metric, horizon)
            ok = np.isfinite(train.target) & np.isfinite(train.naive)
            self.train.setdefault(k, _Rows()).add(
                train.X[ok], train.target[ok], (train.origin + ahead <= first_test)[ok]
            )
            ok = np.isfinite(test.target) & np.isfinite(test.naive)
            self.test.setdefault(k, _Rows()).add(test.X[ok], test.target[ok], np.ones(int(ok.sum()), bool))
            start = grid.times[first_test]
            self.test_from[k] = min(self.test_from.get(k, start), start)


def _rows(cap: int, share: float) -> int:
    return max(1, int(np.ceil(cap * share)))


class AheadForecaster(BaseEstimator):
    """The fitted HorizonForecaster of each (metric, horizon) key ("cpu_cores/1h") and the scale floor
    of each metric its forecasts use. What a registered version holds beside the planner's models."""

    def __init__(
        self, models: Mapping[str, HorizonForecaster] | None = None, floors: Mapping[str, float] | None = None
    ) -> None:
        self.models = models
        self.floors = floors


def fit_ahead(
    rows: AheadRows, progress: Progress = _quiet
) -> tuple[AheadForecaster | None, dict[str, dict[str, Any]]]:
    """Backtest and fit every key of `rows`: the forecaster (None when no key had rows) and, per key,
    the backtest figures for the model card."""
    s = rows.settings
    fitted: dict[str, HorizonForecaster] = {}
    report: dict[str, dict[str, Any]] = {}
    for i, (k, train) in enumerate(sorted(rows.train.items())):
        metric, horizon = k.split("/")
        progress(f"short-term forecasts: {k} ({i + 1} of {len(rows.train)}), backtest and fit")
        X, y, before = train.joined()
        Xt, yt, _ = rows.test[k].joined()
        try:
            held = make_forecaster(metric, horizon, s).fit(X[before], y[before])
        except TooLittleHistory as e:
            report[k] = {"note": f"no backtest: too little history before the test days ({e})"}
        else:
            report[k] = _scores(held, X[before], y[before], Xt, yt) | {"from": rows.test_from[k].isoformat()}
        try:
            fitted[k] = make_forecaster(metric, horizon, s).fit(X, y)
        except TooLittleHistory as e:
            report[k] = {"note": f"not fitted: too little history ({e})"}
    for k in sorted(rows.wanted - set(rows.train)):
        days = s.ahead_test_days + 2 * HORIZONS_S[k.split("/")[1]] / 86400
        note = f"not trained: no VM has more than {days:g} days of history (test days + 2 horizons)"
        report[k] = {"note": note}
    floors = {m: _mean_floor(got) for m, got in rows.floors.items()}
    return (AheadForecaster(fitted, floors) if fitted else None), report


def _mean_floor(floors: list[tuple[float, int]]) -> float:
    """The batches' floors weighted by their VMs."""
    value, vms = np.array(floors, dtype=float).T
    return float(np.average(value, weights=vms))


def _scores(
    model: HorizonForecaster, X: pd.DataFrame, y: np.ndarray, Xt: pd.DataFrame, yt: np.ndarray
) -> dict[str, Any]:
    """The backtest figures of the model and the baselines on the test rows, MASE against the naive
    MAE on the training rows."""
    sums = {f: ErrorSums() for f in FORECASTERS}
    add_errors(sums, model, MovingAverageBaseline().fit(X, y), Xt, yt)
    scale = float(np.mean(np.abs(y - X["base"].to_numpy(float))))
    scale = scale if scale > 0 else float("nan")  # a flat history: no MASE
    figures = {  # JSON-able: a figure a forecaster has not (no P95, no naive error to scale by) is left out
        f: {n: v for n, v in sums[f].figures(scale).items() if n != "rows" and np.isfinite(v)}
        for f in FORECASTERS
    }
    baselines = {f: figures[f]["mae"] for f in FORECASTERS if f != "model"}
    best = min(baselines, key=baselines.__getitem__)
    return {
        "rows": len(yt),
        "figures": figures,
        "best_baseline": best,
        "ratio": figures["model"]["mae"] / baselines[best] if baselines[best] > 0 else None,
        "naive_vms": len(model.naive_vms_),
    }


def rolling_backtest(
    metrics: pd.DataFrame, settings: ForecastSettings, progress: Progress = _quiet
) -> pd.DataFrame:
    """`advisor.forecast.backtest.backtest` of the keys `advisor train` would train from `metrics`, with
    its settings: `backtest_folds` folds of `ahead_test_days`. The tidy frame of that function."""
    pairs = keys(settings, metrics)
    if not pairs:
        raise InputError("backtest: forecast.ahead_horizons is empty, so there is nothing to backtest")
    params: dict[str, Any] = {
        "max_iter": settings.ahead_max_iter,
        "random_state": settings.seed,
        "n_jobs": settings.ahead_jobs,
    }
    common: dict[str, Any] = {
        "folds": settings.backtest_folds,
        "test_days": settings.ahead_test_days,
        "train_rows": settings.ahead_train_rows,
        "progress": progress,
    }
    frames = [backtest(metrics, METRICS, settings.ahead_horizons, params=params, **common)]
    dirty = [h for m, h in pairs if m == DIRTY]
    if dirty:
        as_trained = params | {"valid_share": DirtyRateForecaster().valid_share}  # make_forecaster's
        frames.append(backtest(metrics, (DIRTY,), dirty, params=as_trained, **common))
    return pd.concat(frames, ignore_index=True)


def fold_means(tidy: pd.DataFrame) -> pd.DataFrame:
    """The figures of a rolling backtest averaged over its folds: one row per metric, horizon and
    forecaster (MASE: the mean of the folds' MASE, each against its own in-sample naive error)."""
    figures = [c for c in tidy.columns if c not in ("metric", "horizon", "fold", "test_start", "forecaster")]
    return tidy.groupby(["metric", "horizon", "forecaster"], sort=False)[figures].mean().reset_index()


SUMMARY_COLUMNS = ("metric/horizon", "rows", "model MAE", "best baseline", "its MAE", "ratio", "P95 coverage")


def summary_rows(backtests: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """fit_ahead's backtests as text cells under SUMMARY_COLUMNS (for the CLI and the model card); a key
    without a backtest has its note in the second cell."""
    out = []
    for k, a in backtests.items():
        if "figures" not in a:
            out.append([k, a["note"], "", "", "", "", ""])
            continue
        m, b = a["figures"]["model"], a["figures"][a["best_baseline"]]
        ratio = "-" if a["ratio"] is None else f"{a['ratio']:.3f}"
        cells = [f"{a['rows']:,}", f"{m['mae']:.4g}", a["best_baseline"], f"{b['mae']:.4g}", ratio]
        out.append([k, *cells, f"{m['coverage_95']:.3f}"])
    return out


def forecast_ahead(model: AheadForecaster, metrics: pd.DataFrame) -> pd.DataFrame:
    """Every VM's P50 and P95 at each key of `model` from its last sample (columns COLUMNS, in the
    metric's units). Metrics without a value in `metrics` are left out."""
    models, floors = model.models or {}, model.floors or {}
    by_metric = grids(metrics, sorted({k.split("/")[0] for k in models}))
    frames = []
    for k, m in models.items():
        metric, horizon = k.split("/")
        if metric not in by_metric:
            continue
        rows = latest_rows(by_metric[metric], horizon, floors[metric], _partner(metric, by_metric, floors))
        q = m.predict_quantiles(rows.X)
        frames.append(
            pd.DataFrame(
                {
                    "vm": by_metric[metric].vms,
                    "metric": metric,
                    "horizon": horizon,
                    "p50": q[0.5],
                    "p95": q[m.upper],
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
