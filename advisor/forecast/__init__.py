"""Demand forecasting: per-VM CPU and memory quantiles over the planning horizon, learned globally
and never worse on validation than the naive baselines."""

from advisor.forecast.pipeline import forecast_with, train_and_forecast, train_forecaster

__all__ = ["forecast_with", "train_and_forecast", "train_forecaster"]
