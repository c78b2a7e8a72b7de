"""A cluster and its metrics as OpenMetrics text in the shape the Prometheus collector reads: the Debian
libvirt exporter's series (plus the `host` label relabelling adds) and node_exporter's capacity series.
`promtool tsdb create-blocks-from openmetrics` turns the file into blocks, which gives tests and benchmarks
a real Prometheus holding a known history.

The CPU counter is the running sum of cores x seconds, starting one step before a VM's first sample, so
that `rate(...[step])` at each sample time gives back that sample's cores exactly (within float rounding).
Sizes and capacities are written hourly (and at the last sample), enough for queries over any span of an
hour or more.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from advisor.core import Cluster
from advisor.errors import InputError

MIB = 1024 * 1024
INFO_EVERY_S = 3600  # spacing of the size and capacity samples


def write_openmetrics(path: Path, cluster: Cluster, metrics: pd.DataFrame, step_s: int) -> int:
    """Write `metrics` (the core schema) and `cluster`'s sizes and capacities to `path`; the sample count."""
    with path.open("w") as out:
        count = sum(_write(out, lines) for lines in _families(cluster, metrics, step_s))
        out.write("# EOF\n")
    return count


def _write(out: TextIO, lines: Iterator[str]) -> int:
    n = 0
    for text in lines:
        out.write(text)
        n += 0 if text.startswith("#") else text.count("\n")  # a "# TYPE" line comes alone
    return n


def _families(cluster: Cluster, metrics: pd.DataFrame, step_s: int) -> Iterator[Iterator[str]]:
    """One iterator of text per metric family; each series contiguous and sorted by time (promtool drops
    out-of-order samples silently)."""
    vms = cluster.vm_by_name
    unknown = sorted(set(metrics["vm"]) - set(vms))
    if unknown:
        raise InputError(f"metrics: VM {unknown[0]} is not in cluster {cluster.name}")
    groups = [(vms[str(name)], df.sort_values("ts")) for name, df in metrics.groupby("vm", sort=True)]
    every = max(1, INFO_EVERY_S // step_s)
    info_ts = {v.name: _thin(_seconds(df["ts"]), every) for v, df in groups}
    t0 = min(int(t[0]) for t in info_ts.values())
    t1 = max(int(t[-1]) for t in info_ts.values())
    node_ts = _thin(np.arange(t0, t1 + 1, step_s, dtype=np.int64), every)

    def cpu() -> Iterator[str]:
        yield "# TYPE libvirt_domain_info_cpu_time_seconds counter\n"
        for vm, df in groups:
            ts = _seconds(df["ts"])
            ts = np.concatenate([[ts[0] - step_s], ts])
            used = df["cpu_cores"].to_numpy(float) * np.diff(ts)
            counter = np.concatenate([[0.0], np.cumsum(used)])
            yield _series(
                f"libvirt_domain_info_cpu_time_seconds_total{{{_labels(vm.name, vm.host)}}}", ts, counter
            )

    def mem() -> Iterator[str]:
        yield "# TYPE libvirt_domain_info_memory_usage_bytes gauge\n"
        for vm, df in groups:
            yield _series(
                f"libvirt_domain_info_memory_usage_bytes{{{_labels(vm.name, vm.host)}}}",
                _seconds(df["ts"]),
                df["mem_mib"].to_numpy(float) * MIB,
            )

    def vm_info(family: str, value: str) -> Iterator[str]:
        yield f"# TYPE {family} gauge\n"
        for vm, _ in groups:
            v = float(getattr(vm, value)) * (MIB if value == "mem_mib" else 1)
            ts = info_ts[vm.name]
            yield _series(f"{family}{{{_labels(vm.name, vm.host)}}}", ts, np.full(len(ts), v))

    def node_cpu() -> Iterator[str]:
        yield "# TYPE node_cpu_seconds counter\n"
        for host in cluster.hosts:
            if host.cpu_cores != int(host.cpu_cores):
                raise InputError(f"host {host.name}: node_exporter counts whole cores, not {host.cpu_cores}")
            for core in range(int(host.cpu_cores)):
                name = f'node_cpu_seconds_total{{cpu="{core}",host="{host.name}",mode="idle"}}'
                yield _series(name, node_ts, (node_ts - t0).astype(float))

    def node_mem() -> Iterator[str]:
        yield "# TYPE node_memory_MemTotal_bytes gauge\n"
        for host in cluster.hosts:
            name = f'node_memory_MemTotal_bytes{{host="{host.name}"}}'
            yield _series(name, node_ts, np.full(len(node_ts), host.mem_mib * MIB))

    yield cpu()
    yield mem()
    yield vm_info("libvirt_domain_info_virtual_cpus", "vcpus")
    yield vm_info("libvirt_domain_info_maximum_memory_bytes", "mem_mib")
    yield node_cpu()
    yield node_mem()


def _thin(ts: np.ndarray, every: int) -> np.ndarray:
    """Every `every`-th timestamp and the last: size and capacity series change rarely."""
    return np.unique(np.concatenate([ts[::every], ts[-1:]]))


def _seconds(ts: pd.Series) -> np.ndarray:
    return (pd.DatetimeIndex(ts).as_unit("s").asi8).astype(np.int64)


def _labels(vm: str, host: str) -> str:
    return f'domain="{_escape(vm)}",host="{_escape(host)}"'


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _series(name: str, ts: np.ndarray, values: np.ndarray) -> str:
    return "".join(f"{name} {v!r} {t}\n" for t, v in zip(ts.tolist(), values.tolist(), strict=True))
