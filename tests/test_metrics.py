"""The metrics schema check names the file, column and row of a bad value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from advisor.errors import InputError
from advisor.metrics import read_metrics, validate_metrics, write_metrics


def frame(**overrides: object) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "vm": ["b", "a", "a"],
            "ts": ["2026-01-01T00:05:00Z", "2026-01-01T00:05:00Z", "2026-01-01T00:00:00Z"],
            "cpu_cores": [1.0, 0.5, 0.25],
            "mem_mib": [100.0, 200.0, 300.0],
        }
    )
    for k, v in overrides.items():
        df[k] = v
    return df


def test_canonical_form_sorted_and_typed() -> None:
    df = validate_metrics(frame(), "m")
    assert list(df["vm"]) == ["a", "a", "b"] and df["ts"].dt.tz is not None
    assert df["cpu_cores"].tolist() == [0.25, 0.5, 1.0]


@pytest.mark.parametrize(
    ("df", "message"),
    [
        (frame().drop(columns="mem_mib"), "m.csv: missing metric column"),
        (frame(cpu_cores=[1.0, np.nan, 1.0]), r"m.csv: column cpu_cores: row 2 \(vm a"),
        (frame(mem_mib=[1.0, 2.0, -5.0]), "column mem_mib: row 3"),
        (frame(cpu_cores=["1", "x", "2"]), "column cpu_cores: row 2"),
        (frame(ts=["2026-01-01", "yesterday", "2026-01-02"]), "column ts: not a timestamp"),
        (frame(vm=["a", "a", "a"], ts=["2026-01-01"] * 3), "duplicate sample for vm a"),
    ],
)
def test_bad_metrics_are_named(df: pd.DataFrame, message: str) -> None:
    with pytest.raises(InputError, match=message):
        validate_metrics(df, "m.csv")


def test_parquet_round_trip_and_missing_file(tmp_path: Path) -> None:
    write_metrics(frame(dirty_mibps=[0.0, 1.0, 2.0]), tmp_path / "m.parquet")
    back = read_metrics(tmp_path / "m.parquet")
    pd.testing.assert_frame_equal(back, validate_metrics(frame(dirty_mibps=[0.0, 1.0, 2.0]), "x"))
    with pytest.raises(InputError, match="run `advisor collect` first"):
        read_metrics(tmp_path / "nope.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="not a readable Parquet"):
        read_metrics(tmp_path / "junk.parquet")
