"""The forecast stage end to end: metrics -> grid -> features -> fit and choose -> MLflow -> Forecast.

`train_forecaster` and `forecast_with` also run alone (a nightly retrain; a forecast from models loaded
back from MLflow); `train_and_forecast` shares one grid between them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
from sklearn.base import BaseEstimator

from advisor.config import ForecastSettings
from advisor.core import Cluster, Forecast
from advisor.forecast.features import TARGETS, Grid, build_table, to_grid
from advisor.forecast.predict import forecast_on
from advisor.forecast.tracking import log_training
from advisor.forecast.train import Trained, fit_and_select
from advisor.metrics import validate_metrics

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def prepare(cluster: Cluster, metrics: pd.DataFrame) -> Grid:
    """Check the metrics and put the cluster's VMs on one regular grid."""
    return to_grid(validate_metrics(metrics, "metrics"), [v.name for v in cluster.vms])


def model_name(chosen: Mapping[str, str]) -> str:
    """One name when every target uses the same forecaster, else target=name pairs."""
    names = set(chosen.values())
    return names.pop() if len(names) == 1 else ",".join(f"{t}={chosen[t]}" for t in TARGETS)


def train_on(
    grid: Grid, cluster: Cluster, settings: ForecastSettings, progress: Progress = _quiet
) -> tuple[Trained, dict[str, Any]]:
    """Build the training table, fit and choose per target, log the run. Returns the trained models
    and a JSON-able summary (run id, validation MAE per target and candidate, choices, timings)."""
    t0 = time.perf_counter()
    progress(f"building features for {len(grid.vms)} VMs")
    table = build_table(grid, cluster, settings)
    t1 = time.perf_counter()
    progress("fitting and validating the forecasters")
    horizon = pd.Timedelta(seconds=grid.steps(settings.horizon_h) * grid.step_s)
    trained = fit_and_select(table, settings, horizon)
    t2 = time.perf_counter()
    progress("logging the run to MLflow")
    facts = {"vms": len(grid.vms), "step_s": grid.step_s, "origins": table["origin"].nunique()}
    logged = log_training(trained, settings, facts, table.tail(5))
    summary = {
        **logged,
        "model": model_name(trained.chosen),
        "chosen": trained.chosen,
        "val_mae": trained.val_mae,
        "rows_train": trained.rows_train,
        "rows_valid": trained.rows_valid,
        "note": trained.note,
        **facts,
        "timings_s": {"features": round(t1 - t0, 2), "fit": round(t2 - t1, 2)},
    }
    return trained, summary


def train_forecaster(
    cluster: Cluster, metrics: pd.DataFrame, settings: ForecastSettings, progress: Progress | None = None
) -> tuple[Trained, dict[str, Any]]:
    return train_on(prepare(cluster, metrics), cluster, settings, progress or _quiet)


def forecast_with(
    cluster: Cluster,
    metrics: pd.DataFrame,
    models: Mapping[str, BaseEstimator],
    settings: ForecastSettings,
    name: str = "loaded",
) -> Forecast:
    """The forecast from already fitted models (one per target, e.g. loaded back from MLflow)."""
    return forecast_on(prepare(cluster, metrics), cluster, models, settings, name)[0]


def train_and_forecast(
    cluster: Cluster, metrics: pd.DataFrame, settings: ForecastSettings, progress: Progress | None = None
) -> tuple[Forecast, dict[str, Any]]:
    """Train on all of `metrics`, log to MLflow and forecast every VM of `cluster` from the last sample."""
    say = progress or _quiet
    t0 = time.perf_counter()
    say("resampling metrics")
    grid = prepare(cluster, metrics)
    t1 = time.perf_counter()
    trained, summary = train_on(grid, cluster, settings, say)
    say("forecasting")
    t2 = time.perf_counter()
    result, short = forecast_on(grid, cluster, trained.models, settings, summary["model"])
    summary["naive_fallback_vms"] = short
    summary["timings_s"] |= {"grid": round(t1 - t0, 2), "predict": round(time.perf_counter() - t2, 2)}
    return result, summary
