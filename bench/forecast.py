"""Forecast benchmark (issue 5): MAE of the horizon forecaster against the naive baselines, and P95
coverage, per metric and horizon, on a time split of real traces.

    .venv/bin/python bench/forecast.py \
        --trace bitbrains:../shared/data/bitbrains_rnd/bitbrains_rnd_2013-08.csv.gz --train-days 21 --json
    .venv/bin/python bench/forecast.py --trace planetlab:../shared/data/planetlab/20110303.csv.gz \
        --trace planetlab:... --train-days 3 --json

Split: training targets end before the first sample + N days; test origins are every grid step (or
every `--test-every`) from there on, all VMs, up to `--end-days` after the first sample if given (so
`--end-days 21 --train-days 16` is the inner split of a 21-day training period, where choices are made).
PlanetLab day files are taken as consecutive days in the order given, keeping the VMs present in every
file (each file's own VMs differ), CPU as a share of the VM's capacity (percent / 100).

Units. The issue states its Bitbrains reference in CPU percentage points (1-h naive MAE 1.70 pp) and
memory in MiB, so for Bitbrains the JSON's `cpu` is in percent of the VM's provisioned vCPUs (CPU in
cores / vCPUs x 100, the trace's cpu_pct) and `cpu_cores` scores the same forecasts in cores, where the
big VMs weigh more; `mem` is in MiB. `--cpu-learn` picks the unit the CPU model learns in: `pct` (the
default: the loss is the one judged in `cpu`; on the inner split, Bitbrains fit on days 1-16 and scored on
days 17-21, 1-h ratio 0.952 in pct and 0.986 in cores, against 0.959 and 1.010 learning in cores).
The model is `HorizonForecaster` (advisor.forecast.horizons); the JSON has the issue's figures only;
timings (wall and CPU seconds), the moving-average baseline and the model's validation go to stderr.
`--forecast-vms N` also times a forecast of N VMs (the trace's VMs repeated under new names) from a
metrics frame of their last HISTORY_DAYS + 1 days with the models just fitted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from advisor.collect.traces import PL_STEP_S, load_bitbrains
from advisor.config import PowerSettings, TraceSettings
from advisor.errors import InputError
from advisor.forecast.backtest import FORECASTERS, scored_blocks
from advisor.forecast.horizons import (
    HISTORY_DAYS,
    HORIZONS_S,
    PARTNER_OF,
    HorizonForecaster,
    MetricGrid,
    MovingAverageBaseline,
    Partner,
    TooLittleHistory,
    forecast_latest,
    horizon_rows,
    metric_grid,
    sample_pairs,
    scale_floor,
    seasonal_naive_forecast,
)
from advisor.metrics import validate_metrics

Factors = Mapping[str, float]  # VM -> factor from the metrics column's unit (a VM not listed: 1)


@dataclass(frozen=True)
class Target:
    """One forecast model: the metrics column it forecasts, the per-VM factor to the unit it learns in,
    and the per-VM factors to each unit it is scored in (JSON key -> factors)."""

    column: str
    learn: Factors
    units: Mapping[str, Factors]


def factors_of(factors: Factors, vms: Sequence[str]) -> np.ndarray:
    return np.array([factors.get(v, 1.0) for v in vms], dtype=float)


def rescaled(grid: MetricGrid, factor: np.ndarray) -> MetricGrid:
    """The grid with each VM's values times its factor."""
    f = factor[:, None]
    return MetricGrid(grid.vms, grid.times, grid.step_s, grid.raw * f, grid.filled * f)


def load_traces(
    specs: Sequence[str], vms: int | None, cpu_learn: str
) -> tuple[pd.DataFrame, dict[str, Target]]:
    """The metrics frame of `kind:path` specs (all of one kind) and the models to fit on it."""
    kinds = {s.split(":", 1)[0] for s in specs}
    if len(kinds) != 1 or not all(":" in s for s in specs):
        raise InputError("--trace: give KIND:FILE, all of one kind (bitbrains or planetlab)")
    kind, paths = kinds.pop(), [s.split(":", 1)[1] for s in specs]
    if kind == "bitbrains":
        cluster, metrics = load_bitbrains(paths, TraceSettings(), PowerSettings(), vms=vms)
        pct = {v.name: 100.0 / v.vcpus for v in cluster.vms}
        cpu = Target("cpu_cores", pct if cpu_learn == "pct" else {}, {"cpu": pct, "cpu_cores": {}})
        return metrics, {"cpu": cpu, "mem": Target("mem_mib", {}, {"mem": {}})}
    if kind == "planetlab":
        return planetlab_metrics(paths, vms), {"cpu": Target("cpu_cores", {}, {"cpu": {}})}
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


def learning_grids(
    metrics: pd.DataFrame, targets: Mapping[str, Target], original: Callable[[str], str] = str
) -> dict[str, MetricGrid]:
    """Each target's grid in the unit it learns in (`original` maps a grid VM to the VM its factor is
    listed under)."""
    grids = {}
    for name, target in targets.items():
        grid = metric_grid(metrics, target.column)
        grids[name] = rescaled(grid, factors_of(target.learn, [original(v) for v in grid.vms]))
    return grids


def partner_of(
    name: str, targets: Mapping[str, Target], grids: Mapping[str, MetricGrid], floors: Mapping[str, float]
) -> Partner | None:
    """The other target's grid as the partner of `name` (CPU for memory and back), None without one."""
    other = next((n for n, t in targets.items() if t.column == PARTNER_OF.get(targets[name].column)), None)
    return None if other is None else Partner(grids[other], floors[other])


def say(text: str, log: bool) -> None:
    if log:
        print(text, file=sys.stderr)


def score(
    grid: MetricGrid,
    horizon: str,
    first_test: int,
    model: HorizonForecaster,
    moving: MovingAverageBaseline,
    floor: float,
    units: Mapping[str, np.ndarray],
    test_every: int = 1,
    partner: Partner | None = None,
) -> dict[str, dict[str, float]]:
    """{unit: {"<forecaster>_mae": MAE in that unit, "coverage": P95 coverage, "rows": n}} over every
    VM at the origins first_test, first_test + test_every, ... whose target is observed. `units` maps
    a unit to the per-VM factor from the grid's values to it."""
    origins = np.arange(first_test, len(grid.times), test_every)
    err = {u: dict.fromkeys(FORECASTERS, 0.0) for u in units}
    covered, n = 0.0, 0
    for block, rows, keep in scored_blocks(grid, horizon, origins, floor, partner):
        X, y = rows.X[keep], rows.target[keep]
        q = model.predict_quantiles(X)
        forecasts = {
            "model": q[0.5],
            "naive": rows.naive[keep],
            "seasonal_naive": seasonal_naive_forecast(rows)[keep],
            "moving_average": moving.predict(X),
        }
        covered += float((y <= q[model.upper]).sum())
        n += len(y)
        for unit, factor in units.items():
            w = factor[block][rows.vm[keep]]
            for name, p in forecasts.items():
                err[unit][name] += float((w * np.abs(y - p)).sum())
    if n == 0:
        raise InputError(f"no observed target after the split for the {horizon} horizon")
    return {
        u: {f"{name}_mae": e / n for name, e in err[u].items()} | {"coverage": covered / n, "rows": float(n)}
        for u in units
    }


def evaluate(
    metrics: pd.DataFrame,
    targets: Mapping[str, Target],
    train_days: float,
    horizons: Sequence[str] = tuple(HORIZONS_S),
    train_rows: int = 300_000,
    test_every: int = 1,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    log: bool = False,
    fit: Sequence[str] | None = None,
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, HorizonForecaster]], dict[str, float]]:
    """({unit: {horizon: figures}}, the fitted models and the training floors per target) on the time
    split after `train_days` from the first sample, for the targets in `fit` (default: all; the others
    still serve as partners). `params`: HorizonForecaster's parameters per horizon."""
    split = metrics["ts"].min() + pd.Timedelta(days=train_days)
    out: dict[str, dict[str, dict[str, float]]] = {}
    models: dict[str, dict[str, HorizonForecaster]] = {}
    floors: dict[str, float] = {}
    # wall and CPU seconds of this process: with --jobs 1 every fit runs here on one thread, so on a
    # shared machine the CPU seconds estimate the wall time the training would take alone; with more
    # jobs the fits run in worker processes and only the wall time on a quiet machine counts
    fit_total = fit_cpu = 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    grids = learning_grids(metrics, targets)
    times = next(iter(grids.values())).times
    first_test = int(times.searchsorted(split, side="left"))
    if first_test >= len(times) - 1 or first_test < 1:
        raise InputError(f"--train-days {train_days:g}: leaves no training or no test data")
    floors.update({name: scale_floor(grid, first_test) for name, grid in grids.items()})
    fit_total += time.perf_counter() - t0
    fit_cpu += time.process_time() - c0
    for name in fit or targets:
        target, grid, floor = targets[name], grids[name], floors[name]
        partner = partner_of(name, targets, grids, floors)
        learn = factors_of(target.learn, grid.vms)
        units = {u: factors_of(f, grid.vms) / learn for u, f in target.units.items()}
        models[name] = {}
        for horizon in horizons:
            t0, c0 = time.perf_counter(), time.process_time()
            ahead = grid.steps(HORIZONS_S[horizon])
            pairs = sample_pairs(len(grid.vms), np.arange(0, max(first_test - ahead, 0)), train_rows)
            train = horizon_rows(grid, horizon, *pairs, floor, partner)
            ok = np.isfinite(train.target) & np.isfinite(train.naive)
            try:
                model = HorizonForecaster(horizon=horizon, **dict((params or {}).get(horizon, {})))
                model.fit(train.X[ok], train.target[ok])
            except TooLittleHistory as e:
                history = f"--train-days {train_days:g}: too little history"
                raise InputError(f"{history} ({horizon}: {e})") from None
            except ValueError as e:
                raise InputError(f"forecaster settings (--bags, --param): {e}") from None
            moving = MovingAverageBaseline().fit(train.X[ok], train.target[ok])
            fit_s = time.perf_counter() - t0
            fit_total += fit_s
            fit_cpu += time.process_time() - c0
            t0 = time.perf_counter()
            figures = score(grid, horizon, first_test, model, moving, floor, units, test_every, partner)
            models[name][horizon] = model
            v = model.validation_
            for unit, f in figures.items():
                best = min(f["naive_mae"], f["seasonal_naive_mae"])
                out.setdefault(unit, {})[horizon] = {
                    "model_mae": f["model_mae"],
                    "naive_mae": f["naive_mae"],
                    "seasonal_naive_mae": f["seasonal_naive_mae"],
                    "ratio": f["model_mae"] / best,
                    "p95_coverage": f["coverage"],
                }
                say(
                    f"{unit} {horizon}: ratio {f['model_mae'] / best:.3f}, moving average "
                    f"({moving.window_}) MAE {f['moving_average_mae']:.4g} (ratio "
                    f"{f['moving_average_mae'] / best:.3f}), {int(f['rows']):,} test rows",
                    log,
                )
            say(
                f"{name} {horizon}: fit {fit_s:.1f} s (features + P50/P95 + validation + refit), test "
                f"{time.perf_counter() - t0:.1f} s; validation: model/naive "
                f"{v.get('fallback_mae', np.nan) / v.get('naive_mae', np.nan):.3f}, "
                f"{v.get('naive_vms', 0)} of {v.get('vms', 0)} VMs on naive, "
                f"P95 offset {v.get('offset', 0.0):+.3f} scale",
                log,
            )
    say(
        f"training in all (grids, features, fits; reading the trace excluded): {fit_total:.1f} s wall, "
        f"{fit_cpu:.1f} s CPU in this process",
        log,
    )
    return out, models, floors


def time_forecast(
    metrics: pd.DataFrame,
    targets: Mapping[str, Target],
    models: Mapping[str, Mapping[str, HorizonForecaster]],
    floors: Mapping[str, float],
    n_vms: int,
) -> dict[str, float]:
    """Seconds to forecast `n_vms` VMs (all horizons and targets) from a metrics frame of their last
    HISTORY_DAYS + 1 days: the trace's VMs repeated under new names (a copy learns in its original's unit)."""
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
    grids = learning_grids(fleet, targets, original=lambda v: v.rsplit("#", 1)[0])
    t1 = time.perf_counter()
    forecasts = [
        forecast_latest(models[name], grids[name], floors[name], partner_of(name, targets, grids, floors))
        for name in models
    ]
    t2 = time.perf_counter()
    assert all(
        len(f) == fleet["vm"].nunique() * len(models[n]) for f, n in zip(forecasts, models, strict=True)
    )
    return {
        "vms": float(fleet["vm"].nunique()),
        "rows": float(len(fleet)),
        "grid_s": t1 - t0,
        "forecast_s": t2 - t1,
    }


# The fitting budget (issue 5: 500 VMs x 21 days in 5 minutes on 2 cores) goes first to the 1-h horizon,
# the one the accuracy targets judge: 200,000 rows and two P50 bags. Inner split (Bitbrains fit on days
# 1-16, scored on days 17-21), 1 h, 200,000 rows against 100,000: memory -0.8% on both seeds tried, CPU
# -1.0% and -0.3%. The 24-h peak keeps two bags (same split: CPU -0.9%, memory -1.1% against one); the
# 5-min horizon, the cheapest to forecast well, has one.
MAX_TRAIN_ROWS = "5min=100000,1h=200000,24h_peak=100000"
BAGS = "5min=1,1h=2,24h_peak=2"


def per_horizon(text: str, option: str) -> dict[str, int]:
    """N (every horizon) or HORIZON=N,... (the horizons named; the others keep HorizonForecaster's
    default)."""
    if "=" not in text:
        if not text.strip().isdigit():
            raise InputError(f"{option} {text!r}: give N or HORIZON=N,...")
        return dict.fromkeys(HORIZONS_S, int(text))
    out = {}
    for part in text.split(","):
        horizon, _, value = part.partition("=")
        if horizon not in HORIZONS_S or not value.strip().isdigit():
            raise InputError(f"{option} {text!r}: give N or HORIZON=N,... of {', '.join(HORIZONS_S)}")
        out[horizon] = int(value)
    return out


def parse_param(text: str) -> tuple[str, Any]:
    """KEY=VALUE, the value read as JSON (a number, true/false) or else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise InputError(f"--param {text!r}: give KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trace", action="append", required=True, help="bitbrains:FILE or planetlab:FILE")
    p.add_argument("--train-days", type=float, required=True)
    p.add_argument("--end-days", type=float, default=None, help="drop samples after first + N days")
    p.add_argument("--vms", type=int, default=None, help="keep only the first K VMs (quick runs)")
    p.add_argument("--horizons", default=",".join(HORIZONS_S), help="comma-separated horizons")
    p.add_argument("--targets", default=None, help="comma-separated models to fit (default: all; cpu, mem)")
    p.add_argument("--cpu-learn", choices=("pct", "cores"), default="pct", help="Bitbrains CPU model's unit")
    p.add_argument("--train-rows", type=int, default=300_000, help="sampled (VM, origin) training rows")
    p.add_argument(
        "--max-train-rows",
        default=MAX_TRAIN_ROWS,
        help=f"rows each model is fitted on: N or HORIZON=N,... (default {MAX_TRAIN_ROWS})",
    )
    p.add_argument("--test-every", type=int, default=1, help="test origin every N grid steps")
    p.add_argument("--max-iter", type=int, default=200, help="boosting iterations per model")
    p.add_argument("--jobs", type=int, default=-1, help="fits side by side (-1: one per core)")
    p.add_argument("--bags", default=BAGS, help=f"P50 models averaged: N or HORIZON=N,... (default {BAGS})")
    p.add_argument("--param", action="append", default=[], help="KEY=VALUE for HorizonForecaster")
    p.add_argument("--forecast-vms", type=int, default=0, help="also time a forecast of N VMs")
    p.add_argument("--json", action="store_true", help="print only the JSON figures")
    args = p.parse_args(argv)
    try:
        horizons = args.horizons.split(",")
        unknown = [h for h in horizons if h not in HORIZONS_S]
        if unknown:
            raise InputError(f"--horizons: unknown {', '.join(unknown)} (of {', '.join(HORIZONS_S)})")
        rows, bags = per_horizon(args.max_train_rows, "--max-train-rows"), per_horizon(args.bags, "--bags")
        given = dict(parse_param(t) for t in args.param)  # over everything else
        params = {
            h: {"max_iter": args.max_iter, "n_jobs": args.jobs}
            | ({"max_train_rows": rows[h]} if h in rows else {})
            | ({"bags": bags[h]} if h in bags else {})
            | given
            for h in horizons
        }
        t0 = time.perf_counter()
        metrics, targets = load_traces(args.trace, args.vms, args.cpu_learn)
        chosen = None if args.targets is None else args.targets.split(",")
        if chosen is not None and not set(chosen) <= set(targets):
            raise InputError(f"--targets: give some of {', '.join(targets)}, got {args.targets}")
        if args.end_days is not None:
            metrics = metrics[metrics["ts"] < metrics["ts"].min() + pd.Timedelta(days=args.end_days)]
        say(f"read {len(metrics):,} samples in {time.perf_counter() - t0:.1f} s", not args.json)
        result, models, floors = evaluate(
            metrics,
            targets,
            args.train_days,
            horizons,
            args.train_rows,
            args.test_every,
            params,
            not args.json,
            chosen,
        )
        if args.forecast_vms:
            timing = time_forecast(metrics, targets, models, floors, args.forecast_vms)
            print(
                f"forecast of {timing['vms']:,.0f} VMs ({timing['rows']:,.0f} samples, "
                f"{len(models)} model(s) x {len(horizons)} horizons): grid {timing['grid_s']:.1f} s "
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
