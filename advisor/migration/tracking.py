"""MLflow record of a fitted migration correction: its parameters, the data it saw, its held-out errors,
and the model itself (sklearn flavour, skops format), as the forecasters are recorded."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import mlflow
import pandas as pd

from advisor.forecast.tracking import experiment_id, log_sklearn_model, store_at
from advisor.migration.measured import INPUT_COLUMNS
from advisor.migration.model import MigrationCorrection

logging.getLogger("mlflow").setLevel(logging.WARNING)

EXPERIMENT = "advisor-migration"
MODEL_NAME = "migration_correction"

# What skops may load back beyond plain sklearn/numpy types.
TRUSTED_TYPES = [
    "advisor.migration.precopy.Calibration",
    "advisor.migration.model.MigrationCorrection",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.Interval",
    "sklearn._loss.loss.HalfSquaredError",
]


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
    with (
        store_at(tracking_uri, "the migration model's tracking URI"),
        mlflow.start_run(
            experiment_id=experiment_id(experiment, tracking_uri), nested=mlflow.active_run() is not None
        ) as run,
    ):
        mlflow.log_params({**model.get_params(), "n_train": model.n_train_, **params})
        mlflow.log_metrics(dict(metrics))
        X = sample[list(INPUT_COLUMNS)]
        log_sklearn_model(model, MODEL_NAME, X, TRUSTED_TYPES)
        return str(run.info.run_id)
