"""Per-step forecasts of one metric at three horizons: the value 5 minutes and 1 hour ahead, and the
peak over the next 24 hours, with the naive and seasonal-naive baselines and a learned change model.

The metric is put on a regular grid (`features.to_grid`), gaps carried forward for the features only
(never for targets). A row is a (VM, origin) pair: features read the grid at or before the origin.

Why the learned model predicts the change from the last value, scaled by the VM's recent variability:
predicting levels was worse (issue 5), and scaling lets one global model serve VMs of 1 core and of
32, of 1 GiB and of 64 GiB. `ChangeForecaster` hides that: it takes the rows' features and predicts
levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from advisor.forecast.features import MIN_COVERAGE, to_grid

HORIZONS_S = {"5min": 300.0, "1h": 3600.0, "24h_peak": 86400.0}
PEAK = "24h_peak"
DAY_S = 86400.0
LAGS_S = (300.0, 600.0, 900.0, 1800.0, 3600.0, 3 * 3600.0)
WINDOWS_S = (3600.0, 6 * 3600.0, DAY_S)
FLOOR_SHARE = 0.01  # the scale floor as a share of the metric's mean level over the history given


@dataclass(frozen=True)
class MetricGrid:
    """One metric of every VM on a regular grid: `raw` has NaN where no sample fell, `filled` carries
    the last sample forward (NaN before a VM's first sample)."""

    vms: tuple[str, ...]
    times: pd.DatetimeIndex
    step_s: float
    raw: np.ndarray  # (vms, times)
    filled: np.ndarray  # (vms, times)

    def steps(self, seconds: float) -> int:
        """Whole grid steps in `seconds` (at least one)."""
        return max(1, round(seconds / self.step_s))


def metric_grid(metrics: pd.DataFrame, metric: str) -> MetricGrid:
    """`metric` (cpu_cores or mem_mib) of every VM in the metrics frame on its regular grid."""
    grid = to_grid(metrics, list(pd.unique(metrics["vm"])))
    raw = {"cpu_cores": grid.cpu, "mem_mib": grid.mem}[metric]
    filled = pd.DataFrame(raw.T).ffill().to_numpy().T
    return MetricGrid(grid.vms, grid.times, grid.step_s, raw, filled)


@dataclass(frozen=True)
class HorizonRows:
    """Features, baselines and target of (VM, origin) rows for one horizon."""

    vm: np.ndarray  # row -> VM index in the grid
    origin: np.ndarray  # row -> grid index of the origin
    X: pd.DataFrame  # features, plus `base` (the naive forecast) and `scale` for ChangeForecaster
    naive: np.ndarray
    seasonal: np.ndarray  # NaN where the day before is not in the grid
    target: np.ndarray  # NaN where unobserved (past the grid end or a gap)


def _rolling(values: np.ndarray, width: int, stat: str, min_periods: int) -> np.ndarray:
    """A trailing-window statistic at every grid index, NaN-skipping (pandas' O(n) rolling)."""
    frame = pd.DataFrame(values.T).rolling(width, min_periods=min_periods)
    return np.asarray(getattr(frame, stat)().to_numpy().T)


def _at(values: np.ndarray, vm: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """values[vm, idx], NaN where idx falls outside the grid."""
    n_t = values.shape[1]
    inside = (idx >= 0) & (idx < n_t)
    return np.where(inside, values[vm, np.clip(idx, 0, n_t - 1)], np.nan)


def previous_day_end(times: pd.DatetimeIndex, origins: np.ndarray) -> np.ndarray:
    """Grid index of the last point before the UTC day of each origin began (-1 if none)."""
    day_start = times[origins].floor("D")
    return np.searchsorted(times.asi8, day_start.asi8, side="left") - 1


def scale_floor(grid: MetricGrid, end: int) -> float:
    """FLOOR_SHARE of the mean level of all VMs before grid index `end` (the training part).

    Why: a VM idle at 0 has no variability, and without a floor its scaled changes explode and the
    leaves it shares with busy VMs predict wild changes for them."""
    level = float(np.nanmean(grid.filled[:, :end])) if np.isfinite(grid.filled[:, :end]).any() else 0.0
    return max(FLOOR_SHARE * level, 1e-9)


def horizon_rows(
    grid: MetricGrid, horizon: str, vm: np.ndarray, origin: np.ndarray, floor: float
) -> HorizonRows:
    """The rows (vm[i], origin[i]) for `horizon` (a HORIZONS_S key).

    Baselines: naive is the last value (for the peak, the max of the last 24 h); seasonal naive the value
    one day before the target time (for the peak, the max of the previous UTC day). The peak target is
    the max over (origin, origin + 24 h] and needs MIN_COVERAGE of its samples. Changes are scaled by
    the VM's 24-h std + 10% of its 24-h mean + `floor` (see `scale_floor`)."""
    if horizon not in HORIZONS_S:
        raise ValueError(f"horizon must be one of {', '.join(HORIZONS_S)}, got {horizon!r}")
    vm, origin = np.asarray(vm, dtype=np.int64), np.asarray(origin, dtype=np.int64)
    x = grid.filled
    day, h = grid.steps(DAY_S), grid.steps(HORIZONS_S[horizon])
    last = x[vm, origin]
    stats: dict[str, np.ndarray] = {}
    for w_s in WINDOWS_S:
        w = grid.steps(w_s)
        for s in ("mean", "std", "max", "min"):
            stats[f"{s}_{w_s / 3600:g}h"] = _at(_rolling(x, w, s, 1), vm, origin)
    scale = np.nan_to_num(stats["std_24h"]) + 0.1 * np.abs(np.nan_to_num(stats["mean_24h"])) + floor
    if horizon == PEAK:
        naive = stats["max_24h"]
        day_max = _rolling(x, day, "max", 1)
        seasonal = _at(day_max, vm, previous_day_end(grid.times, origin))
        target = _at(_rolling(grid.raw, day, "max", int(np.ceil(MIN_COVERAGE * day))), vm, origin + day)
    else:
        naive = last
        seasonal = _at(x, vm, origin + h - day)
        target = _at(grid.raw, vm, origin + h)
    feats: dict[str, np.ndarray] = {}
    for lag_s in LAGS_S:
        feats[f"d_lag_{lag_s / 60:g}m"] = (_at(x, vm, origin - grid.steps(lag_s)) - last) / scale
    for name, v in stats.items():
        feats[f"d_{name}"] = v / scale if name.startswith("std") else (v - last) / scale
    feats["d_seasonal"] = (seasonal - last) / scale
    feats["d_seasonal_2d"] = (_at(x, vm, origin + (0 if horizon == PEAK else h) - 2 * day) - last) / scale
    feats["yesterday_change"] = (seasonal - _at(x, vm, origin - day)) / scale
    feats["level"] = last / scale
    when = grid.times[origin]
    hour = np.asarray(when.hour + when.minute / 60, dtype=float)
    dow = np.asarray(when.day_of_week, dtype=float) + hour / 24
    feats["hour_sin"], feats["hour_cos"] = np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)
    feats["dow_sin"], feats["dow_cos"] = np.sin(2 * np.pi * dow / 7), np.cos(2 * np.pi * dow / 7)
    X = pd.DataFrame({**feats, "base": naive, "scale": scale})
    return HorizonRows(vm, origin, X, naive, seasonal, target)


def naive_forecast(rows: HorizonRows) -> np.ndarray:
    return rows.naive


def seasonal_naive_forecast(rows: HorizonRows) -> np.ndarray:
    """The seasonal value, the naive one where the day before is not in the history."""
    return np.where(np.isnan(rows.seasonal), rows.naive, rows.seasonal)


class ChangeForecaster(RegressorMixin, BaseEstimator):
    """A global quantile GBM of the scaled change from the naive forecast (the last value; for the peak,
    the last 24 h's max); predicts levels, clipped at 0.

    X is `HorizonRows.X`: every column but `base` and `scale` is a feature; y is the level target.
    Rows are weighted by their scale (resampled in proportion to it), so the pinball loss is the one of
    the level in units: the MAE in cores or MiB, which big VMs dominate, is what is minimised, not a
    per-VM relative error.
    One OpenMP thread, as QuantileGBMForecaster (threads spin on a busy 2-core machine)."""

    def __init__(
        self,
        quantile: float = 0.5,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 31,
        random_state: int | None = 0,
        threads: int = 1,
    ) -> None:
        self.quantile = quantile
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.random_state = random_state
        self.threads = threads

    def fit(self, X: pd.DataFrame, y: Any) -> ChangeForecaster:
        y = np.asarray(y, dtype=float)
        scale = X["scale"].to_numpy(float)
        change = (y - X["base"].to_numpy(float)) / scale
        ok = np.isfinite(change)
        if not ok.any():
            raise ValueError("no row with a finite target and last value to fit on")
        # Weighting by resampling: HistGradientBoostingRegressor's weighted binning (sklearn 1.9) took
        # 40x longer than the boosting itself.
        rng = np.random.default_rng(self.random_state)
        weight = scale[ok] / scale[ok].sum()
        pick = rng.choice(int(ok.sum()), size=int(ok.sum()), replace=True, p=weight)
        self.columns_ = [c for c in X.columns if c not in ("base", "scale") and X[c].notna().any()]
        model = HistGradientBoostingRegressor(
            loss="quantile",
            quantile=self.quantile,
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            early_stopping=False,
            random_state=self.random_state,
        )
        with threadpool_limits(self.threads, user_api="openmp"):
            self.model_ = model.fit(X.loc[ok, self.columns_].to_numpy(float)[pick], change[ok][pick])
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "model_")
        with threadpool_limits(self.threads, user_api="openmp"):
            change = self.model_.predict(X[self.columns_].to_numpy(float))
        return np.clip(X["base"].to_numpy(float) + X["scale"].to_numpy(float) * change, 0, None)


def sample_pairs(n_vms: int, origins: np.ndarray, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Up to `size` distinct (vm, origin) pairs drawn uniformly: training on a sample keeps fitting
    time bounded whatever the fleet and history (issue 5: 500 VMs x 21 days in 5 minutes)."""
    total = n_vms * len(origins)
    rng = np.random.default_rng(seed)
    flat = rng.choice(total, size=min(size, total), replace=False) if total > size else np.arange(total)
    return flat // len(origins), np.asarray(origins)[flat % len(origins)]


def fit_quantiles(
    rows: HorizonRows, quantiles: Sequence[float] = (0.5, 0.95), **params: Any
) -> dict[float, ChangeForecaster]:
    """One ChangeForecaster per quantile, on the rows with an observed target."""
    ok = np.isfinite(rows.target) & np.isfinite(rows.naive)
    X, y = rows.X[ok], rows.target[ok]
    return {q: ChangeForecaster(quantile=q, **params).fit(X, y) for q in quantiles}


def coverage(target: np.ndarray, upper: np.ndarray) -> float:
    """Share of targets at or below their upper forecast."""
    return float(np.mean(np.asarray(target) <= np.asarray(upper)))


def mae(target: np.ndarray, forecast: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(target) - np.asarray(forecast))))
