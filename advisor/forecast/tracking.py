"""MLflow record of a training run: parameters, validation and backtest errors, the chosen models and
the model card.

The models are logged with the sklearn flavour; loading them back needs `advisor` importable (they
are advisor.forecast.models classes) and a feature table with the FEATURES columns. The registry
(versions and aliases) is advisor.forecast.registry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import sklearn
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from sklearn.base import BaseEstimator

from advisor.config import ForecastSettings
from advisor.errors import AdvisorError
from advisor.forecast.features import FEATURES
from advisor.forecast.train import Trained

# MLflow's INFO lines (database creation and migrations) drown the progress of a nightly run.
logging.getLogger("mlflow").setLevel(logging.WARNING)

# Given explicitly: inferring them starts a subprocess per model and costs seconds.
PIP_REQUIREMENTS = [
    f"scikit-learn=={sklearn.__version__}",
    f"pandas=={pd.__version__}",
    f"numpy=={np.__version__}",
]

MODEL_NAME = "forecaster"  # the whole forecaster in a retraining run
CARD_JSON = "model_card.json"  # the model card of a retraining run
CARD_MD = "model_card.md"

# What skops (MLflow's default sklearn serialisation) may load back beyond plain sklearn/numpy types.
TRUSTED_TYPES = [
    "advisor.forecast.models.NaiveForecaster",
    "advisor.forecast.models.SeasonalNaiveForecaster",
    "advisor.forecast.models.QuantileGBMForecaster",
    "advisor.forecast.registry.ForecastBundle",
    "advisor.forecast.ahead.AheadForecaster",
    "advisor.forecast.horizons.HorizonForecaster",
    "advisor.forecast.horizons.ChangeForecaster",
    "advisor.forecast.horizons.MeanForecaster",
    "advisor.forecast.dirtyrate.DirtyRateForecaster",
    "builtins.frozenset",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
]


def log_sklearn_model(
    model: Any, name: str, X: pd.DataFrame, trusted_types: list[str] = TRUSTED_TYPES
) -> Any:
    """Log `model` in MLflow's sklearn flavour (skops-serialised, `trusted_types` allowed on load) with
    the signature of its predictions on `X`. Returns MLflow's ModelInfo."""
    return mlflow.sklearn.log_model(
        model,
        name=name,
        signature=infer_signature(X, model.predict(X)),
        pip_requirements=PIP_REQUIREMENTS,
        skops_trusted_types=trusted_types,
    )


def artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a new experiment in a local SQLite store go next to the database (`mlartifacts/`),
    not into whatever directory the command happens to run in; other stores decide for themselves."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return (Path(tracking_uri[len(prefix) :]).resolve().parent / "mlartifacts").as_uri()


@contextmanager
def store_at(tracking_uri: str, named_by: str) -> Iterator[None]:
    """MLflow calls against `tracking_uri`; an unreachable or unusable store becomes a one-line
    AdvisorError naming where the URI came from (a configuration problem, not a crash)."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    except (MlflowException, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise AdvisorError(f"MLflow at {tracking_uri} ({named_by}): {first}") from None
    finally:
        mlflow.set_tracking_uri(previous)


def store(settings: ForecastSettings) -> AbstractContextManager[None]:
    return store_at(settings.tracking_uri, "forecast.tracking_uri")


def experiment_id(experiment: str, tracking_uri: str) -> str:
    """The experiment's id in the current store, created (artifacts beside a SQLite store) if new."""
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        return str(found.experiment_id)
    return mlflow.create_experiment(experiment, artifact_location=artifact_location(tracking_uri))


def _experiment_id(settings: ForecastSettings) -> str:
    return experiment_id(settings.experiment, settings.tracking_uri)


def log_training(
    trained: Trained, settings: ForecastSettings, params: Mapping[str, Any], sample: pd.DataFrame
) -> dict[str, Any]:
    """Record `trained` as one run of `settings.experiment`. `params` adds data facts (VMs, rows,
    step); `sample` (a few feature rows) gives the models' signature. Returns run id and timings."""
    started = time.perf_counter()
    with store(settings):
        experiment_id = _experiment_id(settings)
        with mlflow.start_run(experiment_id=experiment_id, nested=mlflow.active_run() is not None) as run:
            _log_trained(trained, settings, params)
            opened = time.perf_counter()
            X = sample[list(FEATURES)]
            for target, model in trained.models.items():
                log_sklearn_model(model, target, X)
            run_id = run.info.run_id
    done = time.perf_counter()
    return {
        "run_id": run_id,
        "experiment_id": experiment_id,
        "tracking_uri": settings.tracking_uri,
        "mlflow_run_s": round(opened - started, 2),
        "mlflow_models_s": round(done - opened, 2),
    }


def _log_trained(trained: Trained, settings: ForecastSettings, params: Mapping[str, Any]) -> None:
    mlflow.log_params({**settings.model_dump(), **trained.params, **params})
    mlflow.log_metrics(
        {
            f"val_mae_{target}_{name}": value
            for target, scores in trained.val_mae.items()
            for name, value in scores.items()
        }
        | {"rows_train": trained.rows_train, "rows_valid": trained.rows_valid}
    )
    mlflow.set_tags({f"chosen_{t}": name for t, name in trained.chosen.items()} | {"note": trained.note})


def log_forecaster(
    model: BaseEstimator,
    trained: Trained,
    settings: ForecastSettings,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    sample: pd.DataFrame,
) -> dict[str, Any]:
    """Record a retraining run: what `log_training` records, the backtest `metrics`, and the whole
    forecaster `model` (one sklearn-flavour model named MODEL_NAME, the unit the registry versions).
    Returns run id, experiment id, the logged model's URI and id."""
    with store(settings):
        experiment_id = _experiment_id(settings)
        with mlflow.start_run(experiment_id=experiment_id, nested=mlflow.active_run() is not None) as run:
            _log_trained(trained, settings, params)
            mlflow.log_metrics(dict(metrics))
            X = sample[list(FEATURES)]
            info = log_sklearn_model(model, MODEL_NAME, X)
    return {
        "run_id": run.info.run_id,
        "experiment_id": experiment_id,
        "model_uri": info.model_uri,
        "model_id": info.model_id,
    }


def log_card(settings: ForecastSettings, run_id: str, card: Mapping[str, Any], markdown: str) -> None:
    """Attach the model card to the run, as JSON (for tools) and Markdown (for the MLflow UI)."""
    with store(settings):
        client = MlflowClient(settings.tracking_uri)
        client.log_dict(run_id, dict(card), CARD_JSON)
        client.log_text(run_id, markdown, CARD_MD)
