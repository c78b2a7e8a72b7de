"""Live-migration cost models: the analytic pre-copy model (`predict_precopy`), its learned correction
fitted on measured migrations (`MigrationCorrection`, `fit_correction`), and what the planner, executor
and report call (`predict_migration`, `predict_migrations`, `max_live_dirty_mibps`).

`MigrationCorrection` is imported on first use: it needs scikit-learn, which the planner and the
simulator, using the analytic model, should not pay for at start-up (about 3.5 s)."""

from typing import Any

from advisor.migration.measured import MEASURED_COLUMNS, abort_deadline_s, read_measured
from advisor.migration.precopy import PrecopyEstimate, default_xbzrle_cache_mib, predict_precopy
from advisor.migration.predict import (
    MigrationPrediction,
    configured_correction,
    fit_correction,
    max_live_dirty_mibps,
    max_live_dirty_mibps_many,
    predict_migration,
    predict_migrations,
    predict_moves,
)


def __getattr__(name: str) -> Any:
    if name == "MigrationCorrection":
        from advisor.migration.model import MigrationCorrection

        return MigrationCorrection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MEASURED_COLUMNS",
    "MigrationCorrection",
    "MigrationPrediction",
    "PrecopyEstimate",
    "abort_deadline_s",
    "configured_correction",
    "default_xbzrle_cache_mib",
    "fit_correction",
    "max_live_dirty_mibps",
    "max_live_dirty_mibps_many",
    "predict_migration",
    "predict_migrations",
    "predict_moves",
    "predict_precopy",
    "read_measured",
]
