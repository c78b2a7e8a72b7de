"""Multi-horizon forecasts (advisor.forecast.horizons) and the forecast benchmark (bench/forecast.py)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from benchscript import bench_script
from hypothesis import given, settings
from hypothesis import strategies as st

from advisor.errors import InputError
from advisor.forecast.dirtyrate import DirtyRateForecaster, dirty_grid, fit_dirty_rate, forecast_dirty_rate
from advisor.forecast.horizons import (
    HORIZONS_S,
    HorizonForecaster,
    MeanForecaster,
    MetricGrid,
    MovingAverageBaseline,
    NaiveBaseline,
    Partner,
    SeasonalNaiveBaseline,
    _gathered,
    _rolling,
    conformal_offset,
    coverage,
    feature_columns,
    fit_quantiles,
    forecast_latest,
    horizon_rows,
    latest_rows,
    mae,
    metric_grid,
    naive_forecast,
    sample_pairs,
    seasonal_naive_forecast,
    validation_split,
)

STEP = 300
DAY = 288
START = pd.Timestamp("2024-01-01", tz="UTC")  # a Monday, midnight


def frame(values: np.ndarray) -> pd.DataFrame:
    """Metrics of len(values) VMs, one sample every 5 min from START; NaN values are left out."""
    n_vm, n_t = values.shape
    df = pd.DataFrame(
        {
            "vm": np.repeat([f"vm{i}" for i in range(n_vm)], n_t),
            "ts": np.tile(START + pd.to_timedelta(np.arange(n_t) * STEP, unit="s"), n_vm),
            "cpu_cores": values.reshape(-1),
        }
    )
    df["mem_mib"] = 2 * df["cpu_cores"]
    return df.dropna().reset_index(drop=True)


def grid_of(values: np.ndarray) -> MetricGrid:
    return metric_grid(frame(values), "cpu_cores")


def seasonal_values(n_vm: int, days: int, noise: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(days * DAY)
    amp = rng.uniform(0.5, 4.0, size=(n_vm, 1))
    base = rng.uniform(1.0, 5.0, size=(n_vm, 1))
    wave = base + amp * (1 + np.sin(2 * np.pi * t / DAY))[None, :]
    return np.maximum(wave + rng.normal(0, noise, size=wave.shape), 0)


def test_baselines_and_targets_match_their_definitions() -> None:
    values = np.arange(2 * 3 * DAY, dtype=float).reshape(2, -1) % 97  # not periodic in a day
    grid = grid_of(values)
    vm, origin = np.array([0, 1, 1]), np.array([DAY + 5, 2 * DAY - 1, DAY + 100])
    for horizon, ahead in (("5min", 1), ("1h", 12)):
        rows = horizon_rows(grid, horizon, vm, origin, floor=0.01)
        np.testing.assert_array_equal(rows.naive, values[vm, origin])
        np.testing.assert_array_equal(rows.seasonal, values[vm, origin + ahead - DAY])
        np.testing.assert_array_equal(rows.target, values[vm, origin + ahead])
    rows = horizon_rows(grid, "24h_peak", vm, origin, floor=0.01)
    for i, (v, o) in enumerate(zip(vm, origin, strict=True)):
        assert rows.naive[i] == values[v, o - DAY + 1 : o + 1].max()
        assert rows.seasonal[i] == values[v, 0:DAY].max()  # every origin is on day 2: day 1 is previous
        assert rows.target[i] == values[v, o + 1 : o + DAY + 1].max()


def test_seasonal_naive_falls_back_to_naive_without_a_day_of_history() -> None:
    values = seasonal_values(1, 2, 0.0)
    rows = horizon_rows(grid_of(values), "1h", np.array([0, 0]), np.array([10, DAY + 10]), floor=0.01)
    assert np.isnan(rows.seasonal[0])
    assert seasonal_naive_forecast(rows)[0] == naive_forecast(rows)[0] == values[0, 10]
    assert seasonal_naive_forecast(rows)[1] == values[0, 22]


def test_targets_past_the_grid_or_in_gaps_are_missing() -> None:
    values = seasonal_values(1, 3, 0.1)
    values[0, 200] = np.nan
    grid = grid_of(values)
    rows = horizon_rows(grid, "5min", np.array([0, 0]), np.array([199, 3 * DAY - 1]), floor=0.01)
    assert np.isnan(rows.target).all()
    assert rows.naive[1] == values[0, -1]
    assert horizon_rows(grid, "5min", np.array([0]), np.array([200]), floor=0.01).naive[0] == values[0, 199]


@settings(max_examples=15, deadline=None)
@given(
    cut=st.integers(DAY, 3 * DAY - 2), seed=st.integers(0, 1000), horizon=st.sampled_from(list(HORIZONS_S))
)
def test_features_do_not_see_the_future(cut: int, seed: int, horizon: str) -> None:
    values = seasonal_values(2, 3, 0.5, seed)
    changed = values.copy()
    changed[:, cut + 1 :] = np.random.default_rng(seed).uniform(0, 50, size=changed[:, cut + 1 :].shape)
    origin = np.array([cut, cut - 7, cut - DAY + 3])
    vm = np.array([0, 1, 1])
    a = horizon_rows(grid_of(values), horizon, vm, origin, floor=0.01)
    b = horizon_rows(grid_of(changed), horizon, vm, origin, floor=0.01)
    pd.testing.assert_frame_equal(a.X, b.X)
    np.testing.assert_array_equal(a.naive, b.naive)
    np.testing.assert_array_equal(a.seasonal, b.seasonal)
    assert not np.array_equal(a.target[:1], b.target[:1])  # the target does see it


def test_change_model_beats_naive_on_a_seasonal_fleet() -> None:
    values = seasonal_values(20, 6, 0.05)
    grid = grid_of(values)
    split = 4 * DAY
    train = horizon_rows(grid, "1h", *sample_pairs(20, np.arange(DAY, split - 12), 5000), floor=0.01)
    models = fit_quantiles(train, max_iter=60)
    origins = np.arange(split, 6 * DAY - 12)
    test = horizon_rows(grid, "1h", np.repeat(np.arange(20), len(origins)), np.tile(origins, 20), floor=0.01)
    model_mae = mae(test.target, models[0.5].predict(test.X))
    assert model_mae < 0.5 * mae(test.target, naive_forecast(test))
    assert 0.85 <= coverage(test.target, models[0.95].predict(test.X)) <= 1.0
    assert (models[0.95].predict(test.X) >= models[0.5].predict(test.X) - 1e-9).mean() > 0.95


def test_coverage_counts_targets_at_or_below_the_upper_forecast() -> None:
    assert coverage(np.array([1.0, 2, 3, 4]), np.array([1.0, 1, 5, 3])) == 0.5
    assert mae(np.array([1.0, 2]), np.array([2.0, 4])) == 1.5


def test_sample_pairs_are_distinct_and_bounded() -> None:
    vm, origin = sample_pairs(5, np.arange(10, 30), 40, seed=1)
    assert len(set(zip(vm.tolist(), origin.tolist(), strict=True))) == 40
    assert vm.max() < 5 and origin.min() >= 10 and origin.max() < 30
    assert len(sample_pairs(2, np.arange(3), 100)[0]) == 6


def test_unknown_horizon_is_rejected() -> None:
    with pytest.raises(ValueError, match="horizon"):
        horizon_rows(grid_of(seasonal_values(1, 1, 0.0)), "2h", np.array([0]), np.array([0]), floor=0.01)


def all_rows(grid: MetricGrid, horizon: str, origins: np.ndarray, floor: float = 0.01) -> Any:
    n = len(grid.vms)
    return horizon_rows(grid, horizon, np.repeat(np.arange(n), len(origins)), np.tile(origins, n), floor)


def fitted(grid: MetricGrid, horizon: str, end: int, **params: Any) -> HorizonForecaster:
    """A HorizonForecaster fitted on every (VM, origin) whose target is before grid index `end`."""
    rows = all_rows(grid, horizon, np.arange(0, end - grid.steps(HORIZONS_S[horizon])))
    ok = np.isfinite(rows.target)
    return HorizonForecaster(horizon=horizon, **{"max_iter": 40, **params}).fit(rows.X[ok], rows.target[ok])


def test_baseline_estimators_read_their_columns() -> None:
    values = seasonal_values(3, 3, 0.3)
    rows = all_rows(grid_of(values), "1h", np.arange(DAY, 2 * DAY))
    X = rows.X
    np.testing.assert_array_equal(NaiveBaseline().fit(X).predict(X), naive_forecast(rows))
    np.testing.assert_array_equal(SeasonalNaiveBaseline().fit(X).predict(X), seasonal_naive_forecast(rows))
    hour = MovingAverageBaseline(window="1h").fit(X).predict(X)
    i = 7
    v, o = rows.vm[i], rows.origin[i]
    assert hour[i] == pytest.approx(values[v, o - 11 : o + 1].mean())
    with pytest.raises(ValueError, match="window"):
        MovingAverageBaseline(window="5h").fit(X)
    assert "vm" not in feature_columns(X) and "base" not in feature_columns(X)
    assert not any(c.startswith("bl_") for c in feature_columns(X))


def test_moving_average_picks_the_window_the_data_favours() -> None:
    rng = np.random.default_rng(3)
    noisy = 5 + rng.normal(0, 1, size=(4, 3 * DAY))  # white noise: the longest mean wins
    steps = np.repeat(rng.uniform(0, 10, size=(4, 3 * DAY // 6)), 6, axis=1)  # holds 30 min, then jumps
    for values, expected in ((noisy, "6h"), (steps, "0.25h")):
        rows = all_rows(grid_of(values), "5min", np.arange(DAY, 3 * DAY - 1))
        ok = np.isfinite(rows.target)
        assert MovingAverageBaseline().fit(rows.X[ok], rows.target[ok]).window_ == expected


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    width=st.integers(1, 40),
    holes=st.floats(0, 0.6),
    min_periods=st.integers(1, 5),
)
def test_gathered_windows_equal_pandas_rolling(seed: int, width: int, holes: float, min_periods: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(6, 120))
    x[rng.random(x.shape) < holes] = np.nan
    vm, idx = rng.integers(0, 6, 200), rng.integers(-3, 125, 200)  # some off the grid: NaN
    stats = ("mean", "std", "max", "min", "median")
    got = _gathered(x, vm, idx, width, stats, min(min_periods, width))
    for s in stats:
        rolled = _rolling(x, width, s, min(min_periods, width))
        inside = (idx >= 0) & (idx < 120)
        expected = np.where(inside, rolled[vm, np.clip(idx, 0, 119)], np.nan)
        np.testing.assert_allclose(got[s], expected, equal_nan=True, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("hours", [2, 13, 20, 30])
def test_rows_of_a_history_shorter_than_a_day(hours: int) -> None:
    """The replay simulator fits on its first hours: every day-long shift then falls before the grid
    (13-23 h once failed: a shift between one and two spans)."""
    grid = grid_of(seasonal_values(3, 2, 0.2)[:, : hours * 12])
    origins = np.arange(len(grid.times))
    for horizon in ("5min", "1h"):
        rows = all_rows(grid, horizon, origins)
        assert len(rows.X) == 3 * len(origins)
        if hours < 24:  # no day-old value to have forecast with
            assert rows.X["sk_seasonal_1d"].isna().all()
        if hours >= 13:  # a quarter of the day's hourly samples seen
            assert rows.X["sk_naive_1d"].notna().any()


def test_skill_features_tell_a_vm_that_falls_back_from_one_that_stays() -> None:
    """A spiky VM (idle at 1 with 10-minute bursts to 9) is best forecast by its recent median, one that
    steps and stays (a random walk) by its last value: the week's error ratio says which is which."""
    rng = np.random.default_rng(3)
    n_t = 9 * DAY
    spiky = np.where(rng.random(n_t) < 0.04, 9.0, 1.0)
    spiky = np.maximum(spiky, np.roll(spiky, 1))  # bursts of two steps
    stepping = 5 + np.cumsum(rng.choice([0.0, 1.0, -1.0], n_t, p=[0.9, 0.05, 0.05]))
    grid = grid_of(np.vstack([spiky, stepping]))
    rows = horizon_rows(grid, "1h", np.array([0, 1]), np.array([n_t - 1, n_t - 1]), floor=0.01)
    ratio = rows.X["sk_rel_median_1h"].to_numpy()
    assert ratio[0] < -0.3 and ratio[1] > 0.0
    assert (rows.X[["sk_naive_1d", "sk_naive_7d"]].to_numpy() > 0).all()
    peak = horizon_rows(grid, "24h_peak", np.array([0]), np.array([n_t - 1]), floor=0.01)
    assert not any(c.startswith("sk_") for c in peak.X.columns)  # point horizons only


@pytest.mark.parametrize("horizon", list(HORIZONS_S))
def test_a_few_rows_get_the_features_of_many(horizon: str) -> None:
    """Few rows gather their windows, many roll the whole grid: the features must not depend on it."""
    grid = grid_of(seasonal_values(3, 9, 0.4, seed=5))
    few_vm, few_o = np.array([0, 2, 1]), np.array([8 * DAY, 5 * DAY + 7, 9 * DAY - 1])
    many = all_rows(grid, horizon, np.arange(DAY, 9 * DAY))
    few = horizon_rows(grid, horizon, few_vm, few_o, floor=0.01)
    pick = [
        int(np.flatnonzero((many.vm == v) & (many.origin == o))[0])
        for v, o in zip(few_vm, few_o, strict=True)
    ]
    pd.testing.assert_frame_equal(few.X, many.X.iloc[pick].reset_index(drop=True), rtol=1e-7)
    np.testing.assert_allclose(few.target, many.target[pick], equal_nan=True)


def test_horizon_forecaster_beats_naive_on_a_seasonal_fleet() -> None:
    grid = grid_of(seasonal_values(12, 6, 0.05))
    model = fitted(grid, "1h", 4 * DAY)
    test = all_rows(grid, "1h", np.arange(4 * DAY, 6 * DAY - 12))
    q = model.predict_quantiles(test.X)
    assert mae(test.target, q[0.5]) < 0.5 * mae(test.target, naive_forecast(test))
    assert (q[0.95] >= q[0.5]).all()
    assert model.naive_vms_ == frozenset()


def test_calibrated_p95_covers_95_percent_of_a_stationary_fleet() -> None:
    rng = np.random.default_rng(11)
    n_vm, days = 30, 8
    level = rng.uniform(1, 10, size=(n_vm, 1))
    noise = rng.gamma(2.0, 0.2, size=(n_vm, days * DAY)) * level  # skewed, scale grows with the level
    grid = grid_of(level + noise)
    model = fitted(grid, "5min", 5 * DAY, max_iter=20)
    test = all_rows(grid, "5min", np.arange(5 * DAY, days * DAY - 1))
    assert 0.93 <= coverage(test.target, model.predict_quantiles(test.X)[0.95]) <= 0.97


def test_per_vm_fallback_picks_naive_where_naive_is_exact() -> None:
    values = seasonal_values(10, 6, 0.05)
    values[3] = 2.5  # a flat VM: the last value is exact, a learned change can only be worse
    grid = grid_of(values)
    model = fitted(grid, "1h", 5 * DAY)
    assert "vm3" in model.naive_vms_
    assert len(model.naive_vms_) < 3  # the seasonal VMs keep the model
    test = all_rows(grid, "1h", np.arange(5 * DAY, 6 * DAY - 12))
    flat = test.vm == 3
    np.testing.assert_array_equal(model.predict(test.X)[flat], 2.5)
    assert model.validation_["fallback_mae"] <= model.validation_["naive_mae"]


def test_validation_split_keeps_training_targets_before_validation() -> None:
    origin = pd.Series(START + pd.to_timedelta(np.arange(100) * STEP, unit="s"))
    train, valid = validation_split(origin, "1h", 0.2)
    first_valid = origin[valid].min()
    assert valid.sum() == 20 and (origin[train] + pd.Timedelta(hours=1) <= first_valid).all()
    assert train.sum() == 80 - 12  # origins whose target would fall in the validation span are dropped


def test_conformal_offset_is_the_finite_sample_quantile() -> None:
    scores = np.arange(1.0, 20.0)  # 19 scores: ceil(20 * 0.95) = 19th smallest
    assert conformal_offset(scores, 0.95) == 19.0
    assert conformal_offset(np.arange(1.0, 101.0), 0.9) == 91.0
    assert conformal_offset(np.array([]), 0.95) == 0.0


def test_forecast_latest_gives_every_vm_each_horizon() -> None:
    grid = grid_of(seasonal_values(4, 4, 0.1))
    models = {"5min": fitted(grid, "5min", 4 * DAY), "1h": fitted(grid, "1h", 4 * DAY)}
    out = forecast_latest(models, grid, floor=0.01)
    assert len(out) == 8 and set(out["horizon"]) == {"5min", "1h"}
    assert (out["upper"] >= out["p50"]).all() and np.isfinite(out["p50"]).all()
    last = latest_rows(grid, "1h", 0.01)
    assert (last.origin == len(grid.times) - 1).all()


def leader_and_follower(n_vm: int, days: int, seed: int = 3) -> pd.DataFrame:
    """Metrics where memory rises at random times and CPU follows it exactly an hour later, for as long:
    from its own history CPU's rise is a surprise, from memory's it is not."""
    rng = np.random.default_rng(seed)
    n_t = days * DAY
    mem = np.full((n_vm, n_t), 1000.0)
    cpu = np.full((n_vm, n_t), 0.5)
    for vm in range(n_vm):
        t = int(rng.integers(0, 60))
        while t < n_t:
            busy = int(rng.integers(12, 48))
            mem[vm, t : t + busy] = 3000.0
            cpu[vm, t + 12 : t + 12 + busy] = 3.0
            t += busy + 12 + int(rng.integers(12, 72))
    df = frame(cpu + rng.normal(0, 0.02, cpu.shape))
    df["mem_mib"] = (mem + rng.normal(0, 5, mem.shape)).reshape(-1)
    return df


def test_a_partner_metric_that_leads_makes_the_forecast_better() -> None:
    metrics = leader_and_follower(12, 6)
    cpu, mem = metric_grid(metrics, "cpu_cores"), metric_grid(metrics, "mem_mib")
    partner = Partner(mem, floor=10.0)
    train_o, test_o = np.arange(DAY, 4 * DAY - 12), np.arange(4 * DAY, 6 * DAY - 12)

    def test_mae(with_partner: Partner | None) -> float:
        n = len(cpu.vms)
        train = horizon_rows(cpu, "1h", *sample_pairs(n, train_o, 6000), 0.01, with_partner)
        ok = np.isfinite(train.target)
        model = HorizonForecaster(horizon="1h", max_iter=60).fit(train.X[ok], train.target[ok])
        test = horizon_rows(
            cpu, "1h", np.repeat(np.arange(n), len(test_o)), np.tile(test_o, n), 0.01, with_partner
        )
        return mae(test.target, model.predict(test.X))

    alone, led = test_mae(None), test_mae(partner)
    assert led < 0.5 * alone, (led, alone)


def test_a_partner_must_be_on_the_same_grid_and_a_model_fitted_with_one_needs_it() -> None:
    metrics = leader_and_follower(4, 3)
    cpu, mem = metric_grid(metrics, "cpu_cores"), metric_grid(metrics, "mem_mib")
    short = metric_grid(metrics[metrics["vm"] != "vm3"], "mem_mib")
    with pytest.raises(ValueError, match="partner"):
        horizon_rows(cpu, "1h", np.array([0]), np.array([DAY]), 0.01, Partner(short, 10.0))
    model = fitted(cpu, "1h", 2 * DAY)  # no partner: its rows have no x_* features
    rows = all_rows(cpu, "1h", np.arange(DAY, 2 * DAY))
    ok = np.isfinite(rows.target)
    with_partner = horizon_rows(cpu, "1h", rows.vm, rows.origin, 0.01, Partner(mem, 10.0))
    assert {c for c in with_partner.X.columns if c.startswith("x_")} == {
        "x_level",
        "x_log",
        "x_d_lag_15m",
        "x_d_mean_1h",
        "x_d_max_1h",
    }
    led = HorizonForecaster(horizon="1h", max_iter=20).fit(with_partner.X[ok], with_partner.target[ok])
    with pytest.raises(ValueError, match="partner"):
        led.predict(rows.X)
    assert np.isfinite(model.predict(rows.X)).all()


def test_bagged_p50_is_the_mean_of_models_fitted_on_different_samples() -> None:
    grid = grid_of(seasonal_values(8, 5, 0.3))
    model = fitted(grid, "1h", 4 * DAY, bags=3, max_train_rows=400, refit=False)
    assert isinstance(model.p50_, MeanForecaster) and len(model.p50_.members) == 3
    test = all_rows(grid, "1h", np.arange(4 * DAY, 5 * DAY - 12))
    each = [m.predict(test.X) for m in model.p50_.members]
    assert not np.allclose(each[0], each[1])  # different samples and seeds
    learned = ~test.X["vm"].isin(model.naive_vms_).to_numpy()
    np.testing.assert_allclose(model.predict(test.X)[learned], np.mean(each, axis=0)[learned])
    with pytest.raises(ValueError, match="bags"):
        fitted(grid, "1h", 4 * DAY, bags=0)


def test_fits_run_side_by_side_with_the_same_result() -> None:
    grid = grid_of(seasonal_values(8, 5, 0.3))
    test = all_rows(grid, "1h", np.arange(4 * DAY, 5 * DAY - 12))
    alone = fitted(grid, "1h", 4 * DAY, bags=2, max_train_rows=400)
    side_by_side = fitted(grid, "1h", 4 * DAY, bags=2, max_train_rows=400, n_jobs=2)
    q, r = alone.predict_quantiles(test.X), side_by_side.predict_quantiles(test.X)
    np.testing.assert_array_equal(q[0.5], r[0.5])
    np.testing.assert_array_equal(q[0.95], r[0.95])
    assert alone.naive_vms_ == side_by_side.naive_vms_ and alone.offset_ == side_by_side.offset_
    assert isinstance(side_by_side.p50_, MeanForecaster) and len(side_by_side.p50_.members) == 2


def dirty_frame(values: np.ndarray) -> pd.DataFrame:
    """CPU and memory of every VM, with `values` as their dirty rates (NaN: not measured)."""
    df = frame(np.ones_like(values))
    df["dirty_mibps"] = values.reshape(-1)
    return df


def test_dirty_rate_forecaster_learns_a_daily_pattern_and_skips_unmeasured_vms() -> None:
    values = 20 * seasonal_values(7, 5, 0.05, seed=2)
    values[6] = np.nan  # a VM the collector has no dirty rate for
    fitted = fit_dirty_rate(dirty_frame(values[:, : 4 * DAY]), max_iter=40)
    assert isinstance(fitted.model, DirtyRateForecaster) and fitted.model.horizon == "5min"
    out = forecast_dirty_rate(fitted, dirty_frame(values[:, : 4 * DAY]))
    assert list(out["vm"]) == [f"vm{i}" for i in range(6)]
    assert (out["upper_mibps"] >= out["p50_mibps"]).all()
    grid = dirty_grid(dirty_frame(values))
    test = all_rows(grid, "5min", np.arange(4 * DAY, 5 * DAY - 1), floor=fitted.floor)
    model_mae = mae(test.target, fitted.model.predict(test.X))
    assert model_mae < 0.8 * mae(test.target, naive_forecast(test))


@pytest.mark.parametrize("column", ["absent", "all NaN"])
def test_missing_dirty_rates_are_an_input_error(column: str) -> None:
    df = frame(seasonal_values(2, 1, 0.1))
    if column == "all NaN":
        df["dirty_mibps"] = np.nan
    with pytest.raises(InputError, match="no dirty_mibps values"):
        fit_dirty_rate(df)
    with pytest.raises(InputError, match="no dirty_mibps values"):
        metric_grid(df, "dirty_mibps")


def test_too_short_a_dirty_history_is_an_input_error() -> None:
    with pytest.raises(InputError, match="too little"):
        fit_dirty_rate(dirty_frame(np.ones((2, 3))))


# --- bench/forecast.py ------------------------------------------------------------------------------


def write_bitbrains(path: Path, n_vm: int, days: int) -> None:
    values = seasonal_values(n_vm, days, 0.3)
    t0 = int(START.timestamp())
    rows = ["vm,ts,cpu_cores,cpu_cap_mhz,cpu_pct,mem_cap_mb,mem_used_mb"]
    for v in range(n_vm):
        for i in range(days * DAY):
            rows.append(
                f"{v + 1},{t0 + i * STEP},2,5000,{values[v, i] * 10:.2f},4096,{500 + 50 * values[v, i]:.1f}"
            )
    with gzip.open(path, "wt") as f:
        f.write("\n".join(rows) + "\n")


def write_planetlab(folder: Path, days: int) -> list[str]:
    paths = []
    for d in range(days):
        values = seasonal_values(4, 1, 2.0, seed=d)
        names = [f"node{v}" for v in range(4)] if d else [f"node{v}" for v in range(5)]
        lines = ["vm,step,cpu"]
        for v, name in enumerate(names):
            for s in range(DAY):
                lines.append(f"{name},{s},{int(10 * values[min(v, 3), s])}")
        path = folder / f"2011030{d + 1}.csv.gz"
        with gzip.open(path, "wt") as f:
            f.write("\n".join(lines) + "\n")
        paths.append(f"planetlab:{path}")
    return paths


FIGURES = {"model_mae", "naive_mae", "seasonal_naive_mae", "ratio", "p95_coverage"}


def run_bench(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, dict[str, float]]]:
    assert (
        bench_script("forecast").main(
            [*args, "--train-days", "3", "--json", "--train-rows", "2000", "--max-iter", "5"]
        )
        == 0
    )
    out: dict[str, dict[str, dict[str, float]]] = json.loads(capsys.readouterr().out)
    return out


def test_bench_json_shape_bitbrains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bb.csv.gz"
    write_bitbrains(path, 3, 5)
    out = run_bench(["--trace", f"bitbrains:{path}"], capsys)
    assert set(out) == {"cpu", "cpu_cores", "mem"}
    for metric in out.values():
        assert set(metric) == set(HORIZONS_S)
        for figures in metric.values():
            assert set(figures) == FIGURES
            assert figures["ratio"] == pytest.approx(
                figures["model_mae"] / min(figures["naive_mae"], figures["seasonal_naive_mae"])
            )
            assert 0 <= figures["p95_coverage"] <= 1


def test_bench_json_shape_planetlab(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_bench([a for p in write_planetlab(tmp_path, 5) for a in ("--trace", p)], capsys)
    assert set(out) == {"cpu"} and set(out["cpu"]) == set(HORIZONS_S)
    assert all(np.isfinite(f["model_mae"]) for f in out["cpu"].values())


def test_bench_reports_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_script("forecast").main(["--trace", "azure:x.csv", "--train-days", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --trace") and err.count("\n") == 1
    days = [a for p in write_planetlab(tmp_path, 5) for a in ("--trace", p)]
    assert bench_script("forecast").main([*days, "--train-days", "3", "--bags", "0", "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: forecaster settings") and "bags must be at least 1" in err
    assert err.count("\n") == 1
    peak_only = [*days, "--horizons", "24h_peak", "--json"]
    assert bench_script("forecast").main([*peak_only, "--train-days", "1"]) == 2  # no day of peaks yet
    err = capsys.readouterr().err
    assert err.startswith("error: --train-days 1: too little history") and err.count("\n") == 1
