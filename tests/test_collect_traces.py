"""Trace collectors: PlanetLab and Bitbrains on the real files, generic CSV/Parquet, and bad input by name."""

from __future__ import annotations

import gzip
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from advisor.collect import load_bitbrains, load_planetlab, load_table
from advisor.config import PowerSettings, TraceSettings
from advisor.core import VM, Cluster, Host, HostState
from advisor.errors import InputError

DATA = Path("/work/shared/data")
PLANETLAB_DAY = DATA / "planetlab" / "20110303.csv.gz"
BITBRAINS = DATA / "bitbrains_rnd" / "bitbrains_rnd_2013-08.csv.gz"
POWER = PowerSettings.model_validate({})
TRACE = TraceSettings.model_validate({})
SMALL_HOSTS = TraceSettings.model_validate({"host_mem_mib": 262144})  # Bitbrains VM 27 has 511 GiB

needs_planetlab = pytest.mark.skipif(
    not PLANETLAB_DAY.exists(), reason=f"{PLANETLAB_DAY} is not on this machine"
)
needs_bitbrains = pytest.mark.skipif(not BITBRAINS.exists(), reason=f"{BITBRAINS} is not on this machine")


# --- PlanetLab on the real day -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planetlab() -> tuple[Cluster, pd.DataFrame]:
    return load_planetlab([str(PLANETLAB_DAY)], TRACE, POWER)


@needs_planetlab
def test_planetlab_day_has_288_samples_per_vm(planetlab: tuple[Cluster, pd.DataFrame]) -> None:
    cluster, metrics = planetlab
    assert len(cluster.vms) == 1052
    assert (metrics.groupby("vm").size() == 288).all()
    ts = pd.DatetimeIndex(metrics["ts"].unique()).sort_values()
    assert ts[0] == pd.Timestamp("2011-03-03T00:00Z") and ts[-1] == pd.Timestamp("2011-03-03T23:55Z")


@needs_planetlab
def test_planetlab_vm_types_and_hosts_follow_cloudsim(planetlab: tuple[Cluster, pd.DataFrame]) -> None:
    cluster, _ = planetlab
    per_type = math.ceil(1052 / 4)
    order = list(pd.read_csv(PLANETLAB_DAY, usecols=["vm"])["vm"].unique())
    sizes = {"0": (3, 870), "1": (2, 1740), "2": (1, 1740), "3": (1, 613)}
    vms = cluster.vm_by_name
    for i, name in enumerate(order):
        vm = vms[name]
        assert vm.labels["planetlab_type"] == str(i // per_type)
        assert (vm.vcpus, vm.mem_mib) == sizes[vm.labels["planetlab_type"]]
    assert Counter(v.labels["planetlab_type"] for v in cluster.vms) == {
        "0": 263,
        "1": 263,
        "2": 263,
        "3": 263,
    }
    assert len(cluster.hosts) == 800
    for i, h in enumerate(cluster.hosts):
        g4 = i % 2 == 0
        assert (h.cpu_cores, h.mem_mib) == ((3.72 if g4 else 5.32), 4096)
        assert h.power.standby_w == 0 and len(h.power.curve_w) == 11
        assert h.power.curve_w[0] == (86 if g4 else 93.7) and h.power.max_w == (117 if g4 else 135)


@needs_planetlab
def test_planetlab_first_fit_respects_full_mips_and_ram(planetlab: tuple[Cluster, pd.DataFrame]) -> None:
    cluster, _ = planetlab
    mips = {"0": 2500, "1": 2000, "2": 1000, "3": 500}
    hosts = cluster.host_by_name
    load: Counter[str] = Counter()
    ram: Counter[str] = Counter()
    for vm in cluster.vms:
        host = hosts[vm.host]
        if vm.labels["planetlab_type"] in ("0", "1"):
            assert host.cpu_cores == 5.32, "2000+ MIPS VMs fit only on G5 cores (2660 MIPS)"
        load[vm.host] += mips[vm.labels["planetlab_type"]]
        ram[vm.host] += int(vm.mem_mib)
    assert all(load[h] <= hosts[h].cpu_cores * 1000 + 1e-6 and ram[h] <= 4096 for h in load)
    assert cluster.vms[0].host == cluster.hosts[1].name  # first fit: lowest G5
    assert {h.name for h in cluster.hosts if h.state == HostState.STANDBY} == set(hosts) - set(load)


@needs_planetlab
def test_planetlab_cpu_is_percent_of_the_vm_mips_in_cores(planetlab: tuple[Cluster, pd.DataFrame]) -> None:
    _, metrics = planetlab
    raw = pd.read_csv(PLANETLAB_DAY)
    first, last = raw.iloc[0], raw.iloc[-1]
    assert (first["step"], first["cpu"], last["step"], last["cpu"]) == (0, 24, 287, 4)
    at = metrics.set_index(["vm", "ts"])["cpu_cores"]
    assert at[(first["vm"], pd.Timestamp("2011-03-03T00:00Z"))] == pytest.approx(0.24 * 2.5)  # type 0
    assert at[(last["vm"], pd.Timestamp("2011-03-03T23:55Z"))] == pytest.approx(0.04 * 0.5)  # type 3


def write_planetlab(path: Path, vms: list[str], cpu: int = 10) -> str:
    rows = [f"{vm},{step},{cpu}" for vm in vms for step in range(288)]
    with gzip.open(path, "wt") as f:
        f.write("vm,step,cpu\n" + "\n".join(rows) + "\n")
    return str(path)


def test_planetlab_days_follow_their_file_names(tmp_path: Path) -> None:
    a = write_planetlab(tmp_path / "20110303.csv.gz", ["a", "b", "c", "d", "e"])
    b = write_planetlab(tmp_path / "20110304.csv.gz", ["a", "b", "c", "d", "e"], cpu=20)
    cluster, metrics = load_planetlab([a, b], TRACE, POWER)
    assert (metrics.groupby("vm").size() == 576).all()
    day2 = metrics[metrics["ts"] >= pd.Timestamp("2011-03-04T00:00Z")]
    assert len(day2) == 5 * 288 and day2["cpu_cores"].iloc[0] == pytest.approx(0.2 * 2.5)
    assert [v.labels["planetlab_type"] for v in cluster.vms] == ["0", "0", "1", "1", "2"]  # ceil(5/4) = 2
    assert cluster.name == "planetlab-20110303"


def test_planetlab_vm_missing_from_a_day_is_named(tmp_path: Path) -> None:
    a = write_planetlab(tmp_path / "20110303.csv.gz", ["a", "b"])
    b = write_planetlab(tmp_path / "20110304.csv.gz", ["a"])
    c = write_planetlab(tmp_path / "20110305.csv.gz", ["a", "b", "c"])
    with pytest.raises(InputError, match=r"20110304\.csv\.gz: VM b \(in .*20110303\.csv\.gz\) is missing"):
        load_planetlab([a, b], TRACE, POWER)
    with pytest.raises(InputError, match=r"20110305\.csv\.gz: VM c is not in .*20110303\.csv\.gz"):
        load_planetlab([a, c], TRACE, POWER)
    with pytest.raises(InputError, match=r"20110303\.csv\.gz: day 2011-03-03 is already loaded"):
        load_planetlab([a, a], TRACE, POWER)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("day.csv", "vm,step,cpu\na,0,1\n", "must start with its day"),
        ("20110303.csv", "vm,cpu\na,1\n", "missing column.*step"),
        ("20110303.csv", "vm,step,cpu\na,0,1\na,1,-3\n", "row 2: column cpu is negative"),
        ("20110303.csv", "vm,step,cpu\na,0,1\na,288,3\n", "row 2: column step 288"),
        ("20110303.csv", "vm,step,cpu\na,0,1\na,0,3\n", "row 2: VM a has step 0 twice"),
        ("20110303.csv", "vm,step,cpu\na,0,x\n", r"row 1: column cpu is not a finite number \('x'\)"),
    ],
)
def test_planetlab_bad_files_are_named(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match=message) as e:
        load_planetlab([str(path)], TRACE, POWER)
    assert name in str(e.value)


# --- Bitbrains on the real file (first 50 VMs) ---------------------------------------------------------


@pytest.fixture(scope="module")
def bitbrains() -> tuple[Cluster, pd.DataFrame, pd.DataFrame]:
    cluster, metrics = load_bitbrains([str(BITBRAINS)], TRACE, POWER, vms=50)
    raw = pd.read_csv(BITBRAINS, nrows=500_000)
    return cluster, metrics, raw[raw["vm"].isin(range(1, 51))]


@needs_bitbrains
def test_bitbrains_first_vms_and_all_their_samples(
    bitbrains: tuple[Cluster, pd.DataFrame, pd.DataFrame],
) -> None:
    cluster, metrics, raw = bitbrains
    assert [v.name for v in cluster.vms] == [str(i) for i in range(1, 51)]
    assert len(metrics) == len(raw) and set(metrics["vm"]) == {str(i) for i in range(1, 51)}


@needs_bitbrains
def test_bitbrains_cpu_in_cores_on_known_rows(bitbrains: tuple[Cluster, pd.DataFrame, pd.DataFrame]) -> None:
    cluster, metrics, raw = bitbrains
    at = metrics.set_index(["vm", "ts"])
    first = raw.iloc[0]
    assert (first["vm"], first["ts"], first["cpu_cores"], first["cpu_pct"]) == (1, 1375308176, 2, 12.77)
    row = at.loc[("1", pd.Timestamp(1375308176, unit="s", tz="UTC"))]
    assert row["cpu_cores"] == pytest.approx(0.2554) and row["mem_mib"] == first["mem_used_mb"]
    over = raw[raw["cpu_pct"] > 100].iloc[0]  # usage above the provisioned capacity is kept
    got = at.loc[(str(int(over["vm"])), pd.Timestamp(int(over["ts"]), unit="s", tz="UTC")), "cpu_cores"]
    assert got == pytest.approx(over["cpu_pct"] / 100 * over["cpu_cores"]) and got > over["cpu_cores"]
    vm20 = cluster.vm_by_name["20"]  # 0 cores in all but 115 rows: its vCPUs are its most cores
    assert vm20.vcpus == raw.loc[raw["vm"] == 20, "cpu_cores"].max() == 1


@needs_bitbrains
def test_bitbrains_sizes(bitbrains: tuple[Cluster, pd.DataFrame, pd.DataFrame]) -> None:
    cluster, _, raw = bitbrains
    by_vm = raw.groupby("vm")
    for vm in cluster.vms:
        assert vm.vcpus == by_vm["cpu_cores"].max()[int(vm.name)]
        cap, used = by_vm["mem_cap_mb"].max()[int(vm.name)], by_vm["mem_used_mb"].max()[int(vm.name)]
        assert vm.mem_mib == (cap if used <= cap else max(cap, math.ceil(used / 1024) * 1024))
    assert cluster.vm_by_name["27"].mem_mib == 523734


@needs_bitbrains
def test_bitbrains_hosts_are_first_fit_at_60_percent(
    bitbrains: tuple[Cluster, pd.DataFrame, pd.DataFrame],
) -> None:
    cluster, _, _ = bitbrains
    used: dict[str, float] = {}
    count: Counter[str] = Counter()
    for vm in cluster.vms:
        used[vm.host] = used.get(vm.host, 0.0) + vm.mem_mib
        count[vm.host] += 1
    for h in used:
        assert used[h] <= 0.6 * 524288 or count[h] == 1
    busy = len(used)
    assert len(cluster.hosts) == busy + math.ceil(0.1 * busy)
    assert all(h.state == HostState.STANDBY for h in cluster.hosts if h.name not in used)


@needs_bitbrains
def test_bitbrains_vm_larger_than_every_host_is_named() -> None:
    with pytest.raises(InputError, match=r"bitbrains_rnd_2013-08\.csv\.gz: VM 27 needs 523734 MiB"):
        load_bitbrains([str(BITBRAINS)], SMALL_HOSTS, POWER, vms=30)


def test_bitbrains_quirks(tmp_path: Path) -> None:
    path = tmp_path / "bb.csv"
    path.write_text(
        "vm,ts,cpu_cores,cpu_cap_mhz,cpu_pct,mem_cap_mb,mem_used_mb,disk_read_kbs\n"
        "7,1000,0,0,50,0,1500,0\n"  # 0 cores in this row: the VM's most cores (4)
        "7,1300,4,0,110,0,900,0\n"  # above 100% is kept
        "7,1300,4,0,10,0,900,0\n"  # a repeated timestamp keeps the first row
        "7,1450,4,0,10,0,800,0\n"  # irregular sampling is kept
        "8,1000,2,0,0,0,0,0\n"  # no memory anywhere: 1 GiB
    )
    cluster, metrics = load_bitbrains([str(path)], TRACE, POWER)
    assert metrics["cpu_cores"].tolist() == pytest.approx([2.0, 4.4, 0.4, 0.0])
    assert metrics["mem_mib"].tolist() == [1500, 900, 800, 0]
    vms = cluster.vm_by_name
    assert (vms["7"].vcpus, vms["7"].mem_mib, vms["8"].mem_mib) == (4, 2048, 1024)


# --- Generic CSV / Parquet -----------------------------------------------------------------------------


def frame(**overrides: list[object]) -> pd.DataFrame:
    data: dict[str, list[object]] = {
        "vm": ["a", "a", "b", "b"],
        "ts": ["2026-01-01T00:00Z", "2026-01-01T00:05Z", "2026-01-01T00:00Z", "2026-01-01T00:05Z"],
        "cpu_cores": [0.5, 1.5, 3.0, 2.0],
        "mem_mib": [1000.0, 1100.0, 5000.0, 5200.0],
    }
    data.update(overrides)
    return pd.DataFrame(data)


def csv(tmp_path: Path, df: pd.DataFrame, name: str = "m.csv") -> str:
    df.to_csv(tmp_path / name, index=False)
    return str(tmp_path / name)


def test_table_without_inventory_synthesises_hosts(tmp_path: Path) -> None:
    cluster, metrics = load_table([csv(tmp_path, frame())], None, TRACE, POWER)
    vms = cluster.vm_by_name
    assert (vms["a"].vcpus, vms["a"].mem_mib, vms["b"].vcpus, vms["b"].mem_mib) == (2, 2048, 3, 6144)
    assert len(metrics) == 4 and metrics["ts"].dt.tz is not None
    assert [h.state for h in cluster.hosts] == [HostState.UP, HostState.STANDBY]
    assert cluster.hosts[0].cpu_cores == TRACE.host_cpu_cores and cluster.hosts[0].power == POWER.model()


def test_table_sizes_and_hosts_from_columns(tmp_path: Path) -> None:
    df = frame(
        ts=[1767225600, 1767225900, 1767225600, 1767225900],  # UNIX seconds
        vcpus=[4, 4, 8, 8],
        mem_size_mib=[4096, 4096, 8192, 8192],
        host=["x", "y", "x", "x"],  # a moves to y; its latest host counts
        dirty_mibps=[0.1, 0.2, 0.3, 0.4],
    )
    cluster, metrics = load_table([csv(tmp_path, df)], None, TRACE, POWER)
    vms = cluster.vm_by_name
    assert (vms["a"].vcpus, vms["a"].mem_mib, vms["a"].host, vms["b"].host) == (4, 4096, "y", "x")
    assert [h.name for h in cluster.hosts][:2] == ["x", "y"] and len(cluster.hosts) == 3
    assert metrics["dirty_mibps"].tolist() == [0.1, 0.2, 0.3, 0.4]
    assert metrics["ts"].iloc[0] == pd.Timestamp("2026-01-01T00:00Z")


def test_blank_dirty_rate_is_not_measured_but_blank_cpu_is_an_error(tmp_path: Path) -> None:
    df = frame(dirty_mibps=[0.5, None, 1.5, None])  # the collector had no dirty rate for two samples
    _, metrics = load_table([csv(tmp_path, df)], None, TRACE, POWER)
    assert metrics["dirty_mibps"].isna().tolist() == [False, True, False, True]
    assert metrics["dirty_mibps"].sum() == 2.0
    with pytest.raises(InputError, match="row 2: column cpu_cores is missing"):
        load_table([csv(tmp_path, frame(cpu_cores=[0.5, None, 1.0, 1.0]), "c.csv")], None, TRACE, POWER)


def test_parquet_and_several_files(tmp_path: Path) -> None:
    df = frame()
    df.iloc[:2].to_parquet(tmp_path / "a.parquet")
    df.iloc[2:].to_parquet(tmp_path / "b.parquet")
    paths = [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    cluster, metrics = load_table(paths, None, TRACE, POWER, fmt="parquet")
    assert len(metrics) == 4 and {v.name for v in cluster.vms} == {"a", "b"}


def inventory(names: list[str]) -> Cluster:
    return Cluster("inv", (Host("h1", 16, 65536),), tuple(VM(n, "h1", 4, 8192) for n in names))


def test_table_with_inventory(tmp_path: Path) -> None:
    inv = inventory(["a", "b"])
    cluster, metrics = load_table([csv(tmp_path, frame())], inv, TRACE, POWER)
    assert cluster is inv and set(metrics["vm"]) == {"a", "b"}
    with pytest.raises(InputError, match=r"m\.csv: row 3: VM b is not in the inventory"):
        load_table([csv(tmp_path, frame())], inventory(["a"]), TRACE, POWER)
    with pytest.raises(InputError, match=r"m\.csv: no metrics for 1 inventory VM\(s\): c"):
        load_table([csv(tmp_path, frame())], inventory(["a", "b", "c"]), TRACE, POWER)


@pytest.mark.parametrize(
    ("df", "message"),
    [
        (frame().drop(columns="mem_mib"), "missing column.*mem_mib"),
        (frame(cpu_cores=[0.5, None, 1, 1]), "row 2: column cpu_cores is missing"),
        (frame(mem_mib=[1, 2, -3, 4]), r"row 3: column mem_mib is negative \(-3"),
        (frame(cpu_cores=[0.5, 1, "lots", 1]), r"row 3: column cpu_cores is not a finite number \('lots'\)"),
        (
            frame(ts=["2026-01-01", "yesterday", "2026-01-01", "2026-01-02"]),
            "row 2: column ts is not a timestamp",
        ),
        (frame(ts=["2026-01-01", None, "2026-01-01", "2026-01-02"]), "row 2: column ts is missing"),
        (frame(ts=["2026-01-01T00:00Z"] * 4), "row 2: a second sample for VM a"),
        (frame(vm=["a", None, "b", "b"]), "row 2: column vm is empty"),
        (frame(mem_mib=[1, 2, 600_000, 4]), "VM b needs 600064 MiB of memory, more than a host has"),
        (frame(vcpus=[2, 2.5, 1, 1]), "row 2: column vcpus 2.5 is not a whole number"),
    ],
)
def test_bad_tables_name_the_file_and_row(tmp_path: Path, df: pd.DataFrame, message: str) -> None:
    with pytest.raises(InputError, match=message) as e:
        load_table([csv(tmp_path, df, "bad.csv")], None, TRACE, POWER)
    assert "bad.csv" in str(e.value)


def test_empty_missing_and_mismatched_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("vm,ts,cpu_cores,mem_mib\n")
    (tmp_path / "junk.parquet").write_text("not parquet")
    cases = [
        ([str(tmp_path / "empty.csv")], "csv", "empty.csv: the file is empty"),
        ([str(tmp_path / "header.csv")], "csv", "header.csv: has a header but no data rows"),
        ([str(tmp_path / "nope.csv")], "csv", "nope.csv: no such file"),
        ([str(tmp_path / "junk.parquet")], "parquet", "junk.parquet: not a readable PARQUET file"),
        ([], "csv", "no trace files given"),
        (
            [csv(tmp_path, frame()), csv(tmp_path, frame(dirty_mibps=[1, 1, 1, 1]), "d.csv")],
            "csv",
            "d.csv: has columns",
        ),
    ]
    for paths, fmt, message in cases:
        with pytest.raises(InputError, match=message):
            load_table(paths, None, TRACE, POWER, fmt=fmt)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="nope.csv.gz: no such file"):
        load_bitbrains([str(tmp_path / "nope.csv.gz")], TRACE, POWER)
    with pytest.raises(InputError, match="missing column.*cpu_pct"):
        load_bitbrains([csv(tmp_path, frame(), "bb.csv")], TRACE, POWER)


def test_trace_hosts_fixes_the_host_count(tmp_path: Path) -> None:
    df = frame(mem_mib=[100_000.0, 100_000.0, 100_000.0, 100_000.0])
    fixed = TraceSettings.model_validate({"hosts": 5, "host_mem_mib": 262144})
    cluster, _ = load_table([csv(tmp_path, df)], None, fixed, POWER)
    assert len(cluster.hosts) == 5 and sum(h.state == HostState.UP for h in cluster.hosts) == 2
    tight = TraceSettings.model_validate({"hosts": 1, "host_mem_mib": 150_000})
    with pytest.raises(InputError, match=r"m\.csv: VM b fits on none of the 1 hosts \(trace.hosts\)"):
        load_table([csv(tmp_path, df)], None, tight, POWER)
    loose = TraceSettings.model_validate({"hosts": 1})
    cluster, _ = load_table([csv(tmp_path, df)], None, loose, POWER)
    assert np.sum([v.mem_mib for v in cluster.vms]) <= cluster.hosts[0].mem_mib  # beyond 60% when it must
