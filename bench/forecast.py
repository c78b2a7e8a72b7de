"""Forecast benchmark (issue 5): MAE of the change model against the naive baselines, and P95 coverage,
per metric and horizon, on a time split of real traces.

    .venv/bin/python bench/forecast.py \
        --trace bitbrains:../shared/data/bitbrains_rnd/bitbrains_rnd_2013-08.csv.gz --train-days 21 --json
    .venv/bin/python bench/forecast.py --trace planetlab:../shared/data/planetlab/20110303.csv.gz \
        --trace planetlab:... --train-days 3 --json

Split: training targets end before the first sample + N days; test origins are every grid step (or
every `--test-every`) from there on, all VMs. PlanetLab day files are taken as consecutive days in the
order given, keeping the VMs present in every file (each file's own VMs differ), CPU as a share of the
VM's capacity (percent / 100). Bitbrains: CPU in cores, memory in MiB, as `load_bitbrains` reads them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from advisor.collect.traces import PL_STEP_S, load_bitbrains
from advisor.config import PowerSettings, TraceSettings
from advisor.errors import InputError
from advisor.forecast.horizons import (
    HORIZONS_S,
    coverage,
    fit_quantiles,
    horizon_rows,
    mae,
    metric_grid,
    naive_forecast,
    sample_pairs,
    scale_floor,
    seasonal_naive_forecast,
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


def evaluate(
    metrics: pd.DataFrame,
    names: Sequence[str],
    train_days: float,
    train_rows: int = 100_000,
    test_every: int = 1,
    max_iter: int = 200,
    log: bool = False,
) -> dict[str, dict[str, dict[str, float]]]:
    """{metric: {horizon: figures}} on the time split after `train_days` from the first sample."""
    split = metrics["ts"].min() + pd.Timedelta(days=train_days)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        grid = metric_grid(metrics, METRIC_COLUMNS[name])
        first_test = int(np.searchsorted(grid.times.asi8, split.value, side="left"))
        if first_test >= len(grid.times) - 1 or first_test < 1:
            raise InputError(f"--train-days {train_days:g}: leaves no training or no test data")
        n_vm, floor = len(grid.vms), scale_floor(grid, first_test)
        out[name] = {}
        for horizon, h_s in HORIZONS_S.items():
            t0 = time.perf_counter()
            ahead = grid.steps(h_s)
            train_origins = np.arange(0, first_test - ahead)  # targets end before the split
            if train_origins.size == 0:
                raise InputError(f"--train-days {train_days:g}: too short for the {horizon} horizon")
            train = horizon_rows(grid, horizon, *sample_pairs(n_vm, train_origins, train_rows), floor)
            models = fit_quantiles(train, max_iter=max_iter)
            fitted = time.perf_counter()
            origins = np.arange(first_test, len(grid.times), test_every)
            rows = horizon_rows(
                grid, horizon, np.repeat(np.arange(n_vm), len(origins)), np.tile(origins, n_vm), floor
            )
            ok = np.isfinite(rows.target) & np.isfinite(rows.naive)
            X, y = rows.X[ok], rows.target[ok]
            model_mae = mae(y, models[0.5].predict(X))
            naive_mae = mae(y, naive_forecast(rows)[ok])
            seasonal_mae = mae(y, seasonal_naive_forecast(rows)[ok])
            out[name][horizon] = {
                "model_mae": model_mae,
                "naive_mae": naive_mae,
                "seasonal_naive_mae": seasonal_mae,
                "ratio": model_mae / min(naive_mae, seasonal_mae),
                "p95_coverage": coverage(y, models[0.95].predict(X)),
            }
            if log:
                print(
                    f"{name} {horizon}: features + P50/P95 fit {fitted - t0:.1f} s, "
                    f"{ok.sum():,} test rows, {time.perf_counter() - t0:.1f} s in all",
                    file=sys.stderr,
                )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trace", action="append", required=True, help="bitbrains:FILE or planetlab:FILE")
    p.add_argument("--train-days", type=float, required=True)
    p.add_argument("--vms", type=int, default=None, help="keep only the first K VMs (quick runs)")
    p.add_argument("--train-rows", type=int, default=100_000, help="sampled training rows per model")
    p.add_argument("--test-every", type=int, default=1, help="test origin every N grid steps")
    p.add_argument("--max-iter", type=int, default=200, help="boosting iterations per model")
    p.add_argument("--json", action="store_true", help="print only the JSON figures")
    args = p.parse_args(argv)
    try:
        metrics, names = load_traces(args.trace, args.vms)
        result = evaluate(
            metrics, names, args.train_days, args.train_rows, args.test_every, args.max_iter, not args.json
        )
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
