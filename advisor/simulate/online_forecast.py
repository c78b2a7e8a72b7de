"""The project's 1-h forecaster (advisor.forecast.horizons.HorizonForecaster) run the way a replay
allows: it learns only from what the policy has been shown so far.

It keeps the utilisation seen at every decision and fits on (VM, origin) rows whose 1-h target it has
already seen, first once `first_fit_steps` have passed, then each time its history has doubled (most is
learned early; a later fit adds little and costs a full fit). Until the first fit, and while a fit is
impossible (the forecaster validates on the most recent rows and needs older ones to train on), each VM
gets its own last hour: the median and the P95 of those samples, never below the last one. Forecasts
are refreshed every `forecast_every` steps and held in between: the features of every VM cost about a
second or more on this machine (pandas' rolling windows run column by column), which a 288-step replay
cannot pay at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from advisor.forecast.horizons import (
    HORIZONS_S,
    HorizonForecaster,
    HorizonRows,
    MetricGrid,
    horizon_rows,
    sample_pairs,
    scale_floor,
    validation_split,
)

HORIZON = "1h"
UPPER = 0.95
# The replay fits on 3-12 h of history; HorizonForecaster's default share (0.3) was chosen on Bitbrains
# fits of 16 days, and the CloudSim benchmark was recorded with 0.2.
VALID_SHARE = 0.2
EPOCH = pd.Timestamp("2000-01-03", tz="UTC")  # a Monday midnight: the replay knows steps, not dates


@dataclass(frozen=True)
class OnlineSettings:
    step_s: float = 300.0
    first_fit_steps: int = 36  # steps seen before the first fit (3 h: 2 h of origins with a 1-h target)
    forecast_every: int = 12  # steps a forecast is held (its horizon: 1 h)
    train_rows: int = 10_000  # (VM, origin) pairs per fit, sampled uniformly
    max_iter: int = 100  # boosting iterations of each quantile model
    seed: int = 0


@dataclass(frozen=True)
class Quantiles:
    """Per VM, as a share of its size (0..1): the median and P95 of its utilisation 1 h ahead."""

    k: int  # the step the forecast was made at
    p50: np.ndarray
    p95: np.ndarray
    learned: bool  # False: the VMs' own last hour


class OnlineForecaster:
    def __init__(self, n_vms: int, settings: OnlineSettings | None = None):
        self.s = settings or OnlineSettings()
        self.seen = np.full((n_vms, 0), np.nan)
        self.first = -1  # the first step seen
        self.model: HorizonForecaster | None = None
        self.next_fit = self.s.first_fit_steps  # grid length at which to fit next
        self.last: Quantiles | None = None

    def observe(self, k: int, history: np.ndarray) -> None:
        """Record the samples of a StepView's history (column i is step k - i)."""
        if self.first < 0:
            self.first = k - history.shape[1] + 1
        need = k - self.first + 1
        if self.seen.shape[1] < need:
            width = max(need, 2 * self.seen.shape[1])
            grow = np.full((self.seen.shape[0], width - self.seen.shape[1]), np.nan)
            self.seen = np.concatenate([self.seen, grow], axis=1)
        cols = k - self.first - np.arange(history.shape[1])
        ok = cols >= 0
        self.seen[:, cols[ok]] = history[:, ok]

    def forecast(self, k: int) -> Quantiles:
        """The quantiles to plan with at step k (observe(k, ...) first)."""
        grid = self._grid(k)
        n_t, n = len(grid.times), len(grid.vms)
        fit = n_t >= self.next_fit
        stale = self.last is None or not self.last.learned or k - self.last.k >= self.s.forecast_every
        if not fit and (self.model is None or not stale):
            if self.model is None:
                self.last = self._own_last_hour(k, grid)
            assert self.last is not None
            return self.last
        vm, origin = np.arange(n), np.full(n, n_t - 1)  # the rows to forecast from
        if fit:  # plus the rows to learn from, in one pass over the rolling windows
            h = grid.steps(HORIZONS_S[HORIZON])
            tv, to = sample_pairs(n, np.arange(max(n_t - h, 0)), self.s.train_rows, self.s.seed)
            vm, origin = np.concatenate([vm, tv]), np.concatenate([origin, to])
        rows = horizon_rows(grid, HORIZON, vm, origin, scale_floor(grid, n_t))
        if fit:
            self._fit(rows, n_t)
        if self.model is None:
            self.last = self._own_last_hour(k, grid)
            return self.last
        q = self.model.predict_quantiles(rows.X.iloc[:n])
        p50 = np.clip(q[0.5], 0.0, 1.0)
        self.last = Quantiles(k, p50, np.maximum(np.clip(q[UPPER], 0.0, 1.0), p50), True)
        return self.last

    def _fit(self, rows: HorizonRows, n_t: int) -> None:
        """Fit on the rows whose target has been seen (the forecast rows have none: the model leaves
        them out); while none ends before the model's validation part, try again an hour on."""
        model = HorizonForecaster(
            HORIZON, UPPER, VALID_SHARE, max_iter=self.s.max_iter, random_state=self.s.seed
        )
        seen = np.isfinite(rows.target)
        train, _ = validation_split(rows.X["origin"][seen], HORIZON, model.valid_share)
        if not train.any():
            self.next_fit = n_t + round(HORIZONS_S[HORIZON] / self.s.step_s)
            return
        self.model = model.fit(rows.X, rows.target)
        self.next_fit = 2 * n_t

    def _grid(self, k: int) -> MetricGrid:
        values = self.seen[:, : k - self.first + 1]
        offsets = pd.to_timedelta((self.first + np.arange(values.shape[1])) * self.s.step_s, unit="s")
        times = pd.DatetimeIndex(EPOCH + offsets).as_unit("ns")
        filled = pd.DataFrame(values.T).ffill().to_numpy().T
        return MetricGrid(tuple(str(i) for i in range(values.shape[0])), times, self.s.step_s, values, filled)

    def _own_last_hour(self, k: int, grid: MetricGrid) -> Quantiles:
        x = grid.filled[:, -grid.steps(HORIZONS_S[HORIZON]) :]
        p50 = np.nan_to_num(np.nanmedian(x, axis=1))
        p95 = np.nan_to_num(np.maximum(np.nanquantile(x, UPPER, axis=1), x[:, -1]))
        return Quantiles(k, p50, np.maximum(p95, p50), False)
