"""The forecast benchmark's units (bench/forecast.py): Bitbrains CPU scored in percent of the VM's
vCPUs, the issue's unit, and in cores, from the same forecasts."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from benchscript import bench_script

from advisor.errors import InputError

STEP = 300
DAY = 288
START = pd.Timestamp("2024-01-01", tz="UTC")
CORES = (1, 4, 8)


def cpu_pct(days: int, seed: int = 0) -> np.ndarray:
    """Percent busy of len(CORES) VMs: a daily wave plus noise, each VM its own level."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * DAY)
    wave = 20 + 15 * np.sin(2 * np.pi * t / DAY)[None, :] * rng.uniform(0.5, 1.5, size=(len(CORES), 1))
    return np.round(np.clip(wave + rng.normal(0, 5, size=wave.shape), 0, None), 2)


def write_bitbrains(path: Path, pct: np.ndarray) -> None:
    t0 = int(START.timestamp())
    rows = ["vm,ts,cpu_cores,cpu_cap_mhz,cpu_pct,mem_cap_mb,mem_used_mb"]
    for v, cores in enumerate(CORES):
        for i in range(pct.shape[1]):
            rows.append(
                f"{v + 1},{t0 + i * STEP},{cores},{2600 * cores},{pct[v, i]:.2f},4096,{1000 + pct[v, i]}"
            )
    with gzip.open(path, "wt") as f:
        f.write("\n".join(rows) + "\n")


def run(
    path: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> dict[str, dict[str, dict[str, float]]]:
    args = ["--trace", f"bitbrains:{path}", "--train-days", "3", "--json", "--train-rows", "3000"]
    assert bench_script("forecast").main([*args, "--max-iter", "5", *extra]) == 0
    out: dict[str, dict[str, dict[str, float]]] = json.loads(capsys.readouterr().out)
    return out


@pytest.mark.parametrize("learn", ["pct", "cores"])
def test_cpu_is_scored_in_percent_and_in_cores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], learn: str
) -> None:
    pct = cpu_pct(5)
    write_bitbrains(tmp_path / "bb.csv.gz", pct)
    out = run(
        tmp_path / "bb.csv.gz", capsys, "--horizons", "5min,1h", "--targets", "cpu", "--cpu-learn", learn
    )
    assert set(out) == {"cpu", "cpu_cores"}
    cores = pct * np.array(CORES)[:, None] / 100
    for horizon, ahead in (("5min", 1), ("1h", 12)):
        origins = np.arange(3 * DAY, 5 * DAY - ahead)  # every test origin whose target is in the trace
        for unit, values in (("cpu", pct), ("cpu_cores", cores)):
            naive = np.abs(values[:, origins + ahead] - values[:, origins]).mean()
            assert out[unit][horizon]["naive_mae"] == pytest.approx(naive, rel=1e-6)
        # one set of forecasts: coverage does not depend on the unit, the ratios do (VM sizes differ)
        assert out["cpu"][horizon]["p95_coverage"] == out["cpu_cores"][horizon]["p95_coverage"]
        assert out["cpu"][horizon]["ratio"] != pytest.approx(out["cpu_cores"][horizon]["ratio"], rel=1e-6)


def test_end_days_holds_out_what_follows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pct = cpu_pct(6, seed=1)
    write_bitbrains(tmp_path / "bb.csv.gz", pct)
    out = run(tmp_path / "bb.csv.gz", capsys, "--horizons", "5min", "--targets", "cpu", "--end-days", "5")
    assert set(out) == {"cpu", "cpu_cores"}
    origins = np.arange(3 * DAY, 5 * DAY - 1)
    naive = np.abs(pct[:, origins + 1] - pct[:, origins]).mean()
    assert out["cpu"]["5min"]["naive_mae"] == pytest.approx(naive, rel=1e-6)


def test_rescaled_grid_multiplies_each_vm() -> None:
    b = bench_script("forecast")
    from advisor.forecast.horizons import MetricGrid

    raw = np.array([[1.0, np.nan, 3.0], [2.0, 4.0, 6.0]])
    grid = MetricGrid(("a", "b"), pd.date_range(START, periods=3, freq="5min"), STEP, raw, raw)
    out = b.rescaled(grid, b.factors_of({"b": 0.5}, grid.vms))
    np.testing.assert_array_equal(out.raw, [[1.0, np.nan, 3.0], [1.0, 2.0, 3.0]])


def test_bad_options_are_one_line_input_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_bitbrains(tmp_path / "bb.csv.gz", cpu_pct(4))
    base = ["--trace", f"bitbrains:{tmp_path / 'bb.csv.gz'}", "--train-days", "3"]
    for extra in (["--horizons", "2h"], ["--targets", "disk"], ["--param", "=1"], ["--bags", "1h=two"]):
        assert bench_script("forecast").main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {extra[0]}") and err.count("\n") == 1
    with pytest.raises(InputError):
        bench_script("forecast").parse_param("max_iter")
    assert bench_script("forecast").parse_param("max_iter=20") == ("max_iter", 20)
    assert bench_script("forecast").parse_param("target=units") == ("target", "units")
    per_horizon = bench_script("forecast").per_horizon
    assert per_horizon("3", "--bags") == {"5min": 3, "1h": 3, "24h_peak": 3}
    assert per_horizon("1h=2,5min=1", "--bags") == {"1h": 2, "5min": 1}
    with pytest.raises(InputError, match="--bags '2h=1'"):
        per_horizon("2h=1", "--bags")
