"""`advisor train` reading a trace file in chunks: runs of whole VMs, the same cluster, metrics, batches
and training rows as the in-memory path, and unsorted files named."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from advisor.cli import app
from advisor.collect import collect
from advisor.collect.chunks import read_runs, whole_vms
from advisor.config import Config, parse_config
from advisor.core import VM, Cluster, Host
from advisor.errors import InputError
from advisor.files import write_cluster
from advisor.forecast.retrain import History, in_batches, in_runs, training_rows
from advisor.metrics import validate_metrics, write_metrics
from pipelines.retrain import history

START = 1_704_067_200  # 2024-01-01 00:00 UTC, a Monday
runner = CliRunner()


def bitbrains_file(path: Path, n_vms: int = 11, days: float = 2.5, seed: int = 0) -> Path:
    """A Bitbrains-format file sorted by VM number (so "10" comes after "9", unlike in string order),
    sampled every ~300 s with jitter, each VM starting and ending at its own time, with the format's
    quirks: rows with 0 cores, a repeated timestamp, memory use above the cap, and a VM without a cap."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_vms):
        steps = int(days * 288) - int(rng.integers(0, 60))
        ts = START + int(rng.integers(0, 3000)) + np.cumsum(rng.integers(290, 311, steps))
        cores = np.full(steps, 1 + i % 4)
        cores[rng.random(steps) < 0.02] = 0
        hours = (ts - START) / 3600
        pct = np.clip(40 + 30 * np.sin(2 * np.pi * (hours - 2 * i) / 24) + rng.normal(0, 5, steps), 0, 120)
        cap = 0 if i == 3 else 4096 * (1 + i % 3)
        used = np.round(1000 + 2000 * pct / 100 * (1.5 if i == 5 else 1.0))
        frames.append(
            pd.DataFrame(
                {
                    "vm": i + 1,
                    "ts": ts,
                    "cpu_cores": cores,
                    "cpu_cap_mhz": 2600 * cores,
                    "cpu_pct": np.round(pct, 2),
                    "mem_cap_mb": cap,
                    "mem_used_mb": used,
                }
            )
        )
    df = pd.concat(frames, ignore_index=True)
    df = pd.concat([df.iloc[:40], df.iloc[[39]], df.iloc[40:]], ignore_index=True)  # a repeated timestamp
    with gzip.open(path, "wt") as f:
        df.to_csv(f, index=False)
    return path


def config(tmp_path: Path, source: str, paths: list[Path], **forecast: Any) -> Config:
    base: dict[str, Any] = {"horizon_h": 6.0, "origin_every_h": 3.0, "max_iter": 30, "batch_vms": 3}
    return parse_config(
        {
            "collect": {"source": source, "paths": [str(p) for p in paths]},
            "forecast": base | forecast,
        }
    )


def streamed(cfg: Config) -> tuple[Cluster, pd.DataFrame]:
    cluster, runs = read_runs(cfg.collect, cfg.power, cfg.forecast.chunk_rows)
    return cluster, validate_metrics(pd.concat(list(runs), ignore_index=True), "runs")


def same_cluster(a: Cluster, b: Cluster) -> None:
    assert a.to_dict() == b.to_dict()


# --- runs of whole VMs ---------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=8),
    cuts=st.lists(st.integers(1, 70), min_size=1, max_size=6),
)
def test_runs_hold_whole_vms_in_file_order(sizes: list[int], cuts: list[int]) -> None:
    vms = np.repeat([f"v{i}" for i in range(len(sizes))], sizes)
    rows = pd.DataFrame({"vm": vms, "file": 0, "x": np.arange(len(vms))})
    bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
    chunks = [rows.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    runs = list(whole_vms(chunks, ["f.csv"]))
    pd.testing.assert_frame_equal(pd.concat(runs), rows)
    names = [list(pd.unique(r["vm"])) for r in runs]
    assert sum(map(len, names)) == len(sizes)  # no VM in two runs


@pytest.mark.parametrize(
    ("vms", "chunk", "row"),
    [(["a", "a", "b", "a"], 2, 4), (["a", "b", "a"], 10, 3), (["a", "b", "b", "b", "a"], 1, 5)],
)
def test_a_vm_that_comes_back_is_named(vms: list[str], chunk: int, row: int) -> None:
    rows = pd.DataFrame({"vm": vms, "file": 0})
    chunks = [rows.iloc[i : i + chunk] for i in range(0, len(rows), chunk)]
    with pytest.raises(InputError, match=rf"f\.csv: row {row}: VM a appears again .* sort the file by vm"):
        list(whole_vms(chunks, ["f.csv"]))


# --- same data as the in-memory collectors -------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [150, 500, 10**6])
def test_bitbrains_in_chunks_equals_the_in_memory_load(tmp_path: Path, chunk_rows: int) -> None:
    cfg = config(tmp_path, "bitbrains", [bitbrains_file(tmp_path / "bb.csv.gz")], chunk_rows=chunk_rows)
    cluster, metrics = collect(cfg.collect, cfg.power)
    got_cluster, got = streamed(cfg)
    same_cluster(got_cluster, cluster)
    pd.testing.assert_frame_equal(got, metrics)


def test_tables_in_chunks_equal_the_in_memory_load(tmp_path: Path) -> None:
    _, metrics = collect(
        config(tmp_path, "bitbrains", [bitbrains_file(tmp_path / "bb.csv.gz")]).collect, Config().power
    )
    table = metrics.assign(
        vcpus=4, mem_size_mib=8192.0, host=np.where(metrics.index % 700 < 350, "x", "y"), dirty_mibps=0.5
    )
    table["ts"] = table["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    table.iloc[: len(table) // 2].to_csv(tmp_path / "a.csv", index=False)
    table.iloc[len(table) // 2 :].to_csv(tmp_path / "b.csv", index=False)  # a VM goes on in b.csv
    cfg = config(tmp_path, "csv", [tmp_path / "a.csv", tmp_path / "b.csv"], chunk_rows=333)
    cluster, whole = collect(cfg.collect, cfg.power)
    got_cluster, got = streamed(cfg)
    same_cluster(got_cluster, cluster)
    pd.testing.assert_frame_equal(got, whole[["vm", "ts", "cpu_cores", "mem_mib"]])


def test_collected_parquet_with_its_inventory(tmp_path: Path) -> None:
    cluster, metrics = collect(
        config(tmp_path, "bitbrains", [bitbrains_file(tmp_path / "bb.csv.gz")]).collect, Config().power
    )
    write_metrics(metrics, tmp_path / "metrics.parquet")
    write_cluster(tmp_path / "cluster.json", cluster)
    data = {"source": "parquet", "paths": [str(tmp_path / "metrics.parquet")]}
    cfg = parse_config(
        {"collect": data | {"inventory": str(tmp_path / "cluster.json")}, "forecast": {"chunk_rows": 100}}
    )
    got_cluster, got = streamed(cfg)
    same_cluster(got_cluster, cluster)
    pd.testing.assert_frame_equal(got, metrics)
    small = Cluster(cluster.name, cluster.hosts, cluster.vms[1:])
    write_cluster(tmp_path / "small.json", small)
    cfg = parse_config(
        {"collect": data | {"inventory": str(tmp_path / "small.json")}, "forecast": {"chunk_rows": 100}}
    )
    with pytest.raises(
        InputError, match=rf"metrics\.parquet: row \d+: VM {cluster.vms[0].name} is not in the inventory"
    ):
        streamed(cfg)


def test_unsorted_file_says_to_sort_it(tmp_path: Path) -> None:
    path = bitbrains_file(tmp_path / "bb.csv.gz", n_vms=3, days=0.5)
    df = pd.read_csv(path)
    shuffled = df.sample(frac=1.0, random_state=1)
    shuffled.to_csv(tmp_path / "mixed.csv", index=False)
    cfg = config(tmp_path, "bitbrains", [tmp_path / "mixed.csv"])
    with pytest.raises(
        InputError, match=r"mixed\.csv: row \d+: VM \d appears again .* forecast\.chunk_rows = 0"
    ):
        streamed(cfg)
    result = runner.invoke(
        app,
        [
            "train",
            "--source",
            "bitbrains",
            "--path",
            str(tmp_path / "mixed.csv"),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/m.db",
        ],
    )
    assert result.exit_code == 2 and "sort the file by vm" in result.stderr
    cluster, metrics = collect(cfg.collect, cfg.power)  # the in-memory path reads it
    assert len(cluster.vms) == 3 and len(metrics) > 0


# --- same batches and training rows -------------------------------------------------------------------


@pytest.mark.parametrize("batch_vms", [1, 4, 50])
def test_chunked_history_gives_identical_training_rows(tmp_path: Path, batch_vms: int) -> None:
    path = bitbrains_file(tmp_path / "bb.csv.gz")
    chunked = config(tmp_path, "bitbrains", [path], chunk_rows=499, batch_vms=batch_vms)
    whole = config(tmp_path, "bitbrains", [path], chunk_rows=0, batch_vms=batch_vms)
    a, b = history(chunked), history(whole)
    same_cluster(a.cluster, b.cluster)
    a_batches, b_batches = list(a.batches), list(b.batches)
    assert [sorted(set(x["vm"])) for x in a_batches] == [sorted(set(x["vm"])) for x in b_batches]
    s = chunked.forecast.model_copy(update={"max_train_rows": 1000})  # the row sample too
    rows_a, facts_a = training_rows(History(a.cluster, a_batches), s)
    rows_b, facts_b = training_rows(History(b.cluster, b_batches), s)
    pd.testing.assert_frame_equal(rows_a, rows_b)
    assert facts_a == facts_b and facts_a["vms"] == 11


@settings(max_examples=40, deadline=None)
@given(
    n_vms=st.integers(1, 9),
    batch_vms=st.integers(1, 10),
    cuts=st.lists(st.integers(1, 8), max_size=4),
    seed=st.integers(0, 1000),
)
def test_runs_in_any_order_give_the_in_memory_batches(
    n_vms: int, batch_vms: int, cuts: list[int], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    names = [f"vm{i}" for i in range(n_vms)]
    cluster = Cluster(
        "c", (Host("h", 64, 1 << 20),), tuple(VM(n, "h", 2, 2048) for n in rng.permutation(names))
    )
    ts = pd.date_range("2024-01-01", periods=4, freq="5min", tz="UTC")
    metrics = validate_metrics(
        pd.DataFrame(
            {
                "vm": np.repeat(names, 4),
                "ts": np.tile(ts, n_vms),
                "cpu_cores": rng.random(4 * n_vms),
                "mem_mib": 1.0,
            }
        ),
        "m",
    )
    shuffled = list(rng.permutation(names))
    bounds = sorted({0, n_vms, *(c for c in cuts if c < n_vms)})
    runs = [metrics[metrics["vm"].isin(shuffled[a:b])] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    got = [validate_metrics(b, "b") for b in in_runs(cluster, runs, batch_vms).batches]
    want = [validate_metrics(b, "b") for b in in_batches(cluster, metrics, batch_vms).batches]
    assert len(got) == len(want) == -(-n_vms // batch_vms)
    for g, w in zip(got, want, strict=True):
        pd.testing.assert_frame_equal(g, w)


def test_batches_follow_the_inventory_whatever_the_run_order() -> None:
    names = [f"vm{i}" for i in range(7)]
    cluster = Cluster("c", (Host("h", 64, 1 << 20),), tuple(VM(n, "h", 2, 2048) for n in reversed(names)))
    ts = pd.date_range("2024-01-01", periods=5, freq="5min", tz="UTC")
    metrics = validate_metrics(
        pd.DataFrame({"vm": np.repeat(names, 5), "ts": np.tile(ts, 7), "cpu_cores": 1.0, "mem_mib": 100.0}),
        "m",
    )
    runs = [
        metrics[metrics["vm"].isin(group)]
        for group in (["vm0", "vm3"], ["vm6"], ["vm1", "vm2", "vm4", "vm5"])
    ]
    got = [sorted(set(b["vm"])) for b in in_runs(cluster, runs, 3).batches]
    want = [sorted(set(b["vm"])) for b in in_batches(cluster, metrics, 3).batches]
    assert got == want == [["vm4", "vm5", "vm6"], ["vm1", "vm2", "vm3"], ["vm0"]]
    with pytest.raises(InputError, match="no samples for VM vm6"):
        list(in_runs(cluster, runs[:1], 3).batches)
    with pytest.raises(InputError, match="VM vm9 has metrics but is not in the inventory"):
        list(in_runs(cluster, [metrics.assign(vm="vm9")], 3).batches)


def test_empty_and_incomplete_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("vm,ts,cpu_cores,mem_mib\n")
    with pytest.raises(InputError, match=r"empty\.csv: has a header but no data rows"):
        streamed(config(tmp_path, "csv", [tmp_path / "empty.csv"]))
    pd.DataFrame({"vm": ["a"], "ts": [START], "cpu_cores": [1.0]}).to_parquet(tmp_path / "m.parquet")
    with pytest.raises(InputError, match=r"m\.parquet: missing column\(s\) mem_mib"):
        streamed(config(tmp_path, "parquet", [tmp_path / "m.parquet"]))
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(InputError, match=r"junk\.parquet: not a readable PARQUET file"):
        streamed(config(tmp_path, "parquet", [tmp_path / "junk.parquet"]))
