"""Retraining the forecaster, the whole job as one function: history -> features -> training -> backtest
-> registration -> promotion -> export (`retrain`).

The history comes in VM batches (`History`), runs of `batch_vms` VMs in inventory order whether it was
held in memory (`in_batches`) or read in chunks (`in_runs`), so both give the same rows. Each batch is
put on its own grid and turned into rows alone, so memory holds one batch's grid and the rows kept (at
most `forecast.max_train_rows`, a uniform sample beyond), never the whole fleet's grid.

Backtest: the rows are split in time as `train.time_split` does (the last fifth of the origins held
out, training targets ending before the first of them); the forecaster is chosen and fitted on the
earlier rows exactly as in the real run, then it, the naive baselines and the current champion predict
the held-out rows. The version registered is refitted on every row. The champion may have been trained
on some of the held-out rows, which flatters it: promotion errs towards keeping it. `backtest` is the
one place to change to use the rolling-origin backtests of the forecasting accuracy work.

With `forecast.ahead_horizons` (the default), each batch also gives its rows to the short-term
forecasters (advisor.forecast.ahead), which are backtested on the history's last day, fitted and
registered in the same version; their figures go to the card and MLflow but do not decide promotion.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from advisor.config import ForecastSettings
from advisor.core import Cluster
from advisor.errors import InputError
from advisor.forecast.ahead import AheadRows, fit_ahead
from advisor.forecast.features import FEATURES, TARGETS, build_table, to_grid, to_units
from advisor.forecast.models import NaiveForecaster, SeasonalNaiveForecaster
from advisor.forecast.registry import (
    CHAMPION,
    CHAMPION_RUN,
    MODEL,
    NAIVE,
    SEASONAL,
    Backtest,
    Decision,
    ForecastBundle,
    Version,
    aliases,
    bundle,
    card_markdown,
    decide,
    export,
    exported_version,
    load_version,
    model_card,
    register,
    run_card,
)
from advisor.forecast.tracking import log_card, log_forecaster
from advisor.forecast.train import fit_and_select, labelled, time_split
from advisor.metrics import validate_metrics

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class History:
    """What to train on: the inventory (VM sizes) and the metrics in batches of whole VMs (every sample
    of a VM in one batch), read one at a time."""

    cluster: Cluster
    batches: Iterable[pd.DataFrame]


def in_batches(cluster: Cluster, metrics: pd.DataFrame, batch_vms: int) -> History:
    """A history already in memory (as a collector returns it), cut into batches of `batch_vms` VMs in
    inventory order (then any VM the inventory lacks), the batches `in_runs` makes of the same data."""
    if not metrics["vm"].is_monotonic_increasing:
        metrics = validate_metrics(metrics, "history")  # sorts by VM, so a VM's rows are contiguous

    def batches() -> Iterator[pd.DataFrame]:
        vm = metrics["vm"].to_numpy()
        if not len(vm):
            return
        starts = np.flatnonzero(np.r_[True, vm[1:] != vm[:-1]])
        span = dict(zip(vm[starts], zip(starts, np.r_[starts[1:], len(vm)], strict=True), strict=True))
        known = cluster.vm_by_name
        order = [v.name for v in cluster.vms if v.name in span] + [n for n in span if n not in known]
        for k in range(0, len(order), batch_vms):
            yield metrics.iloc[np.concatenate([np.arange(*span[n]) for n in order[k : k + batch_vms]])]

    return History(cluster, batches())


def in_runs(cluster: Cluster, runs: Iterable[pd.DataFrame], batch_vms: int) -> History:
    """A history read in runs of whole VMs (advisor.collect.chunks), regrouped into the batches of
    `batch_vms` VMs in inventory order that `in_batches` cuts. A batch is handed on once all its VMs
    are read, so memory holds one batch when the runs come in inventory order (as the chunked reader's
    do, its cluster being built in file order), more when they do not."""
    order = [v.name for v in cluster.vms]
    batch_of = {name: i // batch_vms for i, name in enumerate(order)}
    wanted = np.bincount(np.arange(len(order)) // batch_vms) if order else np.zeros(0, int)

    def batches() -> Iterator[pd.DataFrame]:
        pending: dict[int, list[pd.DataFrame]] = {}
        seen: set[str] = set()
        read = np.zeros(len(wanted), int)
        ready = 0
        for run in runs:
            index = run["vm"].map(batch_of)
            if index.isna().any():
                stranger = run["vm"][index.isna()].iloc[0]
                raise InputError(f"history: VM {stranger} has metrics but is not in the inventory")
            for k, part in run.groupby(index.to_numpy(int), sort=True):
                pending.setdefault(int(k), []).append(part)
                fresh = set(part["vm"]) - seen
                read[k] += len(fresh)
                seen |= fresh
            while ready < len(wanted) and read[ready] == wanted[ready]:
                yield pd.concat(pending.pop(ready), ignore_index=True)
                ready += 1
        if ready < len(wanted):
            missing = next(n for n in order if n not in seen)
            raise InputError(f"history: no samples for VM {missing} of the inventory")

    return History(cluster, batches())


def training_rows(
    history: History, settings: ForecastSettings, progress: Progress = _quiet, ahead: AheadRows | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The feature table (rows with at least one target) of every batch, sampled down to about
    `settings.max_train_rows`, and the facts of the data for the model card. With `ahead`, each batch
    also gives it its short-term forecasters' rows."""
    sizes = history.cluster.vm_by_name
    inventory = len(sizes)
    tables: list[pd.DataFrame] = []
    vms = samples = labelled_rows = 0
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    steps: set[float] = set()
    for i, raw in enumerate(history.batches):
        batch = validate_metrics(raw, "history")
        if batch.empty:
            continue
        names = list(pd.unique(batch["vm"]))
        stranger = next((n for n in names if n not in sizes), None)
        if stranger is not None:
            raise InputError(f"history: VM {stranger} has metrics but is not in the inventory")
        grid = to_grid(batch, names)
        table = build_table(grid, history.cluster, settings)
        table = table[table[list(TARGETS)].notna().any(axis=1)]
        labelled_rows += len(table)
        # Rows a batch keeps: its share of max_train_rows, estimated from its rows per VM.
        share = min(1.0, settings.max_train_rows / max(1.0, len(table) / len(names) * inventory))
        if share < 1.0:
            keep = np.random.default_rng([settings.seed, i]).random(len(table)) < share
            table = table[keep]
        tables.append(table)
        if ahead is not None:
            ahead.add(batch, i)
        vms += len(names)
        samples += len(batch)
        steps.add(grid.step_s)
        first = min(first, batch["ts"].min()) if first is not None else batch["ts"].min()
        last = max(last, batch["ts"].max()) if last is not None else batch["ts"].max()
        progress(f"features: {vms:,} of {inventory:,} VMs, {sum(map(len, tables)):,} rows")
    if first is None or last is None:
        raise InputError("history: no samples to train on")
    days = (last - first).total_seconds() / 86400
    if not labelled_rows:
        raise InputError(
            f"history: {days:.2f} days of samples is too short for forecast.horizon_h = "
            f"{settings.horizon_h:g}: no origin has half a horizon of samples after it"
        )
    rows = pd.concat(tables, ignore_index=True)
    facts = {
        "first_sample": first.isoformat(),
        "last_sample": last.isoformat(),
        "days": round(days, 3),
        "vms": vms,
        "inventory_vms": inventory,
        "samples": samples,
        "step_s": ", ".join(f"{s:g} s" for s in sorted(steps)),
        "rows": len(rows),
        "row_share": round(len(rows) / labelled_rows, 4),
    }
    return rows, facts


def backtest(
    rows: pd.DataFrame, settings: ForecastSettings, champion: ForecastBundle | None
) -> tuple[Backtest | None, Backtest | None]:
    """Hold out the most recent origins, fit on the rows whose targets end before them, and score the
    model and the naive baselines on the held-out rows; with a `champion`, score all of them again on
    the held-out origins after the champion's last training sample (its `trained_until`), where none
    of them has seen a target. Each is None when there are no such rows."""
    horizon = pd.Timedelta(hours=settings.horizon_h)
    train, held = time_split(rows, horizon)
    if train.empty or not _scorable(held):
        return None, None
    fitted = fit_and_select(train, settings, horizon)
    contenders: dict[str, Mapping[str, BaseEstimator]] = {
        MODEL: fitted.models,
        NAIVE: {t: NaiveForecaster(target=t).fit(held) for t in TARGETS},
        SEASONAL: {t: SeasonalNaiveForecaster(target=t).fit(held) for t in TARGETS},
    }
    holdout = _score(held, contenders)
    if champion is None:
        return holdout, None
    fresh = held[held["origin"] >= pd.Timestamp(champion.trained_until)]
    if not _scorable(fresh):
        return holdout, None
    return holdout, _score(fresh, contenders | {CHAMPION_RUN: champion.models or {}})


def _scorable(rows: pd.DataFrame) -> bool:
    return all(not labelled(rows, t).empty for t in TARGETS)


def _score(rows: pd.DataFrame, contenders: Mapping[str, Mapping[str, BaseEstimator]]) -> Backtest:
    mae: dict[str, dict[str, float]] = {c: {} for c in contenders}
    covered: dict[str, dict[str, float]] = {c: {} for c in contenders}
    counts: dict[str, int] = {}
    for t in TARGETS:
        part = labelled(rows, t)
        counts[t] = len(part)
        X = part[list(FEATURES)]
        actual = to_units(part, t, part[t].to_numpy(float))
        for c, models in contenders.items():
            predicted = to_units(part, t, models[t].predict(X))
            mae[c][t] = float(np.mean(np.abs(predicted - actual)))
            covered[c][t] = float(np.mean(actual <= predicted))
    origins = rows["origin"]
    return Backtest(
        origins=int(origins.nunique()),
        first_origin=origins.min().isoformat(),
        last_origin=origins.max().isoformat(),
        rows=counts,
        mae=mae,
        covered=covered,
    )


@dataclass(frozen=True)
class RetrainResult:
    run_id: str
    version: str
    decision: Decision
    champion: str | None  # the champion's version after this run
    exported: str | None  # the file written, if any
    card: dict[str, Any]
    timings_s: dict[str, float]


def retrain(history: History, settings: ForecastSettings, progress: Progress = _quiet) -> RetrainResult:
    """Train a forecaster on `history`, backtest it, register it in MLflow as the new challenger or, when
    it beats the champion and the naive baselines, as the champion, and export the champion."""
    clock = [time.perf_counter()]
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        clock.append(time.perf_counter())
        timings[name] = round(clock[-1] - clock[-2], 2)

    progress("looking up the champion")  # first: a wrong tracking URI fails before minutes of work
    current = load_version(settings, CHAMPION)
    lap("registry")
    short_rows = AheadRows(settings, len(history.cluster.vms)) if settings.ahead_horizons else None
    rows, facts = training_rows(history, settings, progress, short_rows)
    lap("features")
    rival, note = _comparable(current, settings)
    label = f"v{current.version}" if current else None
    progress("backtest against the naive baselines" + (f" and champion {label}" if label else ""))
    holdout, duel = backtest(rows, settings, rival)
    if rival is not None and duel is None:
        note = f"it learnt from samples up to {rival.trained_until}, after every held-out origin"
    decision = decide(holdout, duel, settings.promotion_margin, label, note)
    lap("backtest")
    progress(f"fitting the forecaster on {len(rows):,} rows")
    trained = fit_and_select(rows, settings, pd.Timedelta(hours=settings.horizon_h))
    lap("fit")
    short, short_backtest = fit_ahead(short_rows, progress) if short_rows else (None, {})
    lap("ahead")
    model = bundle(trained.models, settings, facts["last_sample"], short)
    progress("registering the forecaster in MLflow")
    figures = _metrics(holdout, duel, decision) | _ahead_metrics(short_backtest)
    logged = log_forecaster(model, trained, settings, facts, figures, rows.tail(5))
    version = register(settings, logged["model_uri"], logged["run_id"], decision, logged["model_id"])
    card = model_card(
        settings,
        facts,
        trained.chosen,
        trained.note,
        holdout,
        duel,
        decision,
        version,
        logged["run_id"],
        short_backtest,
    )
    log_card(settings, logged["run_id"], card, card_markdown(card))
    lap("mlflow")
    exported = _export(settings, model, card, decision, current, progress)
    lap("export")
    champion = version if decision.promote else (current.version if current else None)
    return RetrainResult(logged["run_id"], version, decision, champion, exported, card, timings)


def _comparable(current: Version | None, settings: ForecastSettings) -> tuple[ForecastBundle | None, str]:
    """The champion's forecaster when it can be scored on today's rows, else None and why not."""
    if current is None:
        return None, ""
    if current.model is None:
        return None, current.note
    if not current.model.trained_until:
        return None, "the end of its training data is unknown"
    unfit = current.model.unfit_for(settings)
    return (None, unfit) if unfit else (current.model, "")


def _metrics(holdout: Backtest | None, duel: Backtest | None, decision: Decision) -> dict[str, float]:
    out: dict[str, float] = {"promoted": float(decision.promote)}
    for prefix, bt in (("backtest", holdout), ("vs_champion", duel)):
        if bt is None:
            continue
        for c in bt.mae:
            out[f"{prefix}_score_{c}"] = bt.score(c)
            for t in TARGETS:
                out[f"{prefix}_mae_{t}_{c}"] = bt.mae[c][t]
                out[f"{prefix}_mase_{t}_{c}"] = bt.mase(c)[t]
                out[f"{prefix}_covered_{t}_{c}"] = bt.covered[c][t]
    return out


def _ahead_metrics(backtests: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The short-term backtests as MLflow metrics: ahead_<metric>_<horizon>_<figure>_<forecaster>."""
    out: dict[str, float] = {}
    for k, bt in backtests.items():
        metric, horizon = k.split("/")
        for forecaster, figures in bt.get("figures", {}).items():
            out |= {f"ahead_{metric}_{horizon}_{name}_{forecaster}": v for name, v in figures.items()}
        if bt.get("ratio") is not None:
            out[f"ahead_{metric}_{horizon}_ratio"] = bt["ratio"]
    return out


def _export(
    settings: ForecastSettings,
    model: ForecastBundle,
    card: dict[str, Any],
    decision: Decision,
    current: Version | None,
    progress: Progress,
) -> str | None:
    """Write the champion to `settings.export_path`: the new model when it won; otherwise the standing
    champion, when the file is missing or holds another version. None when nothing was written."""
    if not settings.export_path:
        return None
    path = Path(settings.export_path)
    if decision.promote:
        progress(f"exporting the new champion to {path}")
        export(model, card, path)
        return str(path)
    if current is None or current.model is None or exported_version(path, settings) == current.version:
        return None
    if aliases(settings).get(CHAMPION) != current.version:  # moved by another run meanwhile
        return None
    progress(f"exporting champion v{current.version} to {path}")
    export(current.model, run_card(settings, current.run_id), path)
    return str(path)
