"""Per-step forecasts of one metric at three horizons: the value 5 minutes and 1 hour ahead, and the
peak over the next 24 hours, with naive, seasonal-naive and moving-average baselines and a learned
change model.

The metric is put on a regular grid (`features.to_grid`), gaps carried forward for the features only
(never for targets). A row is a (VM, origin) pair: features read the grid at or before the origin,
as changes from the last value scaled by the VM's recent variability, so that one global model
serves VMs of 1 core and of 32, of 1 GiB and of 64 GiB.

Why the learned model predicts the change from the last value: predicting levels was worse (issue 5).
`ChangeForecaster` hides that: it takes the rows' features and predicts levels. `HorizonForecaster`
wraps two of them (P50, P95) into the model the advisor uses: fitted on the older part of the rows,
its P95 calibrated and its per-VM fallback to naive chosen on the most recent part, so that no VM gets
a forecast worse than the last value on validation.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from advisor.errors import InputError
from advisor.forecast.features import MIN_COVERAGE, to_grid

HORIZONS_S = {"5min": 300.0, "1h": 3600.0, "24h_peak": 86400.0}
PEAK = "24h_peak"
DAY_S = 86400.0
LAGS_S = (300.0, 600.0, 900.0, 1800.0, 3600.0, 3 * 3600.0)
WINDOWS_S = (900.0, 3600.0, 6 * 3600.0, DAY_S)
MA_WINDOWS_S = (900.0, 3600.0, 3 * 3600.0, 6 * 3600.0)  # moving-average baselines, point horizons
PEAK_MA_DAYS = (2, 3, 7)  # moving averages of the daily peak, peak horizon
FLOOR_SHARE = 0.01  # the scale floor as a share of the metric's mean level over the history given
JUMP = 0.5  # a step change above JUMP x the scale counts as a jump (feature: steps since the last one)
HISTORY_DAYS = 8  # the most history a row's features read
SKILL_DAYS = (1, 7)  # skill features: the days over which a VM's recent errors are averaged
SKILL_EVERY_S = 3600.0  # skill features: the spacing of the error samples
# Gathering a row's window costs about as much as this many grid cells of pandas' rolling statistic
# (timed on a 500 x 8640 grid): below it, rows are gathered; above, the whole span is rolled once.
GATHER_PER_CELL = {"mean": 6, "std": 6, "max": 10, "min": 10, "median": 40}
METRIC_NAMES = ("cpu_cores", "mem_mib", "dirty_mibps")
PARTNER_OF = {"cpu_cores": "mem_mib", "mem_mib": "cpu_cores"}  # see Partner
# Columns of HorizonRows.X that are not model features: the row's identity, the level the change model
# starts from and its scale, and (prefix BASELINE) the baselines' levels.
ID_COLUMNS = ("vm", "origin")
WEEKDAY = ("dow_sin", "dow_cos")
WEEKLY_MIN_DAYS = 14  # days of origins the weekday features need (two of each weekday)
BASELINE = "bl_"


class TooLittleHistory(ValueError):
    """A fit found no row to learn from: the history is too short for the horizon (a ValueError, as
    scikit-learn raises for unfit data, so that callers may tell it from a bad setting)."""


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
    """`metric` (cpu_cores, mem_mib or dirty_mibps) of every VM in the metrics frame on its regular grid.

    Rows where the metric is NaN are left out (a collector that does not measure it for some VMs);
    a metric absent or NaN everywhere is an InputError."""
    if metric not in METRIC_NAMES:
        raise ValueError(f"metric must be one of {', '.join(METRIC_NAMES)}, got {metric!r}")
    if metric not in metrics.columns or not metrics[metric].notna().any():
        raise InputError(f"metrics: no {metric} values to forecast (column absent or empty)")
    metrics = metrics[metrics[metric].notna()]
    grid = to_grid(metrics, list(pd.unique(metrics["vm"])))
    raw = {"cpu_cores": grid.cpu, "mem_mib": grid.mem, "dirty_mibps": grid.dirty}[metric]
    assert raw is not None  # to_grid grids dirty_mibps when the column exists
    filled = pd.DataFrame(raw.T).ffill().to_numpy().T
    return MetricGrid(grid.vms, grid.times, grid.step_s, raw, filled)


def aligned(grid: MetricGrid, like: MetricGrid) -> MetricGrid:
    """`grid` on the VMs and times of `like`, NaN where it has no value (a VM without that metric), as
    a Partner needs."""
    if grid.vms == like.vms and grid.times.equals(like.times):
        return grid
    raw = pd.DataFrame(grid.raw, index=list(grid.vms), columns=grid.times)
    raw = raw.reindex(index=list(like.vms), columns=like.times).to_numpy(float)
    return MetricGrid(like.vms, like.times, like.step_s, raw, pd.DataFrame(raw.T).ffill().to_numpy().T)


@dataclass(frozen=True)
class Partner:
    """The other metric of the same VMs on the same grid (memory for CPU, CPU for memory) and its scale
    floor: its recent moves are features (`partner_features`). Why: a VM whose memory grows is
    starting work its CPU will show, and the reverse (Bitbrains, fitted on days 1-16 and scored on
    days 17-21: 1-h error 0.6% lower for memory and CPU alike; with 200,000 training rows instead of
    100,000, 2% lower for memory, but that puts training past its 5-minute budget)."""

    grid: MetricGrid
    floor: float


@dataclass(frozen=True)
class HorizonRows:
    """Features, baselines and target of (VM, origin) rows for one horizon."""

    vm: np.ndarray  # row -> VM index in the grid
    origin: np.ndarray  # row -> grid index of the origin
    X: pd.DataFrame  # `vm`, `origin`, features, `base` (naive), `scale`, `bl_*` baselines' levels
    naive: np.ndarray
    seasonal: np.ndarray  # NaN where the day before is not in the grid
    target: np.ndarray  # NaN where unobserved (past the grid end or a gap)


def _rolling(values: np.ndarray, width: int, stat: str, min_periods: int) -> np.ndarray:
    """A trailing-window statistic at every grid index, NaN-skipping (pandas' O(n) rolling)."""
    frame = pd.DataFrame(values.T).rolling(width, min_periods=min_periods)
    return np.asarray(getattr(frame, stat)().to_numpy().T)


def _window_block(x: np.ndarray, vm: np.ndarray, idx: np.ndarray, width: int) -> np.ndarray:
    """x[vm, idx - width + 1 .. idx] as a (rows, width) copy, NaN off the grid: read through a sliding
    window view (ten times faster than fancy indexing by position), the rows at the edges apart."""
    n_t = x.shape[1]
    start = idx - width + 1
    inside = (start >= 0) & (idx < n_t)
    if width <= n_t and inside.all():
        return np.asarray(sliding_window_view(x, width, axis=1)[vm, start])
    block = np.full((len(vm), width), np.nan)
    if width <= n_t and inside.any():
        block[inside] = sliding_window_view(x, width, axis=1)[vm[inside], start[inside]]
    edge = np.flatnonzero(~inside)
    pos = idx[edge, None] + np.arange(-width + 1, 1)
    ok = (pos >= 0) & (pos < n_t)
    block[edge] = np.where(ok, x[vm[edge, None], np.clip(pos, 0, n_t - 1)], np.nan)
    return block


def _gathered(
    x: np.ndarray, vm: np.ndarray, idx: np.ndarray, width: int, stats: Sequence[str], min_periods: int
) -> dict[str, np.ndarray]:
    """Trailing-window `stats` of x[vm, idx - width + 1 .. idx] per row, NaN-skipping, as `_rolling`
    then `_at` give them (std with ddof 1; NaN where idx is off the grid or the window has fewer than
    `min_periods` values), gathered for the rows only."""
    unknown = set(stats) - {"mean", "std", "max", "min", "median"}
    if unknown:
        raise ValueError(f"unknown window statistic(s) {', '.join(sorted(unknown))}")
    n_t = x.shape[1]
    out = {s: np.full(len(vm), np.nan) for s in stats}
    chunk = max(1, 4_000_000 // width)
    for begin in range(0, len(vm), chunk):
        part = slice(begin, begin + chunk)
        block = _window_block(x, vm[part], idx[part], width)
        seen = np.isfinite(block)
        n = seen.sum(axis=1)
        keep = (n >= max(min_periods, 1)) & (idx[part] >= 0) & (idx[part] < n_t)
        got: dict[str, np.ndarray] = {}
        if "median" in stats:
            block.sort(axis=1)  # NaN last
            seen = np.arange(width) < n[:, None]
            lo = np.take_along_axis(block, np.maximum((n - 1) // 2, 0)[:, None], axis=1)[:, 0]
            hi = np.take_along_axis(block, np.maximum(n // 2 - (n == 0), 0)[:, None], axis=1)[:, 0]
            got["median"] = (lo + hi) / 2
        if "max" in stats:
            got["max"] = np.fmax.reduce(block, axis=1)
        if "min" in stats:
            got["min"] = np.fmin.reduce(block, axis=1)
        if "mean" in stats or "std" in stats:
            block[~seen] = 0.0
            got["mean"] = block.sum(axis=1) / np.maximum(n, 1)
            block -= got["mean"][:, None]
            block[~seen] = 0.0
            with np.errstate(invalid="ignore", divide="ignore"):
                got["std"] = np.where(n > 1, np.sqrt(np.einsum("ij,ij->i", block, block) / (n - 1)), np.nan)
        for stat in stats:
            out[stat][part] = np.where(keep, got[stat], np.nan)
    return out


class _Windows:
    """Trailing-window statistics of one (vms, times) array at the rows' VMs, each the cheaper way:
    gathered per row for a few rows (a forecast at the last origin), rolled over the whole span for
    many (training, backtests)."""

    def __init__(self, x: np.ndarray, vm: np.ndarray) -> None:
        self.x, self.vm = x, vm
        self.rolled: dict[tuple[int, str, int], np.ndarray] = {}

    def at(
        self, idx: np.ndarray, width: int, stats: Sequence[str], min_periods: int = 1
    ) -> dict[str, np.ndarray]:
        dense = [s for s in stats if len(self.vm) * width > GATHER_PER_CELL[s] * self.x.size]
        out = {}
        for stat in dense:
            key = (width, stat, min_periods)
            if key not in self.rolled:
                self.rolled[key] = _rolling(self.x, width, stat, min_periods)
            out[stat] = _at(self.rolled[key], self.vm, idx)
        sparse = [s for s in stats if s not in dense]
        if sparse:
            out |= _gathered(self.x, self.vm, idx, width, sparse, min_periods)
        return out

    def one(self, idx: np.ndarray, width: int, stat: str, min_periods: int = 1) -> np.ndarray:
        return self.at(idx, width, (stat,), min_periods)[stat]


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


def _steps_since_jump(
    x: np.ndarray, vm: np.ndarray, o: np.ndarray, scale: np.ndarray, cap: int
) -> np.ndarray:
    """Grid steps since the row's last change larger than JUMP x its scale, at most `cap`: how settled
    a VM is, which decides whether its last value or its recent average predicts better."""
    out = np.empty(len(vm))
    chunk = max(1, 4_000_000 // cap)
    for begin in range(0, len(vm), chunk):
        part = slice(begin, begin + chunk)
        block = _window_block(x, vm[part], o[part], cap + 1)
        with np.errstate(invalid="ignore"):
            jumped = np.abs(np.diff(block, axis=1)) > JUMP * scale[part, None]
        latest = cap - 1 - np.argmax(jumped[:, ::-1], axis=1)  # index of the last jump, if any
        out[part] = np.where(jumped.any(axis=1), cap - 1 - latest, cap)
    return out


def skill_features(
    grid: MetricGrid, x: np.ndarray, vm: np.ndarray, o: np.ndarray, ahead: int, scale: np.ndarray
) -> dict[str, np.ndarray]:
    """How well simple forecasts `ahead` steps out have done for the row's VM lately: the mean absolute
    error of the last value, the 1-h median, the 6-h mean and the value a day before, over the last day
    and the last week before the origin, scaled as the changes, and the week's error of each against
    the last value's (log ratio). Why: whether a VM's last value or its recent level predicts better
    is a trait of the VM (spiky VMs fall back, stepping ones stay) that one day's window shows poorly
    (Bitbrains CPU, fitted on days 1-16 and scored on days 17-21: 1-h error 1.3% lower, with two seeds;
    memory 0.3%). The errors are sampled every SKILL_EVERY_S back from the origin, so that a forecast
    of 10,000 VMs does not compute them at every step. Point horizons only: a week of daily peaks'
    errors needs more than HISTORY_DAYS."""
    day, hour, every = grid.steps(DAY_S), grid.steps(3600.0), grid.steps(SKILL_EVERY_S)
    wide = grid.steps(6 * 3600.0)
    samples = [days * day // every for days in SKILL_DAYS]
    names = ("naive", "median_1h", "ma_6h", "seasonal")
    if len(vm) * max(samples) > x.size:  # many rows: every error on the grid, then sampled means
        levels = {
            "naive": x,
            "median_1h": _rolling(x, hour, "median", 1),
            "ma_6h": _rolling(x, wide, "mean", 1),
        }
        errors = {n: np.abs(x - _shifted(v, ahead)) for n, v in levels.items()}
        errors["seasonal"] = np.abs(x - _shifted(x, day))
        means = {n: _sampled_means(errors[n], vm, o, every, samples) for n in names}
    else:  # few rows (a forecast): the errors at the sampled times only
        n_max = max(samples)
        t = (o[:, None] - every * np.arange(n_max)[None, :]).reshape(-1)  # row-major: (row, sample)
        rep = np.repeat(vm, n_max)
        win, actual = _Windows(x, rep), _at(x, rep, t)
        forecasts = {
            "naive": _at(x, rep, t - ahead),
            "median_1h": win.one(t - ahead, hour, "median"),
            "ma_6h": win.one(t - ahead, wide, "mean"),
            "seasonal": _at(x, rep, t - day),
        }
        means = {}
        for n in names:
            error = np.abs(actual - forecasts[n]).reshape(len(vm), n_max)
            means[n] = []
            for k in samples:
                seen = np.isfinite(error[:, :k]).sum(axis=1)
                mean = np.nansum(error[:, :k], axis=1) / np.maximum(seen, 1)
                means[n].append(np.where(seen >= max(1, k // 4), mean, np.nan))
    feats = {f"sk_{n}_{days}d": means[n][i] / scale for n in names for i, days in enumerate(SKILL_DAYS)}
    week = f"{max(SKILL_DAYS)}d"
    naive = feats[f"sk_naive_{week}"] + 1e-9
    for n in names[1:]:
        feats[f"sk_rel_{n}"] = np.log((feats[f"sk_{n}_{week}"] + 1e-9) / naive)
    return feats


def _shifted(values: np.ndarray, steps: int) -> np.ndarray:
    """values[:, t - steps] at every t, NaN before the span."""
    out = np.full(values.shape, np.nan)
    if steps < values.shape[1]:  # else every t - steps is before the span
        out[:, steps:] = values[:, : values.shape[1] - steps]
    return out


def _sampled_means(
    error: np.ndarray, vm: np.ndarray, o: np.ndarray, every: int, samples: Sequence[int]
) -> list[np.ndarray]:
    """For each k of `samples`: the mean of error[vm, o - every * j] over j < k, NaN-skipping, NaN with
    fewer than k / 4 values; one rolling mean per residue of the origin modulo `every`."""
    out = [np.full(len(vm), np.nan) for _ in samples]
    for r in range(every):
        rows = np.flatnonzero(o % every == r)
        if not rows.size:
            continue
        sub = error[:, r::every]
        for mean, k in zip(out, samples, strict=True):
            mean[rows] = _at(_rolling(sub, k, "mean", max(1, k // 4)), vm[rows], (o[rows] - r) // every)
    return out


def partner_features(
    partner: Partner, grid: MetricGrid, vm: np.ndarray, origin: np.ndarray, lo: int, hi: int
) -> dict[str, np.ndarray]:
    """The partner metric at the rows' origins: its level and its moves over the last 15 min and
    hour, scaled as the main metric's (24-h std + 10% of the 24-h mean + its floor)."""
    other = partner.grid
    if other.vms != grid.vms or not other.times.equals(grid.times):
        raise ValueError("the partner metric's grid must have the VMs and times of the forecast one")
    x = np.ascontiguousarray(other.filled[:, lo:hi])
    o = origin - lo
    win = _Windows(x, vm)
    day = win.at(o, other.steps(DAY_S), ("mean", "std"))
    hour = win.at(o, other.steps(3600.0), ("mean", "max"))
    last = _at(x, vm, o)
    scale = np.nan_to_num(day["std"]) + 0.1 * np.abs(np.nan_to_num(day["mean"])) + partner.floor
    return {
        "x_level": last / scale,
        "x_log": np.log1p(np.abs(last)),
        "x_d_lag_15m": (last - _at(x, vm, o - other.steps(900.0))) / scale,
        "x_d_mean_1h": (hour["mean"] - last) / scale,
        "x_d_max_1h": (hour["max"] - last) / scale,
    }


def horizon_rows(
    grid: MetricGrid,
    horizon: str,
    vm: np.ndarray,
    origin: np.ndarray,
    floor: float,
    partner: Partner | None = None,
) -> HorizonRows:
    """The rows (vm[i], origin[i]) for `horizon` (a HORIZONS_S key).

    Baselines: naive is the last value (for the peak, the max of the last 24 h); seasonal naive the value
    one day before the target time (for the peak, the max of the previous UTC day); moving averages the
    mean of the last 15 min to 6 h (for the peak, the mean of the daily peaks of the last 2-7 days),
    their medians among the features (robust levels of VMs that flip between two states). The
    peak target is the max over (origin, origin + 24 h] and needs MIN_COVERAGE of its samples. Changes
    are scaled by the VM's 24-h std + 10% of its 24-h mean + `floor` (see `scale_floor`). Features read
    at most HISTORY_DAYS back, so a forecast at the last origin only touches the last days of the grid.
    Point horizons have `skill_features`; with a `partner`, its `partner_features` are features too."""
    if horizon not in HORIZONS_S:
        raise ValueError(f"horizon must be one of {', '.join(HORIZONS_S)}, got {horizon!r}")
    vm, origin = np.asarray(vm, dtype=np.int64), np.asarray(origin, dtype=np.int64)
    day, h = grid.steps(DAY_S), grid.steps(HORIZONS_S[horizon])
    lo = max(0, int(origin.min(initial=0)) - HISTORY_DAYS * day)
    hi = int(origin.max(initial=0)) + day + 1
    # row-major: windows along time are read from contiguous memory
    x, raw = np.ascontiguousarray(grid.filled[:, lo:hi]), np.ascontiguousarray(grid.raw[:, lo:hi])
    o = origin - lo
    last = x[vm, o]
    win = _Windows(x, vm)
    stats: dict[str, np.ndarray] = {}
    for w_s in WINDOWS_S:
        got = win.at(o, grid.steps(w_s), ("mean", "std", "max", "min", "median"))
        stats |= {f"{s}_{w_s / 3600:g}h": v for s, v in got.items()}
    scale = np.nan_to_num(stats["std_24h"]) + 0.1 * np.abs(np.nan_to_num(stats["mean_24h"])) + floor
    baselines: dict[str, np.ndarray] = {}
    if horizon == PEAK:
        naive = stats["max_24h"]
        seasonal = win.one(previous_day_end(grid.times, origin) - lo, day, "max")
        target = _Windows(raw, vm).one(o + day, day, "max", int(np.ceil(MIN_COVERAGE * day)))
        past_peaks = np.stack([win.one(o - k * day, day, "max") for k in range(max(PEAK_MA_DAYS))])
        seen = np.isfinite(past_peaks)
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: a VM without past peaks
            for k in PEAK_MA_DAYS:
                baselines[f"ma_{k}d"] = np.nan_to_num(past_peaks[:k]).sum(axis=0) / seen[:k].sum(axis=0)
                baselines[f"median_{k}d"] = np.nanmedian(past_peaks[:k], axis=0)
    else:
        naive = last
        seasonal = _at(x, vm, o + h - day)
        target = _at(raw, vm, o + h)
        for w_s in MA_WINDOWS_S:
            label = f"{w_s / 3600:g}h"
            got = win.at(o, grid.steps(w_s), ("mean", "median"))
            baselines[f"ma_{label}"], baselines[f"median_{label}"] = got["mean"], got["median"]
    feats: dict[str, np.ndarray] = {}
    for lag_s in LAGS_S:
        feats[f"d_lag_{lag_s / 60:g}m"] = (_at(x, vm, o - grid.steps(lag_s)) - last) / scale
    for name, v in stats.items():
        feats[f"d_{name}"] = v / scale if name.startswith("std") else (v - last) / scale
    for name, v in baselines.items():
        if name not in stats:
            feats[f"d_{name}"] = (v - last) / scale
    feats["d_seasonal"] = (seasonal - last) / scale
    feats["d_seasonal_2d"] = (_at(x, vm, o + (0 if horizon == PEAK else h) - 2 * day) - last) / scale
    feats["d_seasonal_7d"] = (_at(x, vm, o + (0 if horizon == PEAK else h) - 7 * day) - last) / scale
    feats["yesterday_change"] = (seasonal - _at(x, vm, o - day)) / scale
    feats["d_max_7d"] = (win.one(o, 7 * day, "max") - last) / scale
    feats["level"] = last / scale
    feats["log_scale"] = np.log(scale)
    feats["since_jump"] = _steps_since_jump(x, vm, o, scale, day)
    if horizon != PEAK:
        feats |= skill_features(grid, x, vm, o, h, scale)
    if partner is not None:
        feats |= partner_features(partner, grid, vm, origin, lo, hi)
    when = grid.times[origin]
    hour = np.asarray(when.hour + when.minute / 60, dtype=float)
    dow = np.asarray(when.day_of_week, dtype=float) + hour / 24
    feats["hour_sin"], feats["hour_cos"] = np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)
    feats["dow_sin"], feats["dow_cos"] = np.sin(2 * np.pi * dow / 7), np.cos(2 * np.pi * dow / 7)
    X = pd.DataFrame(
        {
            "vm": np.asarray(grid.vms, dtype=object)[vm] if len(vm) else np.array([], dtype=object),
            "origin": when,
            **feats,
            "base": naive,
            "scale": scale,
            f"{BASELINE}seasonal": seasonal,
            **{f"{BASELINE}{k}": v for k, v in baselines.items() if k.startswith("ma_")},
        }
    )
    return HorizonRows(vm, origin, X, naive, seasonal, target)


def latest_rows(grid: MetricGrid, horizon: str, floor: float, partner: Partner | None = None) -> HorizonRows:
    """Every VM's row at the last grid point: what a forecast is made from."""
    n = len(grid.vms)
    return horizon_rows(grid, horizon, np.arange(n), np.full(n, len(grid.times) - 1), floor, partner)


def feature_columns(X: pd.DataFrame) -> list[str]:
    """The model features of HorizonRows.X: all but the row identity, `base`, `scale` and baselines."""
    return [c for c in X.columns if c not in (*ID_COLUMNS, "base", "scale") and not c.startswith(BASELINE)]


def usable_columns(X: pd.DataFrame) -> list[str]:
    """The features worth fitting on: not NaN everywhere (HistGradientBoostingRegressor 1.9 raises on
    that), and the weekday only when the rows' origins span WEEKLY_MIN_DAYS: on less, test days are
    weekdays training never saw, and trees send them down branches fitted to noise (a synthetic daily
    wave trained on 4 days and scored on the next 2: a 1-h error 7 times larger with them)."""
    origin = pd.DatetimeIndex(X["origin"]) if "origin" in X.columns and len(X) else None
    span_days = (origin.max() - origin.min()).total_seconds() / DAY_S if origin is not None else np.inf
    return [
        c
        for c in feature_columns(X)
        if X[c].notna().any() and (c not in WEEKDAY or span_days >= WEEKLY_MIN_DAYS)
    ]


def naive_forecast(rows: HorizonRows) -> np.ndarray:
    return rows.naive


def seasonal_naive_forecast(rows: HorizonRows) -> np.ndarray:
    """The seasonal value, the naive one where the day before is not in the history."""
    return np.where(np.isnan(rows.seasonal), rows.naive, rows.seasonal)


def _column_or_naive(X: pd.DataFrame, column: str) -> np.ndarray:
    """A baseline's level, the naive one (`base`) where the baseline has no value."""
    values = X[column].to_numpy(float)
    return np.where(np.isnan(values), X["base"].to_numpy(float), values)


class NaiveBaseline(RegressorMixin, BaseEstimator):
    """The last value (for the peak, the max of the last 24 h); X is HorizonRows.X."""

    def fit(self, X: pd.DataFrame, y: Any = None) -> NaiveBaseline:
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "n_features_in_")
        return X["base"].to_numpy(float)


class SeasonalNaiveBaseline(RegressorMixin, BaseEstimator):
    """The value a day before the target time (for the peak, the previous UTC day's max), the naive
    value where that is not in the history."""

    def fit(self, X: pd.DataFrame, y: Any = None) -> SeasonalNaiveBaseline:
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "n_features_in_")
        return _column_or_naive(X, f"{BASELINE}seasonal")


def moving_average_columns(X: pd.DataFrame) -> list[str]:
    return [c for c in X.columns if c.startswith(f"{BASELINE}ma_")]


class MovingAverageBaseline(RegressorMixin, BaseEstimator):
    """The mean of the last `window` (e.g. "1h"; for the peak horizon, "3d": the mean of the last three
    daily peaks); the naive value where the window has no sample.

    With `window=None`, fit picks the window of lowest MAE on (X, y): smoothing pays on noisy VMs and
    costs on ones that step, and only the data says which the fleet has more of."""

    def __init__(self, window: str | None = None) -> None:
        self.window = window

    def fit(self, X: pd.DataFrame, y: Any = None) -> MovingAverageBaseline:
        columns = moving_average_columns(X)
        if self.window is not None:
            if f"{BASELINE}ma_{self.window}" not in columns:
                shown = ", ".join(c.removeprefix(f"{BASELINE}ma_") for c in columns)
                raise ValueError(f"window must be one of {shown}, got {self.window!r}")
            self.window_ = self.window
        else:
            if y is None:
                raise ValueError("window=None chooses the window on y: give y")
            target = np.asarray(y, dtype=float)
            ok = np.isfinite(target)
            errors = {c: mae(target[ok], _column_or_naive(X, c)[ok]) for c in columns}
            self.window_ = min(errors, key=errors.__getitem__).removeprefix(f"{BASELINE}ma_")
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "window_")
        return _column_or_naive(X, f"{BASELINE}ma_{self.window_}")


class ChangeForecaster(RegressorMixin, BaseEstimator):
    """A global quantile GBM of the change from the naive forecast (`base`: the last value, for the peak
    the last 24 h's max); predicts levels, clipped at 0.

    X is `HorizonRows.X`: `usable_columns(X)` are the features; y is the level target. Either way the
    pinball loss is the one of the level in units (the MAE in cores or MiB, which big VMs dominate,
    not a per-VM relative error):
    - `target="scaled"`: the change divided by the row's scale, rows resampled in proportion to it
      (HistGradientBoostingRegressor's own sample weights made the quantile fit 5x slower);
    - `target="units"`: the change itself, with the level and scale as features so that trees can
      tell VMs of 1 core from VMs of 32. No resampling, so every row counts once and big VMs that
      swing wildly do not fill the sample with copies of themselves. Fitted on Bitbrains days 1-16
      and scored on days 17-21: memory 1 h error 0.5-1.3% lower, CPU no worse; PlanetLab: equal.
    One OpenMP thread, as QuantileGBMForecaster (threads spin on a busy 2-core machine)."""

    def __init__(
        self,
        quantile: float = 0.5,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 20,
        random_state: int | None = 0,
        threads: int = 1,
        target: str = "scaled",
    ) -> None:
        self.quantile = quantile
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state
        self.threads = threads
        self.target = target

    def _inputs(self, X: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.columns_ if c not in X.columns]
        if missing:
            raise ValueError(
                f"X lacks feature(s) the model was fitted with: {', '.join(missing)} (x_*: give the "
                "partner metric the model was fitted with)"
            )
        features = X[self.columns_].to_numpy(float)
        if self.target == "units":
            return np.column_stack([features, X["scale"].to_numpy(float), X["base"].to_numpy(float)])
        return features

    def fit(self, X: pd.DataFrame, y: Any) -> ChangeForecaster:
        if self.target not in ("scaled", "units"):
            raise ValueError(f"target must be 'scaled' or 'units', got {self.target!r}")
        y = np.asarray(y, dtype=float)
        scale = X["scale"].to_numpy(float)
        change = y - X["base"].to_numpy(float)
        if self.target == "scaled":
            change = change / scale
        ok = np.flatnonzero(np.isfinite(change))
        if not ok.size:
            raise TooLittleHistory("no row with a finite target and last value to fit on")
        if self.target == "scaled":
            rng = np.random.default_rng(self.random_state)
            ok = ok[rng.choice(ok.size, size=ok.size, replace=True, p=scale[ok] / scale[ok].sum())]
        self.columns_ = usable_columns(X)
        model = HistGradientBoostingRegressor(
            loss="quantile",
            quantile=self.quantile,
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            early_stopping=False,
            random_state=self.random_state,
        )
        with threadpool_limits(self.threads, user_api="openmp"):
            self.model_ = model.fit(self._inputs(X.iloc[ok]), change[ok])
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "model_")
        with threadpool_limits(self.threads, user_api="openmp"):
            change = self.model_.predict(self._inputs(X))
        if self.target == "scaled":
            change = change * X["scale"].to_numpy(float)
        return np.clip(X["base"].to_numpy(float) + change, 0, None)


class MeanForecaster:
    """The mean of fitted forecasters' predictions (HorizonForecaster's P50 bags)."""

    def __init__(self, members: Sequence[ChangeForecaster]) -> None:
        self.members = tuple(members)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(np.mean([m.predict(X) for m in self.members], axis=0))


def _mean_of(fits: Sequence[ChangeForecaster]) -> ChangeForecaster | MeanForecaster:
    return fits[0] if len(fits) == 1 else MeanForecaster(fits)


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


def validation_split(origin: pd.Series, horizon: str, valid_share: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid) masks over rows: the last `valid_share` of the origins' time span validates; a
    training row's target time (origin + horizon) must be before the first validation origin, so no
    validation target is seen in training."""
    t = pd.DatetimeIndex(origin).as_unit("ns").asi8
    if len(t) == 0:
        return np.zeros(0, bool), np.zeros(0, bool)
    cut = t.min() + (1 - valid_share) * (t.max() - t.min())
    return t + int(HORIZONS_S[horizon] * 1e9) <= cut, t >= cut


def conformal_offset(score: np.ndarray, level: float) -> float:
    """The split-conformal quantile of the scores: an upper forecast raised by it covers a new
    exchangeable row with probability at least `level` (the ceil((n + 1) level)-th smallest score)."""
    score = np.sort(np.asarray(score, dtype=float))
    n = len(score)
    if n == 0:
        return 0.0
    k = int(np.ceil((n + 1) * level)) - 1
    return float(score[min(k, n - 1)])


class HorizonForecaster(RegressorMixin, BaseEstimator):
    """The global forecaster of one metric at one horizon: P50 and P95 ChangeForecasters, the P95
    calibrated by split conformal prediction and a per-VM fallback to naive, both on validation.

    fit(X, y) takes HorizonRows.X (it needs the `vm` and `origin` columns) and the level target. It
    splits the rows by time (`validation_split`); the models learn on at most `max_train_rows` of the
    older rows. On the recent ones, (1) every VM whose P50 validation MAE is not below the naive one's
    gets the naive forecast (`naive_vms_`), and (2) the P95 is raised by the conformal quantile of the
    scaled misses (`offset_`), computed against the final P50/P95 pair, so that `upper` covers the
    validation rows, and exchangeable future ones, with probability `upper`. Then, with `refit`, the
    P50 is fitted again on all rows: the most recent days are the most like tomorrow (Bitbrains
    memory, fitted on days 1-16 and scored on days 17-21: 2% lower 1-h error). The P95 is not
    refitted: its offset is exact for the model it was measured on. VMs never seen get the model.
    With `bags` > 1 the P50 is the mean of that many models, each fitted on its own sample of rows
    (`MeanForecaster`), for when training time allows: the model is limited by its variance more than
    its bias (Bitbrains memory, fitted on days 1-16 and scored on days 17-21: 1-h error 1.6% lower with
    3 bags, at 3 times the P50's fitting time). The default is one. The fits (P50 bags, P95, the refit's
    bags) are independent: `n_jobs` processes run them side by side (joblib's convention: None is one,
    -1 one per core), each on `threads` OpenMP threads.

    Raises TooLittleHistory when no row's target ends before the validation part, ValueError for a
    bad setting."""

    def __init__(
        self,
        horizon: str = "1h",
        upper: float = 0.95,
        valid_share: float = 0.3,
        max_train_rows: int = 100_000,
        refit: bool = True,
        target: str = "units",
        max_iter: int = 200,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 20,
        random_state: int | None = 0,
        threads: int = 1,
        bags: int = 1,
        n_jobs: int | None = None,
    ) -> None:
        self.horizon = horizon
        self.upper = upper
        self.valid_share = valid_share
        self.max_train_rows = max_train_rows
        self.refit = refit
        self.target = target
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state
        self.threads = threads
        self.bags = bags
        self.n_jobs = n_jobs

    def _model(self, quantile: float, bag: int = 0) -> ChangeForecaster:
        return ChangeForecaster(
            quantile=quantile,
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            random_state=None if self.random_state is None else self.random_state + bag,
            threads=self.threads,
            target=self.target,
        )

    def _sample(self, mask: np.ndarray, bag: int = 0) -> np.ndarray:
        """Row indices of `mask`, at most max_train_rows of them (uniformly, in order), a different
        sample for each bag."""
        pick = np.flatnonzero(mask)
        if len(pick) <= self.max_train_rows:
            return pick
        seed = None if self.random_state is None else self.random_state + bag
        return np.sort(np.random.default_rng(seed).choice(pick, self.max_train_rows, False))

    def fit(self, X: pd.DataFrame, y: Any) -> HorizonForecaster:
        if self.horizon not in HORIZONS_S:
            raise ValueError(f"horizon must be one of {', '.join(HORIZONS_S)}, got {self.horizon!r}")
        if self.bags < 1:
            raise ValueError(f"bags must be at least 1, got {self.bags}")
        missing = [c for c in (*ID_COLUMNS, "base", "scale") if c not in X.columns]
        if missing:
            raise ValueError(f"X lacks column(s) {', '.join(missing)}: give HorizonRows.X")
        y = np.asarray(y, dtype=float)
        ok = np.isfinite(y) & np.isfinite(X["base"].to_numpy(float))
        X, y = X[ok], y[ok]
        train, valid = validation_split(X["origin"], self.horizon, self.valid_share)
        if not train.any():
            raise TooLittleHistory(f"no training row ends before the validation part ({self.horizon})")
        refit = self.refit and bool(valid.any())
        jobs = [(self._model(0.5, b), self._sample(train, b)) for b in range(self.bags)]
        pick = jobs[0][1]  # the P95 learns on the first P50 bag's rows
        jobs.append((self._model(self.upper), pick))
        if refit:
            everything = np.ones(len(y), dtype=bool)
            jobs += [(self._model(0.5, b), self._sample(everything, b)) for b in range(self.bags)]
        fitted = Parallel(n_jobs=self.n_jobs)(delayed(m.fit)(X.iloc[r], y[r]) for m, r in jobs)
        self.p50_ = _mean_of(fitted[: self.bags])
        self.p95_ = fitted[self.bags]
        self.naive_vms_: frozenset[str] = frozenset()
        self.offset_ = 0.0
        Xv, yv = X[valid], y[valid]
        self.validation_: dict[str, Any] = {"rows": len(yv), "train_rows": len(pick)}
        if len(yv):
            model, naive = self.p50_.predict(Xv), Xv["base"].to_numpy(float)
            per_vm = (
                pd.DataFrame(
                    {"vm": Xv["vm"].to_numpy(), "model": np.abs(yv - model), "naive": np.abs(yv - naive)}
                )
                .groupby("vm", sort=False)[["model", "naive"]]
                .mean()
            )
            self.naive_vms_ = frozenset(per_vm.index[per_vm["model"] >= per_vm["naive"]])
            p50 = self._fallback(Xv, model)
            raw95 = self.p95_.predict(Xv)
            score = np.where(yv <= p50, -np.inf, (yv - raw95) / Xv["scale"].to_numpy(float))
            self.offset_ = conformal_offset(score, self.upper)
            self.validation_ |= {
                "model_mae": mae(yv, model),
                "naive_mae": mae(yv, naive),
                "fallback_mae": mae(yv, p50),
                "naive_vms": len(self.naive_vms_),
                "vms": len(per_vm),
                "raw_coverage": coverage(yv, np.maximum(raw95, p50)),
                "offset": self.offset_,
            }
        if refit:
            self.p50_ = _mean_of(fitted[self.bags + 1 :])
        self.n_features_in_ = X.shape[1]
        return self

    def _fallback(self, X: pd.DataFrame, model: np.ndarray) -> np.ndarray:
        naive = X["vm"].isin(self.naive_vms_).to_numpy()
        return np.where(naive, X["base"].to_numpy(float), model)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """The P50: the model's, the naive one for `naive_vms_`."""
        check_is_fitted(self, "p50_")
        return self._fallback(X, self.p50_.predict(X))

    def predict_quantiles(self, X: pd.DataFrame) -> dict[float, np.ndarray]:
        """{0.5: P50, upper: calibrated upper quantile, never below the P50}."""
        p50 = self.predict(X)
        raised = self.p95_.predict(X) + self.offset_ * X["scale"].to_numpy(float)
        return {0.5: p50, self.upper: np.maximum(np.clip(raised, 0, None), p50)}


def forecast_latest(
    models: Mapping[str, HorizonForecaster], grid: MetricGrid, floor: float, partner: Partner | None = None
) -> pd.DataFrame:
    """Every VM's P50 and upper quantile at each horizon of `models` (horizon -> fitted forecaster),
    from the last grid point: columns vm, horizon, p50, upper. `partner` as the models were fitted."""
    frames = []
    for horizon, model in models.items():
        rows = latest_rows(grid, horizon, floor, partner)
        q = model.predict_quantiles(rows.X)
        frames.append(
            pd.DataFrame({"vm": grid.vms, "horizon": horizon, "p50": q[0.5], "upper": q[model.upper]})
        )
    return pd.concat(frames, ignore_index=True)


def coverage(target: np.ndarray, upper: np.ndarray) -> float:
    """Share of targets at or below their upper forecast."""
    return float(np.mean(np.asarray(target) <= np.asarray(upper)))


def mae(target: np.ndarray, forecast: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(target) - np.asarray(forecast))))
