"""The forecast at the last sample: the chosen estimators on each VM's latest feature row.

A VM whose last horizon-long window has too few samples for the features (new, or silent for a
while) gets the naive forecast from its own most recent samples, however few: the quantiles of its
last horizon's worth of samples, wherever they fall. Its name is returned so the summary can list it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.base import BaseEstimator

from advisor.config import ForecastSettings
from advisor.core import Cluster, Forecast, VMForecast
from advisor.forecast.features import FEATURES, QUANTILES, TARGETS, Grid, build_table, to_units


def forecast_on(
    grid: Grid,
    cluster: Cluster,
    models: Mapping[str, BaseEstimator],
    settings: ForecastSettings,
    model_name: str,
) -> tuple[Forecast, list[str]]:
    """The Forecast for every VM of `grid` and the VMs that fell back to their own recent values.

    A P95 below its P50 (possible with independent models) is raised to the P50."""
    last = len(grid.times) - 1
    rows = build_table(grid, cluster, settings, origins=np.array([last]))
    X = rows[list(FEATURES)]
    values = {t: to_units(rows, t, models[t].predict(X)) for t in TARGETS}
    short = rows[[f"naive_{t}" for t in TARGETS]].isna().any(axis=1).to_numpy()
    horizon = grid.steps(settings.horizon_h)
    for i in np.flatnonzero(short):
        for m, series in (("cpu", grid.cpu[i]), ("mem", grid.mem[i])):
            recent = series[~np.isnan(series)][-horizon:]
            for s, q in QUANTILES.items():
                values[f"{m}_{s}"][i] = float(np.quantile(recent, q))
    for m in ("cpu", "mem"):
        values[f"{m}_p95"] = np.maximum(values[f"{m}_p95"], values[f"{m}_p50"])
    dirty = np.zeros(len(grid.vms))
    if grid.dirty is not None:
        window = grid.dirty[:, max(0, last - horizon + 1) :]
        seen = ~np.isnan(window)
        dirty = np.where(seen.any(axis=1), np.nansum(window, axis=1) / np.maximum(seen.sum(axis=1), 1), 0.0)
    vms = {
        name: VMForecast(
            cpu_p50=float(values["cpu_p50"][i]),
            cpu_p95=float(values["cpu_p95"][i]),
            mem_p50=float(values["mem_p50"][i]),
            mem_p95=float(values["mem_p95"][i]),
            dirty_mibps=float(dirty[i]),
        )
        for i, name in enumerate(grid.vms)
    }
    result = Forecast(
        made_at=grid.times[-1].to_pydatetime(),
        horizon_s=round(settings.horizon_h * 3600),
        model=model_name,
        cluster_fingerprint=cluster.fingerprint(),
        vms=vms,
    )
    return result, [grid.vms[i] for i in np.flatnonzero(short)]
