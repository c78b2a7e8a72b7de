"""Order migrations into waves that are safe to run side by side.

While it migrates a VM holds its memory and its P95 CPU on both hosts (peak model joint: its CPU
history joins both hosts' summed histories, whose P95 must hold). A wave is a set of migrations
in flight together (at most `max_concurrent_per_host` per host, as source or destination); its state
(every migration of the wave in flight) and the state after it must keep every host within headroom,
or for a host already over headroom no worse than it started, per dimension; and no host may hold two
members of an anti-affinity group (beyond what it already held at the start). Waves are built greedily.
When nothing can start (a deadlock: say two big VMs swapping between two full hosts) one blocked VM is
parked on another running host and moved on later; when nothing can be parked either, the result is
infeasible and names the VMs left waiting. Every wave starts at least one hop and a VM parks at most
once, so there are at most two waves per move.

Each hop carries its VM's predicted migration: the one the plan stage made (`VMDemand.move`, with the
learned correction when configured), else the analytic model's, predicted for all hops in one batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from advisor.config import PlanSettings
from advisor.core import Cluster, HostState, Migration, MigrationReason
from advisor.errors import InputError
from advisor.migration.predict import MigrationPrediction, predict_moves
from advisor.optimize.demand import EPS, JointHistory, VMDemand, cpu_cap, mem_cap, peak_of

_PRIORITY = {
    MigrationReason.MAINTENANCE: 0,
    MigrationReason.OVERLOAD: 1,
    MigrationReason.RULE: 2,
    MigrationReason.CONSOLIDATE: 3,
    MigrationReason.BALANCE: 3,
    MigrationReason.PARK: 3,
}


@dataclass(frozen=True)
class SequenceResult:
    migrations: tuple[Migration, ...]  # in wave order; a parked VM has a PARK hop and a later one
    parked: tuple[str, ...]
    infeasible: bool
    blocking_vms: tuple[str, ...]
    message: str

    @property
    def waves(self) -> int:
        return max((m.wave for m in self.migrations), default=0)


def sequence(
    cluster: Cluster,
    demand: Mapping[str, VMDemand],
    current: Mapping[str, str],
    target: Mapping[str, str],
    settings: PlanSettings,
    reasons: Mapping[str, MigrationReason] | None = None,
    history: JointHistory | None = None,
) -> SequenceResult:
    """Waves that take `current` to `target`. `reasons` labels each move (default: consolidate).
    With `history` (peak model joint) a host's CPU is the P95 of its VMs' summed history."""
    state = _State(cluster, demand, current, settings, history)
    hosts = state.host_by_name
    for vm, dst in target.items():
        if dst not in hosts:
            raise InputError(f"target placement: VM {vm} goes to unknown host {dst!r}")
    why = dict(reasons or {})
    pending = sorted(
        (vm for vm, dst in target.items() if current[vm] != dst),
        key=lambda vm: (_PRIORITY[why.get(vm, MigrationReason.CONSOLIDATE)], -demand[vm].mem_mib, vm),
    )
    hops: list[tuple[str, str, str, MigrationReason, int]] = []
    parked: list[str] = []
    wave = 0
    while pending:
        wave += 1
        started = [
            (vm, target[vm], why.get(vm, MigrationReason.CONSOLIDATE))
            for vm in pending
            if state.try_start(vm, target[vm])
        ]
        if not started:
            hop = _park(state, pending, target, set(parked))
            if hop is None:
                blocking = tuple(sorted(pending))
                shown = ", ".join(blocking[:10]) + (" ..." if len(blocking) > 10 else "")
                return SequenceResult(
                    _migrations(hops, demand, settings),
                    tuple(parked),
                    True,
                    blocking,
                    f"no safe order: {len(blocking)} migration(s) wait on each other and no running host can "
                    f"take a parked VM ({shown})",
                )
            parked.append(hop[0])
            started = [hop]
        hops.extend((vm, state.loc[vm], dst, reason, wave) for vm, dst, reason in started)
        state.finish()
        pending = [vm for vm in pending if state.loc[vm] != target[vm]]
    return SequenceResult(_migrations(hops, demand, settings), tuple(parked), False, (), "")


class _State:
    """Per-host sums kept incrementally: a hop adds to its destination when it starts and leaves its
    source when the wave ends."""

    def __init__(
        self,
        cluster: Cluster,
        demand: Mapping[str, VMDemand],
        current: Mapping[str, str],
        settings: PlanSettings,
        history: JointHistory | None,
    ) -> None:
        self.cluster = cluster
        self.history = history
        self.demand = demand
        self.host_by_name = cluster.host_by_name
        self.limit_per_host = settings.max_concurrent_per_host
        self.loc = dict(current)
        self.cpu = {h.name: 0.0 for h in cluster.hosts}
        self.mem = {h.name: 0.0 for h in cluster.hosts}
        self.groups: dict[str, list[int]] = {}
        for g, group in enumerate(cluster.rules.anti_affinity):
            for vm in group:
                self.groups.setdefault(vm, []).append(g)
        self.count: dict[tuple[int, str], int] = {}
        for vm, h in current.items():
            self.cpu[h] += demand[vm].cpu_p95
            self.mem[h] += demand[vm].mem_mib
            for g in self.groups.get(vm, ()):
                self.count[g, h] = self.count.get((g, h), 0) + 1
        self.series: dict[str, np.ndarray] = {}
        if history is not None:
            self.series = {h.name: np.zeros(history.cpu.shape[1]) for h in cluster.hosts}
            for vm, h in current.items():
                self.series[h] += history.of(vm)
            self.cpu = {h: float(peak_of(x)) for h, x in self.series.items()}
        # a host over headroom may stay so, but no worse; a crowded host may not get more crowded
        self.cpu_limit = {h.name: max(cpu_cap(h, settings), self.cpu[h.name]) + EPS for h in cluster.hosts}
        self.mem_limit = {h.name: max(mem_cap(h, settings), self.mem[h.name]) + EPS for h in cluster.hosts}
        self.crowd_limit = {k: max(1, n) for k, n in self.count.items()}
        self.inflight: dict[str, int] = {}
        self.wave: list[tuple[str, str]] = []

    def fits(self, vm: str, dst: str) -> bool:
        d = self.demand[vm]
        src = self.loc[vm]
        return (
            self.inflight.get(src, 0) < self.limit_per_host
            and self.inflight.get(dst, 0) < self.limit_per_host
            and self.mem[dst] + d.mem_mib <= self.mem_limit[dst]
            and self.uncrowded(vm, dst)
            and self.cpu_with(vm, dst) <= self.cpu_limit[dst]
        )

    def cpu_with(self, vm: str, dst: str) -> float:
        if self.history is None:
            return self.cpu[dst] + self.demand[vm].cpu_p95
        return float(peak_of(self.series[dst] + self.history.of(vm)))

    def uncrowded(self, vm: str, dst: str) -> bool:
        for g in self.groups.get(vm, []):
            if self.count.get((g, dst), 0) >= self.crowd_limit.get((g, dst), 1):
                return False
        return True

    def try_start(self, vm: str, dst: str) -> bool:
        if not self.fits(vm, dst):
            return False
        d = self.demand[vm]
        src = self.loc[vm]
        self.cpu[dst] = self.cpu_with(vm, dst)
        if self.history is not None:
            self.series[dst] += self.history.of(vm)
        self.mem[dst] += d.mem_mib
        for g in self.groups.get(vm, ()):
            self.count[g, dst] = self.count.get((g, dst), 0) + 1
        self.inflight[src] = self.inflight.get(src, 0) + 1
        self.inflight[dst] = self.inflight.get(dst, 0) + 1
        self.wave.append((vm, dst))
        return True

    def finish(self) -> None:
        """End the wave: every hop leaves its source."""
        for vm, dst in self.wave:
            d = self.demand[vm]
            src = self.loc[vm]
            if self.history is None:
                self.cpu[src] -= d.cpu_p95
            else:
                self.series[src] -= self.history.of(vm)
                self.cpu[src] = float(peak_of(self.series[src]))
            self.mem[src] -= d.mem_mib
            for g in self.groups.get(vm, ()):
                self.count[g, src] -= 1
            self.loc[vm] = dst
        self.wave = []
        self.inflight = {}


def _park(
    state: _State, pending: list[str], target: Mapping[str, str], already: set[str]
) -> tuple[str, str, MigrationReason] | None:
    """Start one hop to a running host that is nobody's destination if possible, for the first blocked
    VM whose departure frees a host another move waits for; None if no VM can be parked anywhere."""
    wanted = {target[vm] for vm in pending}
    pins = state.cluster.rules.pins
    order = sorted(range(len(pending)), key=lambda k: (state.loc[pending[k]] not in wanted, k))
    for vm in (pending[k] for k in order):
        if vm in already:
            continue
        src = state.host_by_name[state.loc[vm]]
        allowed = pins.get(vm)
        spots = [
            h
            for h in state.cluster.hosts
            if h.state == HostState.UP
            and h.cluster == src.cluster
            and h.name not in (src.name, target[vm])
            and (allowed is None or h.name in allowed)
            and state.fits(vm, h.name)
        ]
        if spots:
            spot = min(spots, key=lambda h: (h.name in wanted, state.mem[h.name] - h.mem_mib, h.name))
            state.try_start(vm, spot.name)
            return vm, spot.name, MigrationReason.PARK
    return None


def _migrations(
    hops: list[tuple[str, str, str, MigrationReason, int]],
    demand: Mapping[str, VMDemand],
    settings: PlanSettings,
) -> tuple[Migration, ...]:
    """The hops (vm, source, destination, reason, wave) with their VMs' predicted migrations."""
    unknown = sorted({vm for vm, *_ in hops if demand[vm].move is None})
    predicted: dict[str, MigrationPrediction] = (
        predict_moves(
            {vm: demand[vm].mem_mib for vm in unknown},
            {vm: demand[vm].dirty_mibps for vm in unknown},
            settings.bandwidth_mibps,
            settings.max_downtime_ms,
        )
        if unknown
        else {}
    )
    out = []
    for vm, src, dst, reason, wave in hops:
        est = demand[vm].move or predicted[vm]
        out.append(
            Migration(
                vm=vm,
                source=src,
                destination=dst,
                reason=reason,
                wave=wave,
                predicted_time_s=est.total_time_s,
                predicted_downtime_ms=est.downtime_ms,
                predicted_mib=est.transferred_mib,
                converges=est.converges,
            )
        )
    return tuple(out)
