"""What each VM asks of a host under a forecast, and what a host offers within headroom: the figures the
planner, the sequencer and the invariant checker all read, computed in one place.

A host's CPU peak is the sum of its VMs' forecast P95s (`plan.peak_model = "sum"`, conservative), or the
P95 of their summed history scaled to the forecast (`"joint"`): VMs rarely peak together, and what that
multiplexing frees the sum wastes.

A VM's move is charged by what the migration model predicts it transfers at its forecast dirty rate
(`VMDemand.move_mib`): the plan stage predicts every VM's move once and hands the predictions to the
planner (`moves`); without them (simulator, what-if, tests) a move costs the VM's memory."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from advisor.config import PlanSettings
from advisor.core import Cluster, Forecast, Host
from advisor.migration.predict import MigrationPrediction

EPS = 1e-6  # cores or MiB: float sums that differ by less are equal


@dataclass(frozen=True)
class VMDemand:
    cpu_p95: float  # cores: what capacity must hold
    cpu_p50: float  # cores: what energy is charged for
    mem_mib: float  # configured size: memory is reserved, never overcommitted
    dirty_mibps: float  # for migration cost
    move: MigrationPrediction | None = None  # its live migration at that dirty rate, if predicted

    @property
    def move_mib(self) -> float:
        """MiB a move of it sends: the prediction's (more than its memory when it dirties pages while
        copied), else its memory."""
        return self.mem_mib if self.move is None else self.move.transferred_mib


def demand_of(
    cluster: Cluster, forecast: Forecast, moves: Mapping[str, MigrationPrediction] | None = None
) -> dict[str, VMDemand]:
    """`moves`: each VM's predicted live migration at its forecast dirty rate (predict_moves)."""
    forecast.check_covers(cluster)
    moves = moves or {}
    out = {}
    for vm in cluster.vms:
        f = forecast.vms[vm.name]
        out[vm.name] = VMDemand(f.cpu_p95, f.cpu_p50, float(vm.mem_mib), f.dirty_mibps, moves.get(vm.name))
    return out


def cpu_cap(host: Host, settings: PlanSettings) -> float:
    return host.cpu_cores * settings.cpu_headroom


def mem_cap(host: Host, settings: PlanSettings) -> float:
    return host.mem_mib * settings.mem_headroom


def host_loads(
    cluster: Cluster, demand: Mapping[str, VMDemand], placement: Mapping[str, str]
) -> dict[str, tuple[float, float]]:
    """(cpu_p95 cores, memory MiB) per host; hosts without VMs get zeros."""
    loads = {h.name: [0.0, 0.0] for h in cluster.hosts}
    for vm, host in placement.items():
        d = demand[vm]
        loads[host][0] += d.cpu_p95
        loads[host][1] += d.mem_mib
    return {h: (c, m) for h, (c, m) in loads.items()}


PEAK_Q = 0.95  # the quantile a host's CPU peak is taken at, per VM (sum) or of the host's sum (joint)


def peak_index(steps: int) -> int:
    """Which order statistic of `steps` samples is their P95: the smallest at or above 95% of them."""
    return max(math.ceil(PEAK_Q * steps - 1e-9) - 1, 0)


def peak_of(series: np.ndarray) -> np.ndarray | float:
    """P95 along the last axis (the time axis)."""
    k = peak_index(series.shape[-1])
    return np.partition(series, k, axis=-1)[..., k]


@dataclass(frozen=True, eq=False)
class JointHistory:
    """Each VM's CPU (cores) over one common window of history, scaled so that its own P95 over the
    window is its forecast P95: how VMs peak together comes from the history, how high from the
    forecast. A VM without history is flat at its forecast P95 (it multiplexes with nothing)."""

    rows: Mapping[str, int]
    cpu: np.ndarray  # (VMs, steps), cores, float32

    def of(self, vm: str) -> np.ndarray:
        return self.cpu[self.rows[vm]]

    def subset(self, vms: Iterable[str]) -> JointHistory:
        """The rows of `vms` only: what one cluster's planning process needs."""
        names = [vm for vm in vms if vm in self.rows]
        return JointHistory({vm: k for k, vm in enumerate(names)}, self.cpu[[self.rows[vm] for vm in names]])

    def peak(self, vms: Iterable[str]) -> float:
        """P95 of the VMs' summed CPU: what a host running them all needs at the forecast's level."""
        rows = [self.rows[vm] for vm in vms]
        return float(peak_of(self.cpu[rows].sum(axis=0, dtype=np.float64))) if rows else 0.0


def joint_history(cluster: Cluster, forecast: Forecast, metrics: pd.DataFrame, hours: float) -> JointHistory:
    """The last `hours` of `metrics` (schema: advisor.metrics) for the cluster's VMs, on the union of
    their timestamps; a gap in one VM's series repeats its previous sample (or its next, at the start)."""
    forecast.check_covers(cluster)
    names = [v.name for v in cluster.vms]
    rows = {name: k for k, name in enumerate(names)}
    p95 = np.array([forecast.vms[n].cpu_p95 for n in names], dtype=float)
    frame = metrics[metrics["vm"].isin(rows)]
    if frame.empty:
        return JointHistory(rows, p95.astype(np.float32)[:, None])
    frame = frame[frame["ts"] > frame["ts"].max() - pd.Timedelta(hours=hours)]
    wide = frame.pivot(index="vm", columns="ts", values="cpu_cores").reindex(names)
    return scaled_history(names, p95, wide.ffill(axis=1).bfill(axis=1).to_numpy(dtype=float))


def scaled_history(names: Sequence[str], p95: np.ndarray, values: np.ndarray) -> JointHistory:
    """Rows of `values` (cores, one per VM, NaN where a VM has no history) scaled to the forecast P95s."""
    known = ~np.isnan(values[:, 0])
    own = np.zeros(len(names))
    own[known] = peak_of(values[known])
    scalable = known & (own > EPS)
    out = np.repeat(np.asarray(p95, dtype=float)[:, None], values.shape[1], axis=1)
    out[scalable] = values[scalable] * (p95[scalable] / own[scalable])[:, None]
    return JointHistory({name: k for k, name in enumerate(names)}, out.astype(np.float32))
