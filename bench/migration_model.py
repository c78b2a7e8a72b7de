"""Migration-cost model benchmark (issue 7): the analytic pre-copy model and its learned correction,
fitted on one measured-migrations CSV and scored on another (both in bench/migrations.py's columns).

    .venv/bin/python bench/migration_model.py --train data/migrations.csv \
        --test data/migrations-test.csv --json [--mlflow sqlite:///mlruns.db]

Figures, all fractions (0.2 = 20 %):
- `*_p50_ape`, `*_p90_ape`: absolute percentage error of the total migration time, on the test
  migrations that converged (an aborted run's time is the abort deadline, not a migration time);
- `converge_accuracy`: the correction's "finishes before the abort deadline" against the measurement, on
  every test migration;
- `downtime_within_limit_accuracy`: the correction's "converges with a downtime within max_downtime_ms"
  against the measurement (converged and downtime <= its limit), on every test migration.
The data files come from separate sweeps (different seeds draw different guests), so no migration is in
both. Without --json a table adds the analytic model's accuracies and the row counts.
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

from advisor.errors import AdvisorError, InputError
from advisor.migration import MigrationCorrection, predict_migrations, read_measured
from advisor.migration.measured import INPUT_COLUMNS


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
    analytic = predict_migrations(X)
    learned = predict_migrations(X, model)
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
    extra = {
        "n_train": len(train),
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
        "fit_s": round(fit_s, 2),
        "model": model,
    }
    return figures, extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, required=True, help="measured migrations to fit on")
    parser.add_argument("--test", type=Path, required=True, help="measured migrations to score on")
    parser.add_argument("--json", action="store_true", help="print only the JSON figures")
    parser.add_argument("--seed", type=int, default=0, help="the boosting's random state")
    parser.add_argument(
        "--mlflow", default="", help="tracking URI to record the fit in (e.g. sqlite:///mlruns.db)"
    )
    args = parser.parse_args(argv)
    try:
        train, test = read_measured(args.train), read_measured(args.test)
        figures, extra = evaluate(train, test, args.seed)
        if args.mlflow:
            from advisor.migration.tracking import log_correction

            metrics = {k: float(v) for k, v in figures.items()}
            run_id = log_correction(
                extra["model"],
                args.mlflow,
                train.head(5),
                metrics,
                {"train_file": str(args.train), "test_file": str(args.test)},
            )
            extra["mlflow_run_id"] = run_id
    except AdvisorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(figures))
        return 0
    for key, value in {**figures, **extra}.items():
        if key != "model":
            print(f"{key:42s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
