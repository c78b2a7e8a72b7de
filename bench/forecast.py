"""Forecast benchmark (issue 5): MAE of the horizon forecaster against the naive baselines, and P95
coverage, per metric and horizon, on a time split of real traces.

    .venv/bin/python bench/forecast.py \
        --trace bitbrains:../shared/data/bitbrains_rnd/bitbrains_rnd_2013-08.csv.gz --train-days 21 --json
    .venv/bin/python bench/forecast.py --trace planetlab:../shared/data/planetlab/20110303.csv.gz \
        --trace planetlab:... --train-days 3 --json

Split: training targets end before the first sample + N days; test origins are every grid step (or
every `--test-every`) from there on, all VMs. PlanetLab day files are taken as consecutive days in the
order given, keeping the VMs present in every file (each file's own VMs differ), CPU as a share of the
VM's capacity (percent / 100). Bitbrains: CPU in cores, memory in MiB, as `load_bitbrains` reads them.
The model is `HorizonForecaster` (advisor.forecast.horizons) with its defaults; the JSON has the
issue's figures only; timings, the moving-average baseline and the model's validation go to stderr.
`--forecast-vms N` also times a forecast of N VMs (the trace's VMs repeated under new names) from a
metrics frame of their last HISTORY_DAYS + 1 days with the models just fitted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence

import pandas as pd

from advisor.collect.traces import PL_STEP_S, load_bitbrains
from advisor.config import PowerSettings, TraceSettings
from advisor.errors import InputError
from advisor.forecast.backtest import evaluate_split
from advisor.forecast.horizons import (
    HISTORY_DAYS,
    HORIZONS_S,
    HorizonForecaster,
    forecast_latest,
    metric_grid,
    scale_floor,
)
from advisor.metrics import validate_metrics

METRIC_COLUMNS = {"cpu": "cpu_cores", "mem": "mem_mib"}


def load_traces(specs: Sequence[str], vms: int | None) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The metrics frame of `kind:path` specs (all of one kind) and the metrics it has."""
    kinds = {s.split(":", 1)[0] for s in specs}
    if len(kinds) != 1 or not all(":" in s for s in specs):
        raise InputError("--trace: give KIND:FILE, all of one kind (bitbrains or planetlab)")
    kind, paths = kinds.pop(), [s.split(":", 1)[1] for s in specs]
    if kind == "bitbrains":
        _, metrics = load_bitbrains(paths, TraceSettings(), PowerSettings(), vms=vms)
        return metrics, ("cpu", "mem")
    if kind == "planetlab":
        return planetlab_metrics(paths, vms), ("cpu",)
    raise InputError(f"--trace: unknown kind {kind!r} (bitbrains or planetlab)")


def planetlab_metrics(paths: Sequence[str], vms: int | None) -> pd.DataFrame:
    """Day files as consecutive days from 1970-01-05 (a Monday), the VMs common to all of them."""
    days = []
    for path in paths:
        try:
            days.append(pd.read_csv(path, usecols=["vm", "step", "cpu"]))
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: not a PlanetLab day file ({e})") from None
    common = sorted(set.intersection(*(set(d["vm"]) for d in days)))
    if not common:
        raise InputError(f"{', '.join(paths)}: no VM is in every day file")
    common = common[:vms] if vms else common
    start = pd.Timestamp("1970-01-05", tz="UTC")
    frames = []
    for i, d in enumerate(days):
        d = d[d["vm"].isin(common)]
        ts = start + pd.to_timedelta(i * 86400 + d["step"].to_numpy() * PL_STEP_S, unit="s")
        frames.append(pd.DataFrame({"vm": d["vm"], "ts": ts, "cpu_cores": d["cpu"] / 100.0, "mem_mib": 0.0}))
    return validate_metrics(pd.concat(frames, ignore_index=True), ", ".join(paths))


def say(text: str, log: bool) -> None:
    if log:
        print(text, file=sys.stderr)


def evaluate(
    metrics: pd.DataFrame,
    names: Sequence[str],
    train_days: float,
    train_rows: int = 300_000,
    test_every: int = 1,
    params: Mapping[str, object] | None = None,
    log: bool = False,
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, HorizonForecaster]], dict[str, float]]:
    """({metric: {horizon: figures}}, the fitted models, the training floors) on the time split after
    `train_days` from the first sample."""
    split = metrics["ts"].min() + pd.Timedelta(days=train_days)
    out: dict[str, dict[str, dict[str, float]]] = {}
    models: dict[str, dict[str, HorizonForecaster]] = {}
    floors: dict[str, float] = {}
    fit_total = 0.0
    for name in names:
        t0 = time.perf_counter()
        grid = metric_grid(metrics, METRIC_COLUMNS[name])
        first_test = int(grid.times.searchsorted(split, side="left"))
        if first_test >= len(grid.times) - 1 or first_test < 1:
            raise InputError(f"--train-days {train_days:g}: leaves no training or no test data")
        fit_total += time.perf_counter() - t0
        out[name], models[name], floors[name] = {}, {}, scale_floor(grid, first_test)
        for horizon in HORIZONS_S:
            try:
                result = evaluate_split(grid, horizon, first_test, None, params, train_rows, test_every)
            except InputError as e:
                raise InputError(f"--train-days {train_days:g}: {e}") from None
            f = result.figures
            best = min(f.loc["naive", "mae"], f.loc["seasonal_naive", "mae"])
            out[name][horizon] = {
                "model_mae": float(f.loc["model", "mae"]),
                "naive_mae": float(f.loc["naive", "mae"]),
                "seasonal_naive_mae": float(f.loc["seasonal_naive", "mae"]),
                "ratio": float(f.loc["model", "mae"] / best),
                "p95_coverage": float(f.loc["model", "coverage_95"]),
            }
            models[name][horizon] = result.model
            fit_total += result.fit_s
            v = result.model.validation_
            say(
                f"{name} {horizon}: fit {result.fit_s:.1f} s (features + P50/P95 + validation + refit), "
                f"test {result.test_s:.1f} s on {int(f.loc['model', 'rows']):,} rows; "
                f"moving average ({result.moving_average.window_}) MAE {f.loc['moving_average', 'mae']:.4g}, "
                f"MASE model {f.loc['model', 'mase']:.3f}; validation: {v.get('naive_vms', 0)} of "
                f"{v.get('vms', 0)} VMs on naive, P95 offset {v.get('offset', 0.0):+.3f} scale",
                log,
            )
    say(f"training in all (grids, features, fits; reading the trace excluded): {fit_total:.1f} s", log)
    return out, models, floors


def time_forecast(
    metrics: pd.DataFrame,
    names: Sequence[str],
    models: Mapping[str, Mapping[str, HorizonForecaster]],
    floors: Mapping[str, float],
    n_vms: int,
) -> dict[str, float]:
    """Seconds to forecast `n_vms` VMs (all horizons and metrics) from a metrics frame of their last
    HISTORY_DAYS + 1 days: the trace's VMs repeated under new names."""
    recent = metrics[metrics["ts"] > metrics["ts"].max() - pd.Timedelta(days=HISTORY_DAYS + 1)]
    vms = pd.unique(recent["vm"])
    copies = -(-n_vms // len(vms))
    frames = []
    for c in range(copies):
        keep = vms[: n_vms - c * len(vms)]
        part = recent[recent["vm"].isin(keep)]
        frames.append(part.assign(vm=part["vm"].astype(str) + f"#{c}"))
    fleet = pd.concat(frames, ignore_index=True)
    fleet["vm"] = fleet["vm"].astype("category")
    t0 = time.perf_counter()
    grids = {name: metric_grid(fleet, METRIC_COLUMNS[name]) for name in names}
    t1 = time.perf_counter()
    forecasts = [forecast_latest(models[name], grids[name], floors[name]) for name in names]
    t2 = time.perf_counter()
    assert all(len(f) == fleet["vm"].nunique() * len(HORIZONS_S) for f in forecasts)
    return {
        "vms": float(fleet["vm"].nunique()),
        "rows": float(len(fleet)),
        "grid_s": t1 - t0,
        "forecast_s": t2 - t1,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trace", action="append", required=True, help="bitbrains:FILE or planetlab:FILE")
    p.add_argument("--train-days", type=float, required=True)
    p.add_argument("--vms", type=int, default=None, help="keep only the first K VMs (quick runs)")
    p.add_argument("--train-rows", type=int, default=300_000, help="sampled (VM, origin) training rows")
    p.add_argument("--max-train-rows", type=int, default=100_000, help="rows each model is fitted on")
    p.add_argument("--test-every", type=int, default=1, help="test origin every N grid steps")
    p.add_argument("--max-iter", type=int, default=200, help="boosting iterations per model")
    p.add_argument("--forecast-vms", type=int, default=0, help="also time a forecast of N VMs")
    p.add_argument("--json", action="store_true", help="print only the JSON figures")
    args = p.parse_args(argv)
    params = {"max_iter": args.max_iter, "max_train_rows": args.max_train_rows}
    try:
        t0 = time.perf_counter()
        metrics, names = load_traces(args.trace, args.vms)
        say(f"read {len(metrics):,} samples in {time.perf_counter() - t0:.1f} s", not args.json)
        result, models, floors = evaluate(
            metrics, names, args.train_days, args.train_rows, args.test_every, params, not args.json
        )
        if args.forecast_vms:
            timing = time_forecast(metrics, names, models, floors, args.forecast_vms)
            print(
                f"forecast of {timing['vms']:,.0f} VMs ({timing['rows']:,.0f} samples, "
                f"{len(names)} metric(s) x {len(HORIZONS_S)} horizons): grid {timing['grid_s']:.1f} s "
                f"+ features and models {timing['forecast_s']:.1f} s",
                file=sys.stderr,
            )
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
