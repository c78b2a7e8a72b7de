"""Collectors for trace files: PlanetLab (CloudSim's workload), Bitbrains GWA-T-12, and generic CSV/Parquet
metrics. Each returns a cluster and a metrics frame already checked by advisor.metrics.validate_metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from advisor.collect.hosts import VM_COLUMNS, build_cluster, host_names
from advisor.collect.reading import (
    Format,
    first_duplicate,
    names,
    numeric,
    read_csv_chunks,
    read_table,
    row_number,
    shown,
    timestamps,
    unix_seconds,
)
from advisor.config import PowerSettings, TraceSettings
from advisor.core import VM, Cluster, Host, HostState, PowerModel
from advisor.errors import InputError
from advisor.metrics import validate_metrics

Progress = Callable[[str], None]
GIB = 1024.0


def _quiet(_: str) -> None:
    pass


def need_paths(paths: Sequence[str], source: str) -> None:
    if not paths:
        raise InputError(f"{source}: no trace files given (collect.paths)")


def sources(paths: Sequence[str]) -> str:
    """The files for a message: the first three and how many more."""
    return ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def _ceil_gib(mib: np.ndarray) -> np.ndarray:
    return np.maximum(np.ceil(mib / GIB), 1.0) * GIB


# --- PlanetLab ------------------------------------------------------------------------------------------
# CloudSim's setup (SETUP.md in the shared data folder). MIPS become cores of 1,000 MIPS, so a 2,500 MIPS VM
# at 40% uses 1.0 core and gets 3 vCPUs (ceil of 2.5); MB are taken as MiB.

PL_STEP_S = 300
PL_STEPS = 288
PL_HOSTS = 800
MIPS_PER_CORE = 1000.0
PL_VM_TYPES = ((2500.0, 870.0), (2000.0, 1740.0), (1000.0, 1740.0), (500.0, 613.0))  # (MIPS, RAM MB)
PL_HOST_MEM = 4096.0
PL_HOST_PES = 2
# (model, MIPS per core, SPECpower watts at 0%, 10%, ..., 100%); host i is G4 if i is even, G5 if odd.
PL_HOST_TYPES = (
    (
        "HP ProLiant ML110 G4",
        1860.0,
        (86.0, 89.4, 92.6, 96.0, 99.5, 102.0, 106.0, 108.0, 112.0, 114.0, 117.0),
    ),
    (
        "HP ProLiant ML110 G5",
        2660.0,
        (93.7, 97.0, 101.0, 105.0, 110.0, 116.0, 121.0, 125.0, 129.0, 133.0, 135.0),
    ),
)


def load_planetlab(
    paths: Sequence[str], trace: TraceSettings, power: PowerSettings, progress: Progress | None = None
) -> tuple[Cluster, pd.DataFrame]:
    """PlanetLab day files (`vm,step,cpu`, named YYYYMMDD...) as CloudSim's 800-host data centre.

    Several files are several days of the same VMs; the day comes from the file name, the time of day from
    step * 300 s. VM i of N (in the first file's order) gets CloudSim type i // ceil(N/4). Memory in use
    is the VM's full nominal RAM (the traces have none). Initial placement: first fit of full MIPS and RAM
    in VM order over hosts in index order, as CloudSim's NonPowerAware policy does (not PABFD). Hosts are
    SETUP.md's (`trace.hosts` overrides their number), with their SPECpower curves and 0 W when empty
    (standby), so `power` is not used.
    """
    need_paths(paths, "planetlab")
    say = progress or _quiet
    frames = []
    order: list[str] = []
    days: dict[datetime, str] = {}
    for path in paths:
        day = _planetlab_day(path)
        if day in days:
            raise InputError(f"{path}: day {day:%Y-%m-%d} is already loaded from {days[day]}")
        days[day] = path
        say(f"reading {path}")
        df = read_table(path, ("vm", "step", "cpu"))
        vm = names(df, "vm", path)
        step = numeric(df, "step", path)
        cpu = numeric(df, "cpu", path)
        bad = (step != np.floor(step)) | (step >= PL_STEPS)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{path}: row {row_number(df, i)}: column step {shown(df['step'].iloc[i])} is not a whole "
                f"number in 0..{PL_STEPS - 1}"
            )
        frame = pd.DataFrame({"vm": vm, "ts": day + pd.to_timedelta(step * PL_STEP_S, unit="s"), "cpu": cpu})
        dup = first_duplicate(frame, ("vm", "ts"))
        if dup is not None:
            raise InputError(
                f"{path}: row {row_number(df, dup)}: VM {vm.iloc[dup]} has step {step[dup]:.0f} twice"
            )
        here = list(pd.unique(vm))
        if not order:
            order = here
        else:
            _same_vms(order, here, paths[0], path)
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    per_type = math.ceil(len(order) / len(PL_VM_TYPES))
    vm_type = {name: i // per_type for i, name in enumerate(order)}
    kind = data["vm"].map(vm_type).to_numpy()
    mips = np.array([m for m, _ in PL_VM_TYPES])
    ram = np.array([r for _, r in PL_VM_TYPES])
    data["cpu_cores"] = data["cpu"] / 100.0 * mips[kind] / MIPS_PER_CORE
    data["mem_mib"] = ram[kind]
    say(f"placing {len(order)} VMs")
    first_day = min(days)
    cluster = _planetlab_cluster(
        f"planetlab-{first_day:%Y%m%d}", order, vm_type, trace.hosts or PL_HOSTS, paths[0]
    )
    return cluster, validate_metrics(data[["vm", "ts", "cpu_cores", "mem_mib"]], sources(paths))


def _planetlab_day(path: str) -> datetime:
    stem = Path(path).name[:8]
    try:
        return datetime.strptime(stem, "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:
        raise InputError(f"{path}: a PlanetLab file name must start with its day, YYYYMMDD") from None


def _same_vms(order: list[str], here: list[str], first: str, path: str) -> None:
    known, now = set(order), set(here)
    for name in order:
        if name not in now:
            raise InputError(f"{path}: VM {name} (in {first}) is missing; every day file needs the same VMs")
    for name in here:
        if name not in known:
            raise InputError(f"{path}: VM {name} is not in {first}; every day file needs the same VMs")


def _planetlab_cluster(
    name: str, order: list[str], vm_type: dict[str, int], count: int, path: str
) -> Cluster:
    hosts_names = host_names(count)
    core_mips = np.array([PL_HOST_TYPES[i % 2][1] for i in range(count)])
    free_mips = core_mips * PL_HOST_PES
    free_ram = np.full(count, PL_HOST_MEM)
    placement = []
    for vm in order:
        mips, ram = PL_VM_TYPES[vm_type[vm]]
        fits = (core_mips >= mips) & (free_mips >= mips) & (free_ram >= ram)
        if not fits.any():
            raise InputError(f"{path}: VM {vm} fits on none of the {count} hosts (trace.hosts)")
        h = int(np.argmax(fits))
        free_mips[h] -= mips
        free_ram[h] -= ram
        placement.append(hosts_names[h])
    busy = set(placement)
    hosts = tuple(
        Host(
            n,
            PL_HOST_PES * PL_HOST_TYPES[i % 2][1] / MIPS_PER_CORE,
            PL_HOST_MEM,
            cluster=name,
            state=HostState.UP if n in busy else HostState.STANDBY,
            power=PowerModel(standby_w=0.0, curve_w=PL_HOST_TYPES[i % 2][2]),
            labels={"model": PL_HOST_TYPES[i % 2][0]},
        )
        for i, n in enumerate(hosts_names)
    )
    vms = tuple(
        VM(
            vm,
            h,
            math.ceil(PL_VM_TYPES[vm_type[vm]][0] / MIPS_PER_CORE),
            PL_VM_TYPES[vm_type[vm]][1],
            labels={"planetlab_type": str(vm_type[vm])},
        )
        for vm, h in zip(order, placement, strict=True)
    )
    return Cluster(name, hosts, vms)


# --- Bitbrains ------------------------------------------------------------------------------------------

BB_COLUMNS = ("vm", "ts", "cpu_cores", "cpu_pct", "mem_cap_mb", "mem_used_mb")
BB_CHUNK_ROWS = 250_000


def load_bitbrains(
    paths: Sequence[str],
    trace: TraceSettings,
    power: PowerSettings,
    vms: int | None = None,
    progress: Progress | None = None,
) -> tuple[Cluster, pd.DataFrame]:
    """Bitbrains GWA-T-12 files (`vm,ts,cpu_cores,cpu_pct,mem_cap_mb,mem_used_mb,...`, UNIX seconds).

    CPU in use = cpu_pct / 100 x the row's cores (the VM's vCPUs where a row says 0 cores); cpu_pct above
    100 is kept, so a sample can exceed the vCPUs as in the source. vCPUs: the VM's most cores. Memory in
    use = mem_used_mb; size: the largest mem_cap_mb, or the largest use rounded up to a GiB (at least 1)
    where use exceeds every cap or the cap is 0 everywhere. Samples stay at their irregular times; a repeated
    timestamp keeps its first row. `vms` keeps only the first N VMs in file order and stops reading there
    (the files are grouped by VM). Hosts are synthesised (advisor.collect.hosts).
    """
    need_paths(paths, "bitbrains")
    if vms is not None and vms < 1:
        raise InputError(f"bitbrains: vms must be at least 1, got {vms}")
    say = progress or _quiet
    frames: list[pd.DataFrame] = []
    kept: dict[str, None] = {}  # first-seen order of the VMs kept
    full = False
    for file, path in enumerate(paths):
        for chunk in read_csv_chunks(path, BB_COLUMNS, BB_CHUNK_ROWS):
            frame = bitbrains_rows(chunk, path, file)
            if vms is not None:
                for name in pd.unique(frame["vm"]):
                    if len(kept) < vms:
                        kept.setdefault(name, None)
                    elif name not in kept:
                        full = True
                frame = frame[frame["vm"].isin(list(kept))]
            frames.append(frame)
            say(f"read {chunk.index[-1] + 1:,} rows of {path}")
            if full:
                break
        if full:
            break
    sizes, metrics = bitbrains_vms(pd.concat(frames, ignore_index=True), paths)
    say(f"placing {len(sizes)} VMs")
    cluster = build_cluster("bitbrains", sizes, trace, power)
    return cluster, validate_metrics(metrics, sources(paths))


def bitbrains_rows(chunk: pd.DataFrame, path: str, file: int) -> pd.DataFrame:
    """A chunk of a Bitbrains file as typed columns, `file` the path's index, the file's row index kept."""
    return pd.DataFrame(
        {
            "vm": names(chunk, "vm", path),
            "ts": unix_seconds(chunk, "ts", path),
            **{c: numeric(chunk, c, path) for c in BB_COLUMNS[2:]},
            "file": file,
        },
        index=chunk.index,
    )


def bitbrains_vms(rows: pd.DataFrame, paths: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The VM sizes (VM_COLUMNS) and metrics of Bitbrains rows holding every sample of their VMs (the
    rules are load_bitbrains')."""
    data = rows.drop_duplicates(["vm", "ts"], keep="first")
    by_vm = data.groupby("vm", sort=False)
    inv = pd.DataFrame(
        {
            "vcpus": np.maximum(by_vm["cpu_cores"].max(), 1.0),
            "cap": by_vm["mem_cap_mb"].max(),
            "used": by_vm["mem_used_mb"].max(),
            "file": [paths[i] for i in by_vm["file"].first()],
        }
    )
    no_cap = (inv["used"] > inv["cap"]) | (inv["cap"] <= 0)
    inv["mem_mib"] = np.where(no_cap, np.maximum(inv["cap"], _ceil_gib(inv["used"])), inv["cap"])
    cores = data["cpu_cores"].to_numpy()
    cores = np.where(cores > 0, cores, inv["vcpus"].to_numpy()[by_vm.ngroup().to_numpy()])
    metrics = pd.DataFrame(
        {
            "vm": data["vm"],
            "ts": data["ts"],
            "cpu_cores": data["cpu_pct"].to_numpy() / 100.0 * cores,
            "mem_mib": data["mem_used_mb"].to_numpy(),
        }
    )
    inv["cpu_p95"] = metrics.groupby("vm", sort=False)["cpu_cores"].quantile(0.95)
    return inv.rename_axis("vm").reset_index()[list(VM_COLUMNS)], metrics.reset_index(drop=True)


# --- Generic CSV / Parquet ------------------------------------------------------------------------------

TABLE_REQUIRED = ("vm", "ts", "cpu_cores", "mem_mib")
TABLE_OPTIONAL = ("dirty_mibps", "host", "vcpus", "mem_size_mib")


def load_table(
    paths: Sequence[str],
    inventory: Cluster | None,
    trace: TraceSettings,
    power: PowerSettings,
    fmt: Format = "csv",
    progress: Progress | None = None,
) -> tuple[Cluster, pd.DataFrame]:
    """Metrics tables with columns vm, ts (ISO 8601, UTC if no zone, or UNIX seconds), cpu_cores, mem_mib,
    and optionally dirty_mibps, host, vcpus, mem_size_mib.

    With an inventory its VMs and the tables' must be the same set, and the inventory is the cluster (the
    optional size and host columns are then not read). Without one, a VM's vCPUs are its largest `vcpus`
    (else its peak CPU rounded up), its size its largest `mem_size_mib` (else its peak memory rounded up to a
    GiB), and it runs on its latest `host` (else hosts are synthesised by advisor.collect.hosts).
    """
    need_paths(paths, fmt)
    say = progress or _quiet
    frames: list[pd.DataFrame] = []
    columns: list[str] = []
    for path in paths:
        say(f"reading {path}")
        df = read_table(path, TABLE_REQUIRED, ("dirty_mibps",) if inventory else TABLE_OPTIONAL, fmt)
        columns = columns or sorted(df.columns)
        if sorted(df.columns) != columns:
            raise InputError(f"{path}: has columns {sorted(df.columns)}, but {paths[0]} has {columns}")
        out = pd.DataFrame({"vm": names(df, "vm", path), "ts": timestamps(df, "ts", path)}, index=df.index)
        for col in ("cpu_cores", "mem_mib", "dirty_mibps", "mem_size_mib"):
            if col in df.columns:
                out[col] = numeric(df, col, path, allow_missing=col == "dirty_mibps")
        if "vcpus" in df.columns:
            out["vcpus"] = vcpus_column(df, path)
        if "host" in df.columns:
            out["host"] = names(df, "host", path)
        out["file"] = path
        out["row"] = df.index + 1
        frames.append(out)
    data = pd.concat(frames, ignore_index=True)
    dup = first_duplicate(data, ("vm", "ts"))
    if dup is not None:
        r = data.iloc[dup]
        raise InputError(f"{r['file']}: row {r['row']}: a second sample for VM {r['vm']} at {r['ts']}")
    if inventory:
        cluster = _match_inventory(data, inventory, paths)
    else:
        say("placing VMs")
        cluster = build_cluster(Path(paths[0]).name.split(".")[0] or "trace", table_sizes(data), trace, power)
    metrics = [c for c in ("vm", "ts", "cpu_cores", "mem_mib", "dirty_mibps") if c in data.columns]
    return cluster, validate_metrics(data[metrics], sources(paths))


def vcpus_column(df: pd.DataFrame, path: str) -> np.ndarray:
    values = numeric(df, "vcpus", path)
    bad = (values != np.floor(values)) | (values < 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{path}: row {row_number(df, i)}: column vcpus {shown(df['vcpus'].iloc[i])} is not a whole "
            "number of at least 1"
        )
    return values


def _match_inventory(data: pd.DataFrame, inventory: Cluster, paths: Sequence[str]) -> Cluster:
    known = inventory.vm_by_name
    unknown = ~data["vm"].isin(list(known)).to_numpy()
    if unknown.any():
        r = data.iloc[int(np.flatnonzero(unknown)[0])]
        raise InputError(
            f"{r['file']}: row {r['row']}: VM {r['vm']} is not in the inventory (cluster {inventory.name})"
        )
    return covered_inventory(inventory, set(data["vm"]), paths)


def covered_inventory(inventory: Cluster, seen: set[str], paths: Sequence[str]) -> Cluster:
    """The inventory, or an InputError naming its VMs that have no metrics in the files."""
    missing = [v.name for v in inventory.vms if v.name not in seen]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"{sources(paths)}: no metrics for {len(missing)} inventory VM(s): {shown}")
    return inventory


def table_sizes(data: pd.DataFrame) -> pd.DataFrame:
    """One row per VM (vm, file, cpu_p95, vcpus, mem_mib, host if known) by load_table's rules."""
    by_vm = data.groupby("vm", sort=False)
    sizes = pd.DataFrame({"file": by_vm["file"].first(), "cpu_p95": by_vm["cpu_cores"].quantile(0.95)})
    if "vcpus" in data.columns:
        sizes["vcpus"] = by_vm["vcpus"].max()
    else:
        sizes["vcpus"] = np.maximum(np.ceil(by_vm["cpu_cores"].max()), 1.0)
    if "mem_size_mib" in data.columns:
        sizes["mem_mib"] = by_vm["mem_size_mib"].max()
        zero = sizes["mem_mib"].to_numpy() <= 0
        if zero.any():
            raise InputError(
                f"{sizes['file'].iloc[int(np.flatnonzero(zero)[0])]}: VM {sizes.index[zero][0]} "
                "has mem_size_mib 0 in every row"
            )
    else:
        sizes["mem_mib"] = _ceil_gib(by_vm["mem_mib"].max().to_numpy())
    if "host" in data.columns:
        sizes["host"] = data.sort_values("ts", kind="stable").groupby("vm", sort=False)["host"].last()
    return sizes.rename_axis("vm").reset_index()
