"""Live-migration cost models."""

from advisor.migration.precopy import PrecopyEstimate, predict_precopy

__all__ = ["PrecopyEstimate", "predict_precopy"]
