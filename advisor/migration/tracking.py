"""MLflow record of a fitted migration correction: its parameters, the data it saw, its held-out errors,
and the model itself (sklearn flavour, skops format), as the forecasters are recorded."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from advisor.errors import AdvisorError
from advisor.forecast.tracking import PIP_REQUIREMENTS, artifact_location
from advisor.migration.measured import INPUT_COLUMNS
from advisor.migration.model import MigrationCorrection

logging.getLogger("mlflow").setLevel(logging.WARNING)

EXPERIMENT = "advisor-migration"
MODEL_NAME = "migration_correction"

# What skops may load back beyond plain sklearn/numpy types.
TRUSTED_TYPES = [
    "advisor.migration.model.Calibration",
    "advisor.migration.model.MigrationCorrection",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.Interval",
    "sklearn._loss.loss.HalfSquaredError",
]


@contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def log_correction(
    model: MigrationCorrection,
    tracking_uri: str,
    sample: pd.DataFrame,
    metrics: Mapping[str, float],
    params: Mapping[str, Any],
    experiment: str = EXPERIMENT,
) -> str:
    """Record `model` as one run of `experiment`; `sample` (a few input rows) gives its signature,
    `params` adds data facts (files, rows). Returns the run id."""
    try:
        with _tracking_uri(tracking_uri):
            found = mlflow.get_experiment_by_name(experiment)
            experiment_id = (
                found.experiment_id
                if found is not None
                else mlflow.create_experiment(experiment, artifact_location=artifact_location(tracking_uri))
            )
            with mlflow.start_run(experiment_id=experiment_id, nested=mlflow.active_run() is not None) as run:
                mlflow.log_params({**model.get_params(), "n_train": model.n_train_, **params})
                mlflow.log_metrics(dict(metrics))
                X = sample[list(INPUT_COLUMNS)]
                mlflow.sklearn.log_model(
                    model,
                    name=MODEL_NAME,
                    signature=infer_signature(X, model.predict(X)),
                    pip_requirements=PIP_REQUIREMENTS,
                    skops_trusted_types=TRUSTED_TYPES,
                )
                return str(run.info.run_id)
    except (MlflowException, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise AdvisorError(f"MLflow at {tracking_uri}: {first}") from None
