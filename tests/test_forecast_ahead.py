"""The short-term forecasters of the product (advisor.forecast.ahead): rows gathered batch by batch,
the backtest figures, forecasts for VMs that lack a metric, and `advisor backtest`. The whole job
(registration, export, the forecast stage) is in test_retrain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_retrain import START, fleet, fsettings
from typer.testing import CliRunner

from advisor.cli import app
from advisor.forecast.ahead import AheadRows, fit_ahead, forecast_ahead
from advisor.metrics import write_metrics


def test_a_vm_without_memory_gets_cpu_forecasts_only() -> None:
    """Its memory is NaN: the memory models leave it out, the CPU models forecast it with NaN partner
    features, and no forecast is NaN."""
    _, metrics = fleet(8, 5)
    metrics.loc[metrics["vm"] == "vm03", "mem_mib"] = np.nan
    rows = AheadRows(fsettings(ahead_horizons=["1h"], ahead_jobs=1), inventory_vms=8)
    rows.add(metrics, 0)
    model, report = fit_ahead(rows)
    assert model is not None and set(report) == {"cpu_cores/1h", "mem_mib/1h"}
    got = forecast_ahead(model, metrics)
    by_metric = got.groupby("metric")["vm"].agg(set)
    assert "vm03" in by_metric["cpu_cores"] and "vm03" not in by_metric["mem_mib"]
    assert len(by_metric["mem_mib"]) == 7 and not got[["p50", "p95"]].isna().any().any()


def test_batches_share_the_rows_and_the_test_days() -> None:
    """Two batches of 4 VMs give about the rows one batch of 8 gives, and the same held-out day."""
    _, metrics = fleet(8, 5)
    s = fsettings(ahead_horizons=["1h"], ahead_train_rows=4000, ahead_test_rows=1000, ahead_jobs=1)
    whole, halves = AheadRows(s, 8), AheadRows(s, 8)
    whole.add(metrics, 0)
    for i, names in enumerate((["vm00", "vm01", "vm02", "vm03"], ["vm04", "vm05", "vm06", "vm07"])):
        halves.add(metrics[metrics["vm"].isin(names)], i)
    for rows in (whole, halves):
        X, y, before = rows.train["cpu_cores/1h"].joined()
        assert 0.9 * 4000 <= len(X) <= 4000 and before.any() and not before.all()
        assert set(X["vm"]) == {f"vm0{i}" for i in range(8)}
        assert pd.DatetimeIndex(X["origin"][before]).max() < rows.test_from["cpu_cores/1h"]
        assert rows.test_from["cpu_cores/1h"] == START + pd.Timedelta(
            days=4, hours=-1
        )  # last origin: 23:00 on day 5
        assert len(rows.test["cpu_cores/1h"].joined()[0]) >= 0.9 * 1000
    assert len(halves.floors["cpu_cores"]) == 2


def test_a_history_too_short_for_a_horizon_is_a_note() -> None:
    """1.5 days: enough for 1 h ahead with a held-out day, not for the 24-h peak."""
    _, metrics = fleet(6, 1.5)
    rows = AheadRows(fsettings(ahead_horizons=["1h", "24h_peak"], ahead_jobs=1), inventory_vms=6)
    rows.add(metrics, 0)
    model, report = fit_ahead(rows)
    assert model is not None and set(model.models or {}) == {"cpu_cores/1h", "mem_mib/1h"}
    assert report["cpu_cores/24h_peak"]["note"].startswith("not trained: no VM has more than 3 days")
    assert "figures" in report["cpu_cores/1h"]


# --- advisor backtest ----------------------------------------------------------------------------------


def backtest_cli(out: Path, *args: str) -> tuple[int, str]:
    cfg = out.parent / "advisor.toml"
    cfg.write_text("[forecast]\nahead_max_iter = 20\nahead_jobs = 1\n")
    result = CliRunner().invoke(
        app, ["backtest", "-c", str(cfg), "-o", str(out), *args], env={"COLUMNS": "200"}
    )
    return result.exit_code, result.output


def test_advisor_backtest_scores_every_fold_and_prints_their_mean(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    write_metrics(fleet(8, 5)[1], tmp_path / "out" / "metrics.parquet")
    code, text = backtest_cli(tmp_path / "out", "--folds", "2", "--horizon", "1h")
    assert code == 0, text
    tidy = pd.read_csv(tmp_path / "out" / "backtest.csv", parse_dates=["test_start"])
    assert len(tidy) == 2 * 2 * 4  # metrics x folds x forecasters
    assert set(tidy["forecaster"]) == {"model", "naive", "seasonal_naive", "moving_average"}
    starts = tidy.groupby("fold")["test_start"].first()
    assert starts[1] - starts[0] == pd.Timedelta(days=1)
    assert (tidy["rows"] == 8 * 288).all()  # every VM at every origin of the fold's day
    model = tidy[tidy["forecaster"] == "model"].set_index(["metric", "fold"])["mase"]
    naive = tidy[tidy["forecaster"] == "naive"].set_index(["metric", "fold"])["mase"]
    assert (model < naive).all()  # the sine fleet: 1 h ahead is predictable beyond the last value
    row = next(line for line in text.splitlines() if "mem_mib/1h" in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert float(cells[1]) == pytest.approx(model.loc["mem_mib"].mean(), abs=5e-4)
    assert cells[-1] == " ".join(f"{v:.3f}" for v in model.loc["mem_mib"])


@pytest.mark.parametrize(
    ("days", "args", "message"),
    [
        (2.0, (), "3 fold(s) of 1 day(s) at the 5min horizon need more than 3.00"),
        (None, (), "metrics.parquet"),
        (5.0, ("--horizon", "2h"), "forecast.ahead_horizons"),
    ],
    ids=["too-short", "no-metrics", "bad-horizon"],
)
def test_advisor_backtest_bad_input_is_one_line(
    tmp_path: Path, days: float | None, args: tuple[str, ...], message: str
) -> None:
    (tmp_path / "out").mkdir()
    if days is not None:
        write_metrics(fleet(4, days)[1], tmp_path / "out" / "metrics.parquet")
    code, text = backtest_cli(tmp_path / "out", *args)
    said = [line for line in text.splitlines() if not line.startswith("backtest: ")]
    assert code == 2 and len(said) == 1 and said[0].startswith("error: ") and message in said[0], text
