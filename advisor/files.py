"""Reading and writing the files that pass between stages, with errors that name the file."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from advisor.core import Cluster, Forecast, Plan
from advisor.errors import AdvisorError, InputError

CLUSTER_FILE = "cluster.json"
METRICS_FILE = "metrics.parquet"
FORECAST_FILE = "forecast.json"
FORECAST_SUMMARY_FILE = "forecast_training.json"
BACKTEST_FILE = "backtest.csv"  # advisor backtest: figures per metric, horizon, fold and forecaster
FORECAST_AHEAD_FILE = "forecast-ahead.csv"  # short-term forecasts of the champion (advisor.forecast.ahead)
PLAN_FILE = "plan.json"
PARETO_FILE = "pareto.json"
DRYRUN_FILE = "dryrun.json"
REPORT_FILE = "report.html"


def read_json(path: Path, hint: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file ({hint})") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file the user wrote (`what`: "configuration", "scenarios"), or one line saying what is wrong."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise AdvisorError(f"{path}: no such {what} file") from None
    except tomllib.TOMLDecodeError as e:
        raise AdvisorError(f"{path}: not valid TOML ({e})") from None


def write_text(path: Path, text: str) -> None:
    """Write through a temporary file, so the next stage or a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def read_cluster(path: Path) -> Cluster:
    return Cluster.from_dict(read_json(path, "run `advisor collect` first"), str(path))


def write_cluster(path: Path, cluster: Cluster) -> None:
    write_json(path, cluster.to_dict())


def read_forecast(path: Path) -> Forecast:
    return Forecast.from_dict(read_json(path, "run `advisor forecast` first"), str(path))


def write_forecast(path: Path, forecast: Forecast) -> None:
    write_json(path, forecast.to_dict())


def read_plan(path: Path) -> Plan:
    return Plan.from_dict(read_json(path, "run `advisor plan` first"), str(path))


def write_plan(path: Path, plan: Plan) -> None:
    write_json(path, plan.to_dict())
