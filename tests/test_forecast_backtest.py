"""Rolling-origin backtests (advisor.forecast.backtest)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advisor.errors import InputError
from advisor.forecast.backtest import (
    FIGURES,
    FORECASTERS,
    backtest,
    evaluate_split,
    insample_naive_mae,
    mase,
    pinball,
)
from advisor.forecast.horizons import HORIZONS_S, horizon_rows, metric_grid

STEP = 300
DAY = 288
START = pd.Timestamp("2024-01-01", tz="UTC")
FAST = {"max_iter": 15, "max_train_rows": 5000}


def metrics_of(values: np.ndarray) -> pd.DataFrame:
    n_vm, n_t = values.shape
    return pd.DataFrame(
        {
            "vm": np.repeat([f"vm{i}" for i in range(n_vm)], n_t),
            "ts": np.tile(START + pd.to_timedelta(np.arange(n_t) * STEP, unit="s"), n_vm),
            "cpu_cores": values.reshape(-1),
            "mem_mib": 100 + 10 * values.reshape(-1),
        }
    )


def seasonal(n_vm: int, days: int, noise: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(days * DAY)
    amp, base = rng.uniform(0.5, 3, size=(n_vm, 1)), rng.uniform(1, 4, size=(n_vm, 1))
    wave = base + amp * (1 + np.sin(2 * np.pi * t / DAY))[None, :]
    return np.maximum(wave + rng.normal(0, noise, size=wave.shape), 0)


def test_pinball_matches_a_hand_computation() -> None:
    target, forecast = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 1.0])
    # misses -1, 0, +2: over-forecast costs 0.05 a unit, under-forecast 0.95 a unit at q = 0.95
    assert pinball(target, forecast, 0.95) == pytest.approx((0.05 * 1 + 0 + 0.95 * 2) / 3)
    assert pinball(target, forecast, 0.5) == pytest.approx(np.mean(np.abs(target - forecast)) / 2)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(-100, 100), st.floats(-100, 100)), min_size=1, max_size=30))
def test_pinball_at_the_median_is_half_the_mae(pairs: list[tuple[float, float]]) -> None:
    y, f = np.array(pairs).T
    assert pinball(y, f, 0.5) == pytest.approx(0.5 * np.mean(np.abs(y - f)), abs=1e-9)


@pytest.mark.parametrize("horizon", list(HORIZONS_S))
def test_naive_mase_is_one_in_sample(horizon: str) -> None:
    grid = metric_grid(metrics_of(seasonal(3, 4, 0.3)), "cpu_cores")
    end = 3 * DAY
    scale = insample_naive_mae(grid, horizon, end)
    origins = np.arange(0, end - grid.steps(HORIZONS_S[horizon]))
    rows = horizon_rows(grid, horizon, np.repeat(np.arange(3), len(origins)), np.tile(origins, 3), 0.01)
    ok = np.isfinite(rows.target)
    assert mase(rows.target[ok], rows.naive[ok], scale) == pytest.approx(1.0)


def test_split_scores_every_forecaster_on_the_same_rows() -> None:
    grid = metric_grid(metrics_of(seasonal(6, 6, 0.1)), "cpu_cores")
    result = evaluate_split(grid, "1h", 5 * DAY, params=FAST)
    f = result.figures
    assert list(f.index) == list(FORECASTERS) and list(f.columns) == list(FIGURES)
    assert f["rows"].nunique() == 1 and f.loc["model", "rows"] == 6 * (DAY - 12)
    assert f.loc["model", "mase"] < 0.5 * f.loc["naive", "mase"]  # a daily wave: the model learns it
    assert f.loc["model", "mae"] == pytest.approx(2 * f.loc["model", "pinball_50"])
    assert 0 <= f.loc["model", "coverage_95"] <= 1 and f.loc["model", "pinball_95"] > 0
    assert f.loc[["naive", "seasonal_naive", "moving_average"], "coverage_95"].isna().all()
    assert f.loc["naive", "mase"] == pytest.approx(f.loc["naive", "mae"] / result.naive_insample_mae)


def test_backtest_returns_a_tidy_frame_per_metric_horizon_fold() -> None:
    out = backtest(metrics_of(seasonal(4, 6, 0.2)), folds=2, params=FAST)
    assert list(out.columns) == ["metric", "horizon", "fold", "test_start", "forecaster", *FIGURES]
    assert len(out) == 2 * len(HORIZONS_S) * 2 * len(FORECASTERS)
    assert set(out["metric"]) == {"cpu_cores", "mem_mib"} and set(out["horizon"]) == set(HORIZONS_S)
    assert (out["rows"] > 0).all()  # the peak's last fold too: its origins end a day before the data
    starts = out.groupby(["horizon", "fold"])["test_start"].first().unstack()
    assert (starts[1] - starts[0] == pd.Timedelta(days=1)).all()  # folds roll forward a span at a time
    naive = out[out["forecaster"] == "naive"]
    assert naive["mase"].between(0.5, 2).all()  # the same process in and out of sample: close to 1
    model = out[(out["forecaster"] == "model") & (out["horizon"] == "1h")]
    assert (model["mase"].to_numpy() < naive[naive["horizon"] == "1h"]["mase"].to_numpy()).all()


def test_a_split_without_training_data_is_an_input_error() -> None:
    grid = metric_grid(metrics_of(seasonal(2, 2, 0.1)), "cpu_cores")
    with pytest.raises(InputError, match="no training"):
        evaluate_split(grid, "1h", 5, params=FAST)
    with pytest.raises(InputError, match="too little history"):  # 24 h peaks need days before the split
        evaluate_split(grid, "24h_peak", DAY + 12, params=FAST)
    with pytest.raises(InputError, match="folds"):
        backtest(metrics_of(seasonal(2, 2, 0.1)), folds=0)
