"""The collect entry point and the shipped sample data."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from advisor.collect import collect
from advisor.collect.make_sample import DATA_DIR, SETTINGS, write_sample
from advisor.config import CollectSettings, PowerSettings
from advisor.errors import InputError
from advisor.files import read_cluster
from advisor.metrics import validate_metrics

POWER = PowerSettings.model_validate({})
SAMPLE = DATA_DIR / "sample"


def settings(**kw: object) -> CollectSettings:
    return CollectSettings.model_validate(kw)


def test_collect_synthetic_reports_progress() -> None:
    said: list[str] = []
    cluster, metrics = collect(settings(synthetic={"hosts": 6, "vms": 20, "days": 1}), POWER, said.append)
    assert len(cluster.vms) == 20 and said
    pd.testing.assert_frame_equal(metrics, validate_metrics(metrics, "again"))


def test_collect_csv_with_the_sample_inventory() -> None:
    cluster, metrics = collect(
        settings(source="csv", paths=[str(SAMPLE / "metrics.csv")], inventory=str(SAMPLE / "cluster.json")),
        POWER,
    )
    assert cluster == read_cluster(SAMPLE / "cluster.json")
    assert set(metrics["vm"]) == {v.name for v in cluster.vms}
    assert list(metrics.columns) == ["vm", "ts", "cpu_cores", "mem_mib", "dirty_mibps"]


def test_collect_parquet(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "vm": ["a", "a"],
            "ts": ["2026-01-01T00:00Z", "2026-01-01T01:00Z"],
            "cpu_cores": [1, 2],
            "mem_mib": [3, 4],
        }
    )
    df.to_parquet(tmp_path / "m.parquet")
    cluster, metrics = collect(settings(source="parquet", paths=[str(tmp_path / "m.parquet")]), POWER)
    assert [v.name for v in cluster.vms] == ["a"] and len(metrics) == 2


@pytest.mark.parametrize("source", ["planetlab", "bitbrains", "csv", "parquet"])
def test_trace_sources_need_paths(source: str) -> None:
    with pytest.raises(InputError, match="no trace files given"):
        collect(settings(source=source), POWER)


def test_missing_inventory_is_named(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("vm,ts,cpu_cores,mem_mib\na,2026-01-01,1,1\n")
    with pytest.raises(InputError, match="inv.json: no such file"):
        collect(
            settings(source="csv", paths=[str(tmp_path / "m.csv")], inventory=str(tmp_path / "inv.json")),
            POWER,
        )


def test_shipped_sample_is_what_the_generator_makes(tmp_path: Path) -> None:
    write_sample(tmp_path)
    stale = "is stale: run `python -m advisor.collect.make_sample`"
    for name in ("sample/cluster.json", "README.md"):
        assert (tmp_path / name).read_bytes() == (DATA_DIR / name).read_bytes(), f"data/{name} {stale}"
    # Values may differ in the last rounded digit where another CPU's float32 exp differs by an ulp.
    fresh, shipped = pd.read_csv(tmp_path / "sample/metrics.csv"), pd.read_csv(SAMPLE / "metrics.csv")
    assert fresh[["vm", "ts"]].equals(shipped[["vm", "ts"]]), f"data/sample/metrics.csv {stale}"
    for col, unit in (("cpu_cores", 0.001), ("mem_mib", 1), ("dirty_mibps", 0.01)):
        assert (fresh[col] - shipped[col]).abs().max() <= 1.01 * unit, f"data/sample/metrics.csv {stale}"


def test_sample_is_small_and_as_described() -> None:
    assert (SAMPLE / "metrics.csv").stat().st_size < 2_000_000
    cluster = json.loads((SAMPLE / "cluster.json").read_text())
    assert (len(cluster["hosts"]), len(cluster["vms"])) == (SETTINGS.hosts, SETTINGS.vms) == (8, 60)
    assert (
        SETTINGS.days == 3 and "python -m advisor.collect.make_sample" in (DATA_DIR / "README.md").read_text()
    )
