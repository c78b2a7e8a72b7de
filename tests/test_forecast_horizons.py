"""Multi-horizon forecasts (advisor.forecast.horizons) and the forecast benchmark (bench/forecast.py)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advisor.forecast.horizons import (
    HORIZONS_S,
    MetricGrid,
    coverage,
    fit_quantiles,
    horizon_rows,
    mae,
    metric_grid,
    naive_forecast,
    sample_pairs,
    seasonal_naive_forecast,
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


# --- bench/forecast.py ------------------------------------------------------------------------------


def bench_module() -> Any:
    path = Path(__file__).resolve().parents[1] / "bench" / "forecast.py"
    spec = importlib.util.spec_from_file_location("bench_forecast", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_forecast"] = module
    spec.loader.exec_module(module)
    return module


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
        bench_module().main([*args, "--train-days", "3", "--json", "--train-rows", "2000", "--max-iter", "5"])
        == 0
    )
    out: dict[str, dict[str, dict[str, float]]] = json.loads(capsys.readouterr().out)
    return out


def test_bench_json_shape_bitbrains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bb.csv.gz"
    write_bitbrains(path, 3, 5)
    out = run_bench(["--trace", f"bitbrains:{path}"], capsys)
    assert set(out) == {"cpu", "mem"}
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
    assert bench_module().main(["--trace", "azure:x.csv", "--train-days", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --trace") and err.count("\n") == 1
