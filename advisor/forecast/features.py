"""Training and prediction tables for the demand forecaster, built from the metrics frame.

The series are first put on one regular grid (the median sampling step, anchored at the last sample)
so that windows are index ranges and every statistic is vectorised across VMs. A window statistic
needs at least half of the window's samples (`MIN_COVERAGE`), otherwise it is NaN: gaps and the start
of history are never filled in, they show as missing features (which the gradient-boosting model
handles) and as dropped training rows (a target window without enough samples).

Every value is a share of the VM's size (CPU of its vCPUs, memory of its configured MiB), so that one
global model serves VMs of every size; `to_units` converts back to cores and MiB.

A row is a (vm, origin): features see samples at or before the origin only; targets are the P50 and
P95 of the samples in (origin, origin + horizon].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from advisor.config import ForecastSettings
from advisor.core import Cluster
from advisor.errors import InputError

MIN_COVERAGE = 0.5  # share of a window's samples a statistic needs
FEATURE_WINDOWS_H = (1.0, 6.0, 24.0)
WINDOW_STATS = ("mean", "std", "max", "p95")
METRICS = ("cpu", "mem")
TARGETS = ("cpu_p50", "cpu_p95", "mem_p50", "mem_p95")
QUANTILES = {"p50": 0.5, "p95": 0.95}
DAY_H = 24.0


@dataclass(frozen=True)
class Grid:
    """The metrics on a regular time grid: one row per VM, NaN where no sample fell in a step."""

    vms: tuple[str, ...]
    times: pd.DatetimeIndex  # UTC, regular, the last one is the last sample
    step_s: float
    cpu: np.ndarray  # (vms, times) cores
    mem: np.ndarray  # (vms, times) MiB
    dirty: np.ndarray | None  # (vms, times) MiB/s (NaN: not measured), None without a dirty_mibps column

    def steps(self, hours: float) -> int:
        """Whole grid steps in `hours` (at least one)."""
        return max(1, round(hours * 3600 / self.step_s))


def to_grid(metrics: pd.DataFrame, vms: Sequence[str]) -> Grid:
    """Resample the validated metrics of `vms` onto a regular grid with their median sampling step.

    Samples are assigned to the nearest grid point and averaged there; a grid point with no sample
    stays NaN however long the gap. A VM listed but absent from the metrics is an InputError."""
    names = list(vms)
    if not names:
        raise InputError("forecast: the cluster has no VMs")
    codes, found = pd.factorize(metrics["vm"])
    position = {name: i for i, name in enumerate(names)}
    present = set(found)
    missing = [n for n in names if n not in present]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"metrics: no samples for {len(missing)} VM(s) of the cluster: {shown}")
    code_to_vm = np.array([position.get(v, -1) for v in found], dtype=np.int64)
    vm_idx = code_to_vm[codes]
    keep = vm_idx >= 0  # metrics of VMs outside the cluster are not forecast
    vm_idx = vm_idx[keep]
    ts_ns = metrics["ts"].to_numpy(dtype="datetime64[ns]").astype(np.int64)[keep]
    gaps = _sampling_gaps_s(vm_idx, ts_ns)
    if gaps.size == 0:
        raise InputError("metrics: no VM has two samples, so there is no sampling step to forecast on")
    step_s = _nominal_step_s(float(np.median(gaps)))
    last_ns = int(ts_ns.max())
    back = np.rint((last_ns - ts_ns) / 1e9 / step_s).astype(np.int64)
    n_t = int(back.max()) + 1
    col = n_t - 1 - back
    flat = vm_idx * n_t + col
    size = len(names) * n_t
    counts = np.bincount(flat, minlength=size).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):

        def binned(values: np.ndarray) -> np.ndarray:
            return (np.bincount(flat, weights=values, minlength=size) / counts).reshape(len(names), n_t)

        def measured(values: np.ndarray) -> np.ndarray:
            """Mean of the samples that have a value: NaN is "not measured" in an optional column."""
            seen = ~np.isnan(values)
            total = np.bincount(flat[seen], weights=values[seen], minlength=size)
            return (total / np.bincount(flat[seen], minlength=size)).reshape(len(names), n_t)

        cpu = binned(metrics["cpu_cores"].to_numpy(float)[keep])
        mem = binned(metrics["mem_mib"].to_numpy(float)[keep])
        dirty = measured(metrics["dirty_mibps"].to_numpy(float)[keep]) if "dirty_mibps" in metrics else None
    end = pd.Timestamp(last_ns, unit="ns", tz="UTC")
    times = pd.date_range(end=end, periods=n_t, freq=pd.Timedelta(seconds=step_s))
    return Grid(vms=tuple(names), times=times, step_s=step_s, cpu=cpu, mem=mem, dirty=dirty)


def _nominal_step_s(median_gap_s: float) -> float:
    """The median gap in whole seconds, snapped to whole minutes when within 2% of one: jittered
    5-minute samples have a median gap of 302 s, and a 302 s grid drifts a step every 2.5 hours."""
    step = max(1.0, float(round(median_gap_s)))
    minutes = 60.0 * round(step / 60)
    return minutes if minutes and abs(step - minutes) <= 0.02 * minutes else step


def _sampling_gaps_s(vm_idx: np.ndarray, ts_ns: np.ndarray) -> np.ndarray:
    """Positive gaps between consecutive samples of each VM, in seconds; sorts only when the rows are
    not already grouped by VM in time order (as validate_metrics leaves them)."""
    same_vm = vm_idx[1:] == vm_idx[:-1]
    diffs = np.diff(ts_ns)
    grouped = np.count_nonzero(~same_vm) == np.count_nonzero(np.bincount(vm_idx)) - 1
    if not (grouped and (diffs[same_vm] >= 0).all()):
        order = np.lexsort((ts_ns, vm_idx))
        vm_idx, ts_ns = vm_idx[order], ts_ns[order]
        same_vm = vm_idx[1:] == vm_idx[:-1]
        diffs = np.diff(ts_ns)
    gaps = diffs[same_vm] / 1e9
    return gaps[gaps > 0]


def window_stats(
    values: np.ndarray, ends: np.ndarray, width: int, stats: Sequence[str]
) -> dict[str, np.ndarray]:
    """Statistics of the `width` samples ending at (and including) each index of `ends`, per row.

    Returns one (rows, len(ends)) array per statistic in `stats` (mean, std, max or pNN);
    NaN where fewer than MIN_COVERAGE of the window's samples exist. Ends before the grid give NaN.
    Quantiles interpolate linearly, as numpy's default does."""
    n_rows, n_t = values.shape
    ends = np.asarray(ends)
    out = {s: np.full((n_rows, len(ends)), np.nan) for s in stats}
    need = MIN_COVERAGE * width
    todo = np.flatnonzero((ends + 1 >= need) & (ends - width + 1 < n_t))  # others can't reach coverage
    offsets = np.arange(-width + 1, 1)
    chunk = max(1, 4_000_000 // max(1, n_rows * width))  # bound the gathered block to ~32 MB
    for start in range(0, len(todo), chunk):
        cols = todo[start : start + chunk]
        idx = ends[cols][:, None] + offsets[None, :]
        block = values[:, np.clip(idx, 0, n_t - 1)]  # (rows, ends, width)
        block[:, (idx < 0) | (idx >= n_t)] = np.nan
        block.sort(axis=2)  # NaN sort last
        n = (~np.isnan(block)).sum(axis=2)
        ok = n >= need
        safe_n = np.maximum(n, 1)
        valid = np.arange(width) < n[..., None]
        got: dict[str, np.ndarray] = {}
        for s in stats:
            if s == "max":
                got[s] = np.take_along_axis(block, (safe_n - 1)[..., None], axis=2)[..., 0]
            elif s.startswith("p"):
                got[s] = _sorted_quantile(block, safe_n, int(s[1:]) / 100)
        if "mean" in stats or "std" in stats:
            block[~valid] = 0.0
            mean = block.sum(axis=2) / safe_n
            got["mean"] = mean
            if "std" in stats:
                block -= mean[..., None]
                block[~valid] = 0.0
                got["std"] = np.sqrt(np.einsum("ijk,ijk->ij", block, block) / safe_n)
        for s in stats:
            if s not in got:
                raise ValueError(f"unknown window statistic {s!r}")
            out[s][:, cols] = np.where(ok, got[s], np.nan)
    return out


def _sorted_quantile(block: np.ndarray, n: np.ndarray, q: float) -> np.ndarray:
    pos = q * (n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    a = np.take_along_axis(block, lo[..., None], axis=2)[..., 0]
    b = np.take_along_axis(block, hi[..., None], axis=2)[..., 0]
    return a + (pos - lo) * (b - a)


def origin_indices(grid: Grid, settings: ForecastSettings) -> np.ndarray:
    """Grid indices of the origins, every `origin_every_h` back from the last sample (the prediction
    origin), oldest first."""
    every = grid.steps(settings.origin_every_h)
    last = len(grid.times) - 1
    return np.arange(last % every, last + 1, every)


def seasonal_lag(grid: Grid, settings: ForecastSettings) -> int:
    """Steps back to the seasonal-naive window: the smallest whole number of seasons that puts the
    whole horizon-long window at or before the origin (one season when season >= horizon)."""
    season, horizon = grid.steps(settings.season_h), grid.steps(settings.horizon_h)
    return season * -(-horizon // season)


def build_table(
    grid: Grid, cluster: Cluster, settings: ForecastSettings, origins: np.ndarray | None = None
) -> pd.DataFrame:
    """One row per (vm, origin) with features, baselines and targets, all as shares of VM size.

    Columns: `vm`, `origin`, the FEATURES (including `naive_<target>`, the same quantile over the last
    horizon-long window, and `snaive_<target>`, over the horizon-long window `seasonal_lag` earlier),
    and the TARGETS (NaN where the future window lacks samples, as at the prediction origin)."""
    origins = origin_indices(grid, settings) if origins is None else np.asarray(origins)
    sizes = cluster.vm_by_name
    vcpus = np.array([sizes[v].vcpus for v in grid.vms], dtype=float)
    mem_mib = np.array([sizes[v].mem_mib for v in grid.vms], dtype=float)
    shares = {"cpu": grid.cpu / vcpus[:, None], "mem": grid.mem / mem_mib[:, None]}
    day, season = grid.steps(DAY_H), grid.steps(settings.season_h)
    horizon = grid.steps(settings.horizon_h)
    lag = seasonal_lag(grid, settings)
    n_vm, n_o = len(grid.vms), len(origins)

    past = np.concatenate([origins, origins - day, origins - season])
    q_stats = tuple(QUANTILES)
    h_ends = np.concatenate([origins, origins - lag + horizon, origins + horizon])
    requests: list[tuple[int, np.ndarray, Sequence[str]]] = [
        (grid.steps(w_h), past, WINDOW_STATS) for w_h in FEATURE_WINDOWS_H
    ]
    requests.append((horizon, h_ends, q_stats))
    cols: dict[str, np.ndarray] = {}
    for m, values in shares.items():
        cols[f"{m}_last"] = values[:, origins]
        *feature_stats, h_stats = _stats_for(values, requests)
        for w_h, stats in zip(FEATURE_WINDOWS_H, feature_stats, strict=True):
            for back, name in ((0, ""), (1, "_1d"), (2, "_1s")):
                for s in WINDOW_STATS:
                    cols[f"{m}_{s}_{w_h:g}h{name}"] = stats[s][:, back * n_o : (back + 1) * n_o]
        for s in q_stats:
            cols[f"naive_{m}_{s}"] = h_stats[s][:, :n_o]
            cols[f"snaive_{m}_{s}"] = h_stats[s][:, n_o : 2 * n_o]
            cols[f"{m}_{s}"] = h_stats[s][:, 2 * n_o :]
    when = grid.times[origins]
    hour = when.hour + when.minute / 60
    dow = when.day_of_week + hour / 24
    calendar = {
        "hour_sin": np.sin(2 * np.pi * hour / 24),
        "hour_cos": np.cos(2 * np.pi * hour / 24),
        "dow_sin": np.sin(2 * np.pi * dow / 7),
        "dow_cos": np.cos(2 * np.pi * dow / 7),
    }
    table = pd.DataFrame(
        {
            "vm": np.repeat(np.array(grid.vms, dtype=object), n_o),
            "origin": np.tile(when, n_vm),
            **{k: np.tile(np.asarray(v, dtype=float), n_vm) for k, v in calendar.items()},
            "vm_vcpus": np.repeat(vcpus, n_o),
            "vm_mem_mib": np.repeat(mem_mib, n_o),
            **{k: v.reshape(-1) for k, v in cols.items()},
        }
    )
    return table[["vm", "origin", *FEATURES, *TARGETS]]


def _stats_for(
    values: np.ndarray, requests: Sequence[tuple[int, np.ndarray, Sequence[str]]]
) -> list[dict[str, np.ndarray]]:
    """window_stats for each (width, ends, stats) request, with one pass per distinct width over the
    union of its ends (the 24 h features and a 24 h horizon share their windows)."""
    widths = {w for w, _, _ in requests}
    done: dict[int, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    for w in widths:
        ends = np.unique(np.concatenate([e for ww, e, _ in requests if ww == w]))
        stats = sorted({s for ww, _, ss in requests if ww == w for s in ss})
        done[w] = (ends, window_stats(values, ends, w, stats))
    out = []
    for w, e, ss in requests:
        ends, got = done[w]
        pos = np.searchsorted(ends, e)
        out.append({s: got[s][:, pos] for s in ss})
    return out


def _feature_names() -> list[str]:
    names = ["hour_sin", "hour_cos", "dow_sin", "dow_cos", "vm_vcpus", "vm_mem_mib"]
    for m in METRICS:
        names.append(f"{m}_last")
        for w_h in FEATURE_WINDOWS_H:
            for name in ("", "_1d", "_1s"):
                names += [f"{m}_{s}_{w_h:g}h{name}" for s in WINDOW_STATS]
        for s in QUANTILES:
            names += [f"naive_{m}_{s}", f"snaive_{m}_{s}"]
    return names


FEATURES: tuple[str, ...] = tuple(_feature_names())


def to_units(table: pd.DataFrame, target: str, shares: np.ndarray) -> np.ndarray:
    """Convert `shares` of `target` (cpu_* or mem_*) back to cores or MiB for the rows of `table`."""
    size = table["vm_vcpus"] if target.startswith("cpu") else table["vm_mem_mib"]
    return np.asarray(shares, dtype=float) * size.to_numpy(float)
