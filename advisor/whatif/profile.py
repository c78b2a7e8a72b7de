"""Utilisation by hour of day, for the heatmap: each VM's mean CPU per UTC hour over its history, summed
on the host a plan puts it on. It shows when in the day a what-if placement runs hot, which the P95
figures (one number per host) cannot."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from advisor.core import Cluster, Forecast

HOURS = 24


def hourly_profiles(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean CPU cores per VM (rows) and UTC hour of day (columns 0..23); hours never sampled take the
    VM's overall mean."""
    hour = pd.DatetimeIndex(metrics["ts"]).hour
    table = metrics.groupby([metrics["vm"], hour])["cpu_cores"].mean().unstack()
    table = table.reindex(columns=range(HOURS))
    return table.T.fillna(table.mean(axis=1)).T


def host_hour_util(
    cluster: Cluster,
    forecast: Forecast,
    placement: Mapping[str, str],
    profiles: pd.DataFrame,
    factor: float,
    hosts: list[str],
) -> np.ndarray:
    """CPU utilisation of `hosts` (rows) per hour of day under `placement`: a VM with history follows its
    profile grown by `factor`; one without (a new VM) runs flat at its forecast P50, already grown."""
    row = {h: i for i, h in enumerate(hosts)}
    load = np.zeros((len(hosts), HOURS))
    known = set(profiles.index)
    for vm in cluster.vms:
        host = placement.get(vm.name, vm.host)
        if host not in row:
            continue
        if vm.name in known:
            load[row[host]] += profiles.loc[vm.name].to_numpy(dtype=float) * factor
        else:
            load[row[host]] += forecast.vms[vm.name].cpu_p50
    cores = np.array([cluster.host_by_name[h].cpu_cores for h in hosts])
    return load / cores[:, None] if len(hosts) else load
