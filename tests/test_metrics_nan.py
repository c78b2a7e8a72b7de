"""NaN in the optional dirty_mibps column means "not measured": accepted, and skipped by its consumers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advisor.config import ForecastSettings
from advisor.core import VM, Cluster, Host
from advisor.errors import InputError
from advisor.forecast.dirtyrate import dirty_grid
from advisor.forecast.features import TARGETS, to_grid
from advisor.forecast.models import NaiveForecaster
from advisor.forecast.predict import forecast_on
from advisor.metrics import read_metrics, validate_metrics, write_metrics

START = pd.Timestamp("2026-01-01", tz="UTC")


def frame(dirty: list[object], vms: list[str] | None = None) -> pd.DataFrame:
    n = len(dirty)
    return pd.DataFrame(
        {
            "vm": vms or ["a"] * n,
            "ts": [START + pd.Timedelta(minutes=5 * i) for i in range(n)],
            "cpu_cores": np.ones(n),
            "mem_mib": np.full(n, 512.0),
            "dirty_mibps": dirty,
        }
    )


def test_blank_dirty_rate_is_kept_as_nan() -> None:
    df = validate_metrics(frame([1.0, np.nan, None, pd.NA]), "m")
    assert df["dirty_mibps"].dtype == float
    assert df["dirty_mibps"].isna().tolist() == [False, True, True, True]


@pytest.mark.parametrize(
    ("dirty", "shown"),
    [
        ([1.0, np.inf], r"\(inf\)"),
        ([1.0, -2.0], r"\(-2.0\)"),
        (["1", "fast"], "'fast'"),
        ([1.0, -np.inf], "-inf"),
    ],
)
def test_bad_dirty_rates_are_still_named(dirty: list[object], shown: str) -> None:
    with pytest.raises(InputError, match=rf"m.csv: column dirty_mibps: row 2 \(vm a, .*\) has .*{shown}"):
        validate_metrics(frame(dirty), "m.csv")


@pytest.mark.parametrize("col", ["cpu_cores", "mem_mib"])
def test_required_columns_still_reject_nan(col: str) -> None:
    df = frame([1.0, 2.0])
    df.loc[1, col] = np.nan
    with pytest.raises(InputError, match=f"column {col}: row 2"):
        validate_metrics(df, "m.csv")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(0, 1e4)), min_size=1, max_size=30))
def test_nan_positions_survive_sorting(values: list[float | None]) -> None:
    df = frame([np.nan if v is None else v for v in values], vms=[f"v{i % 3}" for i in range(len(values))])
    shuffled = df.sample(frac=1.0, random_state=len(values))
    out = validate_metrics(shuffled, "m")
    key = ["vm", "ts"]
    merged = out.merge(df.assign(ts=pd.to_datetime(df["ts"], utc=True)), on=key, suffixes=("", "_in"))
    assert len(merged) == len(df)
    assert (merged["dirty_mibps"].isna() == merged["dirty_mibps_in"].isna()).all()
    seen = merged["dirty_mibps"].notna()
    assert (merged.loc[seen, "dirty_mibps"] == merged.loc[seen, "dirty_mibps_in"]).all()


def test_parquet_round_trip_keeps_nan(tmp_path: Path) -> None:
    df = frame([1.0, np.nan, 3.0])
    write_metrics(df, tmp_path / "m.parquet")
    back = read_metrics(tmp_path / "m.parquet")
    pd.testing.assert_frame_equal(back, validate_metrics(df, "m"))
    assert back["dirty_mibps"].isna().tolist() == [False, True, False]


def test_grid_averages_only_measured_dirty_samples() -> None:
    # Samples at 0, 5, 10 and 11 min: a 5-min grid anchored at 11 min puts the last two on one point,
    # where the dirty rate was measured once and not at all the second time.
    ts = [START + pd.Timedelta(minutes=m) for m in (0, 5, 10, 11)]
    df = validate_metrics(
        pd.DataFrame(
            {
                "vm": ["a"] * 4 + ["b"] * 4,
                "ts": ts * 2,
                "cpu_cores": [1.0, 2.0, 2.0, 4.0] * 2,
                "mem_mib": [512.0] * 8,
                "dirty_mibps": [3.0, 5.0, 10.0, np.nan] + [np.nan] * 4,
            }
        ),
        "m",
    )
    grid = to_grid(df, ["a", "b"])
    assert grid.step_s == 300 and grid.dirty is not None
    assert grid.dirty[0].tolist() == [3.0, 5.0, 10.0]
    assert np.isnan(grid.dirty[1]).all()  # never measured: NaN, not 0
    assert grid.cpu[0].tolist() == grid.cpu[1].tolist() == [1.0, 2.0, 3.0]  # CPU is unaffected


def test_vms_without_a_dirty_rate_are_left_out_of_its_grid() -> None:
    df = validate_metrics(
        pd.concat(
            [frame([1.0, 2.0, 3.0], vms=["a"] * 3), frame([np.nan] * 3, vms=["b"] * 3)], ignore_index=True
        ),
        "m",
    )
    assert dirty_grid(df).vms == ("a",)
    with pytest.raises(InputError, match="no dirty_mibps values"):
        dirty_grid(df[df["vm"] == "b"])


def test_forecast_dirty_rate_is_the_mean_of_measured_samples() -> None:
    n = 24
    df = validate_metrics(
        pd.concat(
            [
                frame([2.0, np.nan] * (n // 2), vms=["a"] * n),  # measured every other sample
                frame([np.nan] * n, vms=["b"] * n),  # never measured
            ],
            ignore_index=True,
        ),
        "m",
    )
    cluster = Cluster("c", (Host("h", 16, 65536),), (VM("a", "h", 2, 1024), VM("b", "h", 2, 1024)))
    s = ForecastSettings(horizon_h=1.0, season_h=2.0)
    models = {t: NaiveForecaster(target=t).fit(pd.DataFrame({f"naive_{t}": [0.0]})) for t in TARGETS}
    forecast, _ = forecast_on(to_grid(df, ["a", "b"]), cluster, models, s, "naive")
    assert forecast.vms["a"].dirty_mibps == 2.0
    assert forecast.vms["b"].dirty_mibps == 0.0  # none measured: the VMForecast default
    assert forecast.vms["b"].cpu_p50 == forecast.vms["a"].cpu_p50  # CPU is unaffected
