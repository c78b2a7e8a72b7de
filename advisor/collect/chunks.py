"""Trace files read a chunk of rows at a time, for `advisor train` on a history larger than memory.

The file is read twice. The first pass keeps a few figures per VM and builds the same cluster the
in-memory collectors (advisor.collect.traces) build; the second yields the metrics in runs of whole VMs
(every sample of a VM in one run) for the forecaster's batches. Memory holds a chunk of rows, the VM
it left unfinished and the batch being gathered (advisor.forecast.retrain.in_runs), never the whole file.

A VM's rows must be contiguous (a file sorted by vm, as Bitbrains files and `advisor collect`'s Parquet
are; the time order within a VM does not matter). A VM that appears again after another is an
InputError that says to sort the file or to read it whole (`forecast.chunk_rows = 0`): one chunked
run never quietly turns into an in-memory one.

Sources: bitbrains, csv and parquet. A run's figures are computed exactly as the in-memory collector
computes them over the whole file (they depend on the VM's own rows only), so both paths give the same
cluster and the same metrics; dirty_mibps is not read (training does not use it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from advisor.collect.hosts import build_cluster
from advisor.collect.reading import (
    Format,
    first_duplicate,
    names,
    numeric,
    read_csv_chunks,
    readable,
    timestamps,
)
from advisor.collect.traces import (
    BB_COLUMNS,
    TABLE_OPTIONAL,
    TABLE_REQUIRED,
    bitbrains_rows,
    bitbrains_vms,
    covered_inventory,
    need_paths,
    table_sizes,
    vcpus_column,
)
from advisor.config import CollectSettings, PowerSettings
from advisor.core import Cluster
from advisor.errors import InputError
from advisor.files import read_cluster

Progress = Callable[[str], None]
STREAMED = ("bitbrains", "csv", "parquet")
SORT_HINT = "sort the file by vm, then ts, or set forecast.chunk_rows = 0 to read the history whole"


def _quiet(_: str) -> None:
    pass


def read_runs(
    settings: CollectSettings, power: PowerSettings, chunk_rows: int, progress: Progress | None = None
) -> tuple[Cluster, Iterator[pd.DataFrame]]:
    """The cluster of `settings.source` (one pass over its files, done now) and its metrics in runs of
    whole VMs (a second pass, done as the iterator is consumed)."""
    if settings.source not in STREAMED:
        raise InputError(
            f"collect.source {settings.source}: not readable in chunks ({', '.join(STREAMED)} are)"
        )
    paths = list(settings.paths)
    need_paths(paths, settings.source)
    say = progress or _quiet
    if settings.source == "bitbrains":
        source: _Source = _Bitbrains(paths, chunk_rows)
    else:
        inventory = read_cluster(Path(settings.inventory)) if settings.inventory else None
        source = _Table(paths, chunk_rows, "parquet" if settings.source == "parquet" else "csv", inventory)
    sizes: list[pd.DataFrame] = []
    for run in source.runs(say):
        sizes.append(source.sizes(run))
    cluster = source.cluster(pd.concat(sizes, ignore_index=True), settings, power, say)
    return cluster, (source.metrics(run) for run in source.runs(_quiet))


def whole_vms(chunks: Iterable[pd.DataFrame], paths: Sequence[str]) -> Iterator[pd.DataFrame]:
    """Regroup chunks of rows (columns `vm` and `file`, the index of `paths`; indexed by the row in the
    file) into runs of whole VMs: the last VM of a chunk waits for the next. A VM whose rows are not
    contiguous is an InputError naming its file and row."""
    done: set[str] = set()
    carry: list[pd.DataFrame] = []
    carry_vm: str | None = None
    for chunk in chunks:
        if chunk.empty:
            continue
        vm = chunk["vm"].to_numpy()
        starts = np.flatnonzero(np.r_[True, vm[1:] != vm[:-1]])
        firsts = vm[starts]
        skip = int(firsts[0] == carry_vm)  # the first VM may go on from the last chunk
        fresh = firsts[skip:]
        again = pd.Index(fresh).duplicated() | np.array([v in done or v == carry_vm for v in fresh], bool)
        if again.any():
            i = starts[int(np.flatnonzero(again)[0]) + skip]
            raise InputError(
                f"{_at(chunk, i, paths)}: VM {vm[i]} appears again after other VMs, so it cannot be read in "
                f"chunks: {SORT_HINT}"
            )
        if len(starts) == 1 and firsts[0] == carry_vm:
            carry.append(chunk)
            continue
        head = chunk.iloc[: starts[-1]]
        run = pd.concat([*carry, head]) if carry else head
        if not run.empty:
            yield run
        if carry_vm is not None:
            done.add(carry_vm)
        done.update(firsts[:-1])
        carry, carry_vm = [chunk.iloc[starts[-1] :]], str(firsts[-1])
    if carry:
        yield pd.concat(carry)


class _Source(ABC):
    """A trace format read in two passes: `runs` of whole VMs, their `sizes` (one row per VM), the
    `cluster` from all the sizes, and a run's `metrics`."""

    def __init__(self, paths: list[str], chunk_rows: int) -> None:
        self.paths = paths
        self.chunk_rows = chunk_rows

    def runs(self, say: Progress) -> Iterator[pd.DataFrame]:
        return whole_vms(self._parsed(say), self.paths)

    @abstractmethod
    def _parsed(self, say: Progress) -> Iterator[pd.DataFrame]:
        """The files' chunks as typed columns, with `file` (the path's index) and the file's row index."""

    @abstractmethod
    def sizes(self, run: pd.DataFrame) -> pd.DataFrame: ...

    @abstractmethod
    def cluster(
        self, sizes: pd.DataFrame, settings: CollectSettings, power: PowerSettings, say: Progress
    ) -> Cluster: ...

    @abstractmethod
    def metrics(self, run: pd.DataFrame) -> pd.DataFrame: ...


class _Bitbrains(_Source):
    """advisor.collect.traces.load_bitbrains, a run of VMs at a time (see there for the rules)."""

    def _parsed(self, say: Progress) -> Iterator[pd.DataFrame]:
        for file, path in enumerate(self.paths):
            for chunk in _chunks(path, "csv", BB_COLUMNS, self.chunk_rows):
                yield bitbrains_rows(chunk, path, file)
                say(f"read {chunk.index[-1] + 1:,} rows of {path}")

    def sizes(self, run: pd.DataFrame) -> pd.DataFrame:
        return bitbrains_vms(run, self.paths)[0]

    def metrics(self, run: pd.DataFrame) -> pd.DataFrame:
        return bitbrains_vms(run, self.paths)[1]

    def cluster(
        self, sizes: pd.DataFrame, settings: CollectSettings, power: PowerSettings, say: Progress
    ) -> Cluster:
        say(f"placing {len(sizes)} VMs")
        return build_cluster("bitbrains", sizes, settings.trace, power)


class _Table(_Source):
    """advisor.collect.traces.load_table, a run of VMs at a time (see there for the rules)."""

    def __init__(self, paths: list[str], chunk_rows: int, fmt: Format, inventory: Cluster | None) -> None:
        super().__init__(paths, chunk_rows)
        self.fmt = fmt
        self.inventory = inventory

    def _parsed(self, say: Progress) -> Iterator[pd.DataFrame]:
        optional = () if self.inventory else tuple(c for c in TABLE_OPTIONAL if c != "dirty_mibps")
        known = {*TABLE_REQUIRED, "dirty_mibps", *optional}  # the columns load_table reads
        columns: list[str] = []
        for file, path in enumerate(self.paths):
            here = sorted(set(_header(path, self.fmt)) & known)
            columns = columns or here
            if here != columns:
                raise InputError(f"{path}: has columns {here}, but {self.paths[0]} has {columns}")
            wanted = [*TABLE_REQUIRED, *(c for c in optional if c in here)]
            for chunk in _chunks(path, self.fmt, wanted, self.chunk_rows):
                out = pd.DataFrame(
                    {"vm": names(chunk, "vm", path), "ts": timestamps(chunk, "ts", path)}, index=chunk.index
                )
                for col in ("cpu_cores", "mem_mib", "mem_size_mib"):
                    if col in chunk.columns:
                        out[col] = numeric(chunk, col, path)
                if "vcpus" in chunk.columns:
                    out["vcpus"] = vcpus_column(chunk, path)
                if "host" in chunk.columns:
                    out["host"] = names(chunk, "host", path)
                out["file"] = file
                yield out
                say(f"read {chunk.index[-1] + 1:,} rows of {path}")

    def sizes(self, run: pd.DataFrame) -> pd.DataFrame:
        dup = first_duplicate(run, ("vm", "ts"))
        if dup is not None:
            r = run.iloc[dup]
            raise InputError(f"{_at(run, dup, self.paths)}: a second sample for VM {r['vm']} at {r['ts']}")
        if self.inventory:
            unknown = ~run["vm"].isin(list(self.inventory.vm_by_name)).to_numpy()
            if unknown.any():
                i = int(np.flatnonzero(unknown)[0])
                raise InputError(
                    f"{_at(run, i, self.paths)}: VM {run['vm'].iloc[i]} is not in the inventory "
                    f"(cluster {self.inventory.name})"
                )
            return pd.DataFrame({"vm": pd.unique(run["vm"])})
        return table_sizes(run.assign(file=np.asarray(self.paths, dtype=object)[run["file"].to_numpy()]))

    def cluster(
        self, sizes: pd.DataFrame, settings: CollectSettings, power: PowerSettings, say: Progress
    ) -> Cluster:
        if self.inventory:
            return covered_inventory(self.inventory, set(sizes["vm"]), self.paths)
        say("placing VMs")
        name = Path(self.paths[0]).name.split(".")[0] or "trace"
        return build_cluster(name, sizes, settings.trace, power)

    def metrics(self, run: pd.DataFrame) -> pd.DataFrame:
        return run[list(TABLE_REQUIRED)].reset_index(drop=True)


def _at(frame: pd.DataFrame, i: int, paths: Sequence[str]) -> str:
    """Where the frame's i-th row is: its file and its row there, counted from 1 without the header."""
    return f"{paths[int(frame['file'].iloc[i])]}: row {int(frame.index[i]) + 1}"


def _header(path: str, fmt: Format) -> list[str]:
    """The column names of a CSV or Parquet file, without reading its rows."""
    with readable(path, fmt):
        if fmt == "parquet":
            return list(pq.ParquetFile(path).schema_arrow.names)
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]


def _chunks(path: str, fmt: Format, columns: Sequence[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """`chunk_rows` rows at a time (at least one row in all), indexed by their row in the file from 0."""
    rows = 0
    for chunk in _read(path, fmt, columns, chunk_rows):
        if len(chunk):
            rows += len(chunk)
            yield chunk
    if not rows:
        raise InputError(f"{path}: has a header but no data rows")


def _read(path: str, fmt: Format, columns: Sequence[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    if fmt == "csv":
        yield from read_csv_chunks(path, columns, chunk_rows)
        return
    missing = [c for c in columns if c not in _header(path, fmt)]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    start = 0
    with readable(path, fmt):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=list(columns)):
            frame = batch.to_pandas()
            frame.index = pd.RangeIndex(start, start + len(frame))
            start += len(frame)
            yield frame
