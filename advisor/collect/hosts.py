"""Hosts for traces that have none (Bitbrains, bare CSV/Parquet): identical hosts from the trace settings
and a first-fit initial placement, so that a trace becomes a cluster the planner can improve on.

First fit takes the VMs in their order in the trace and fills a host to at most 60% of its memory (VM
sizes) and 60% of its cores (the VMs' P95 CPU demand), like a provider that keeps headroom; a VM that
alone exceeds that share gets a host of its own. With `trace.hosts == 0` the cluster has the hosts first
fit used plus 10% spares; otherwise exactly `trace.hosts`, and a VM that finds no host under the 60% share
goes to the host with the most free memory. Hosts left empty are in standby.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from advisor.config import PowerSettings, TraceSettings
from advisor.core import VM, Cluster, Host, HostState
from advisor.errors import InputError

FILL = 0.6
SPARE = 0.1
VM_COLUMNS = ("vm", "vcpus", "mem_mib", "cpu_p95", "file")


def host_names(count: int) -> list[str]:
    width = max(3, len(str(count)))
    return [f"host-{i + 1:0{width}d}" for i in range(count)]


def build_cluster(name: str, vms: pd.DataFrame, trace: TraceSettings, power: PowerSettings) -> Cluster:
    """A cluster from per-VM sizes (columns VM_COLUMNS, plus `host` when the trace says where VMs run)."""
    too_big = vms["mem_mib"].to_numpy() > trace.host_mem_mib
    if too_big.any():
        row = vms.iloc[int(np.flatnonzero(too_big)[0])]
        raise InputError(
            f"{row['file']}: VM {row['vm']} needs {row['mem_mib']:.0f} MiB of memory, more than a host has "
            f"({trace.host_mem_mib:.0f} MiB, trace.host_mem_mib)"
        )
    if "host" in vms.columns:
        named = sorted(set(vms["host"]))
        spares = max(trace.hosts - len(named), math.ceil(SPARE * len(named)) if trace.hosts == 0 else 0)
        taken = set(named)
        extra = [n for n in host_names(len(named) + spares) if n not in taken][:spares]
        names = named + extra
        placement = list(vms["host"])
    else:
        index = first_fit(vms, trace)
        count = trace.hosts or int(index.max()) + 1 + math.ceil(SPARE * (int(index.max()) + 1))
        names = host_names(count)
        placement = [names[i] for i in index]
    busy = set(placement)
    model = power.model()
    hosts = tuple(
        Host(
            n,
            trace.host_cpu_cores,
            trace.host_mem_mib,
            cluster=name,
            power=model,
            state=HostState.UP if n in busy else HostState.STANDBY,
        )
        for n in names
    )
    guests = tuple(
        VM(str(v), h, int(c), float(m))
        for v, h, c, m in zip(vms["vm"], placement, vms["vcpus"], vms["mem_mib"], strict=True)
    )
    return Cluster(name, hosts, guests)


def first_fit(vms: pd.DataFrame, trace: TraceSettings) -> np.ndarray:
    """Host index of each VM, in VM order (see the module docstring for the rule)."""
    mem = vms["mem_mib"].to_numpy(dtype=float)
    cpu = vms["cpu_p95"].to_numpy(dtype=float)
    slots = trace.hosts or len(mem)
    used_mem = np.zeros(slots)
    used_cpu = np.zeros(slots)
    opened = trace.hosts  # fixed hosts are all open; otherwise hosts open one by one
    out = np.empty(len(mem), dtype=np.int64)
    for i, (m, c) in enumerate(zip(mem, cpu, strict=True)):
        fits = (used_mem[:opened] + m <= FILL * trace.host_mem_mib) & (
            used_cpu[:opened] + c <= FILL * trace.host_cpu_cores
        )
        fits |= used_mem[:opened] == 0  # an empty host takes any VM that fits its memory
        if fits.any():
            h = int(np.argmax(fits))
        elif not trace.hosts:
            h, opened = opened, opened + 1
        else:
            free = trace.host_mem_mib - used_mem
            h = int(np.argmax(free))
            if free[h] < m:
                row = vms.iloc[i]
                raise InputError(
                    f"{row['file']}: VM {row['vm']} fits on none of the {trace.hosts} hosts (trace.hosts); "
                    "raise trace.hosts, or set it to 0 to get as many as needed"
                )
        used_mem[h] += m
        used_cpu[h] += c
        out[i] = h
    return out
