"""Migration-cost model benchmark (issue 7): the analytic pre-copy model and its learned correction,
fitted on one measured-migrations CSV and scored on another (both in bench/migrations.py's columns).

    .venv/bin/python bench/migration_model.py --train data/migrations.csv \
        --test data/migrations-test.csv --json [--mlflow sqlite:///mlruns.db]
    .venv/bin/python bench/migration_model.py --train data/migrations.csv \
        --test data/migrations-test.csv data/migrations-test2.csv data/migrations-test3.csv
    .venv/bin/python bench/migration_model.py --train data/migrations.csv --cv 5 --repeats 2
    .venv/bin/python bench/migration_model.py --train data/migrations-quiet.csv \
        --test data/migrations-quiet-test.csv --json

Several --test files are scored pooled (the JSON) and one by one (the table). `--cv K` scores grouped
K-fold cross-validation on --train instead: folds by guest (a run of consecutive rows with the same
memory and working set is one booted guest), so no guest is in both sides of a fold; the only honest way
to choose between model variants without touching the held-out files.

Figures, all fractions (0.2 = 20 %):
- `*_p50_ape`, `*_p90_ape`: absolute percentage error of the total migration time, on the test
  migrations that converged (an aborted run's time is the abort deadline, not a migration time);
- `converge_accuracy`: the correction's "finishes before the abort deadline" against the measurement, on
  every test migration;
- `downtime_within_limit_accuracy`: the correction's "converges with a downtime within max_downtime_ms"
  against the measurement (converged and downtime <= its limit), on every test migration.
The data files come from separate sweeps (different seeds draw different guests), so no migration is in
both. Without --json a table adds the analytic model's accuracies, the row counts and the time error
of the migrations over 3 s and up to 3 s (short ones are dominated by a fixed cost that moves with the
machine's load).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from advisor.errors import AdvisorError, InputError
from advisor.migration import MigrationCorrection, predict_migrations, read_measured
from advisor.migration.measured import INPUT_COLUMNS

SHORT_S = 3.0  # migrations up to this long: the fixed cost dominates


def ape(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    return np.abs(predicted - measured) / measured


def within_limit(frame: pd.DataFrame) -> np.ndarray:
    """Measured: the migration converged and paused the guest no longer than its limit."""
    return (frame["converged"] & (frame["downtime_ms"] <= frame["max_downtime_ms"])).to_numpy(bool)


def evaluate(train: pd.DataFrame, test: pd.DataFrame, seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON figures, and extra ones for the table (analytic accuracies, counts, fit time)."""
    started = time.perf_counter()
    model = MigrationCorrection(random_state=seed).fit(train[list(INPUT_COLUMNS)], train)
    fit_s = time.perf_counter() - started
    X = test[list(INPUT_COLUMNS)]
    figures, extra = score(test, predict_migrations(X), predict_migrations(X, model))
    return figures, {"n_train": len(train), **extra, "fit_s": round(fit_s, 2), "model": model}


def cross_validate(
    train: pd.DataFrame, folds: int, repeats: int = 1, seed: int = 0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Grouped K-fold on one file (see the module): every migration predicted once per repeat by a model
    that never saw its guest; the figures are those of the pooled out-of-fold predictions, averaged
    over the repeats (each repeat shuffles the guests into other folds)."""
    guests = guest_runs(train)
    if len(set(guests)) < folds:
        raise InputError(f"--cv {folds}: the training file has only {len(set(guests))} guests")
    X = train[list(INPUT_COLUMNS)]
    runs = []
    for repeat in range(repeats):
        parts = []
        split = GroupKFold(n_splits=folds, shuffle=True, random_state=seed + repeat)
        for fit_rows, test_rows in split.split(X, groups=guests):
            model = MigrationCorrection(random_state=seed).fit(X.iloc[fit_rows], train.iloc[fit_rows])
            parts.append(predict_migrations(X.iloc[test_rows], model))
        learned = pd.concat(parts).loc[train.index]
        runs.append(score(train, predict_migrations(X), learned))
    figures = {k: round(float(np.mean([r[0][k] for r in runs])), 4) for k in runs[0][0]}
    extra = {k: round(float(np.mean([r[1][k] for r in runs])), 4) for k in runs[0][1]}
    return figures, {"folds": folds, "repeats": repeats, **extra}


def guest_runs(frame: pd.DataFrame) -> np.ndarray:
    """One number per booted guest: bench/migrations.py migrates a guest once per variant in a row, so a
    run of consecutive rows with the same memory and working set is one guest."""
    keys = frame[["mem_mib", "working_set_mib"]]
    return keys.ne(keys.shift()).any(axis=1).cumsum().to_numpy()


def score(
    test: pd.DataFrame, analytic: pd.DataFrame, learned: pd.DataFrame
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The issue's figures for predictions of `test`'s rows, and the table's extra ones."""
    done = test["converged"].to_numpy(bool)
    if not done.any():
        raise InputError("--test: no converged migration to score the time on")
    measured_time = test["total_time_s"].to_numpy(float)[done]
    a_ape = ape(analytic["total_time_s"].to_numpy(float)[done], measured_time)
    m_ape = ape(learned["total_time_s"].to_numpy(float)[done], measured_time)
    inside = within_limit(test)
    figures = {
        "n_test": len(test),
        "analytic_p50_ape": round(float(np.quantile(a_ape, 0.5)), 4),
        "analytic_p90_ape": round(float(np.quantile(a_ape, 0.9)), 4),
        "model_p50_ape": round(float(np.quantile(m_ape, 0.5)), 4),
        "model_p90_ape": round(float(np.quantile(m_ape, 0.9)), 4),
        "converge_accuracy": round(float(np.mean(learned["converges"].to_numpy(bool) == done)), 4),
        "downtime_within_limit_accuracy": round(
            float(np.mean(learned["downtime_within_limit"].to_numpy(bool) == inside)), 4
        ),
    }
    short = measured_time <= SHORT_S
    extra = {
        "n_test_converged": int(done.sum()),
        "n_test_within_limit": int(inside.sum()),
        "analytic_converge_accuracy": round(float(np.mean(analytic["converges"].to_numpy(bool) == done)), 4),
        "analytic_downtime_within_limit_accuracy": round(
            float(np.mean(analytic["downtime_within_limit"].to_numpy(bool) == inside)), 4
        ),
        "model_p50_downtime_ape": round(
            float(
                np.median(
                    ape(
                        learned["downtime_ms"].to_numpy(float)[done],
                        test["downtime_ms"].to_numpy(float)[done],
                    )
                )
            ),
            4,
        ),
        "n_test_over_3s": int((~short).sum()),
        "model_p50_ape_over_3s": _quantile(m_ape[~short], 0.5),
        "model_p90_ape_over_3s": _quantile(m_ape[~short], 0.9),
        "model_p50_ape_upto_3s": _quantile(m_ape[short], 0.5),
        "model_p90_ape_upto_3s": _quantile(m_ape[short], 0.9),
    }
    return figures, extra


def _quantile(values: np.ndarray, q: float) -> float:
    return round(float(np.quantile(values, q)), 4) if len(values) else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, required=True, help="measured migrations to fit on")
    parser.add_argument(
        "--test", type=Path, nargs="+", default=[], help="measured migrations to score on (pooled)"
    )
    parser.add_argument("--cv", type=int, default=0, help="grouped K-fold on --train instead of --test")
    parser.add_argument("--repeats", type=int, default=1, help="--cv: reshuffled repeats to average")
    parser.add_argument("--json", action="store_true", help="print only the JSON figures")
    parser.add_argument("--seed", type=int, default=0, help="the boosting's random state")
    parser.add_argument(
        "--mlflow", default="", help="tracking URI to record the fit in (e.g. sqlite:///mlruns.db)"
    )
    args = parser.parse_args(argv)
    if bool(args.test) == bool(args.cv):
        parser.error("give either --test FILE... or --cv K")
    tables: dict[str, dict[str, Any]] = {}
    try:
        train = read_measured(args.train)
        if args.cv:
            figures, extra = cross_validate(train, args.cv, args.repeats, args.seed)
        else:
            tests = [read_measured(path) for path in args.test]
            if len(tests) > 1:
                for path, test in zip(args.test, tests, strict=True):
                    tables[path.name] = {**evaluate(train, test, args.seed)[0]}
            figures, extra = evaluate(train, pd.concat(tests, ignore_index=True), args.seed)
        if args.mlflow and not args.cv:
            from advisor.migration.tracking import log_correction

            metrics = {k: float(v) for k, v in figures.items()}
            run_id = log_correction(
                extra["model"],
                args.mlflow,
                train.head(5),
                metrics,
                {"train_file": str(args.train), "test_file": " ".join(str(p) for p in args.test)},
            )
            extra["mlflow_run_id"] = run_id
    except AdvisorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(figures))
        return 0
    for name, file_figures in tables.items():
        print(f"{name}: " + " ".join(f"{k}={v}" for k, v in file_figures.items()))
    if tables:
        print("pooled:")
    for key, value in {**figures, **extra}.items():
        if key != "model":
            print(f"{key:42s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
