"""One decision of the `advisor` policy, made by the optimizer: the simulated data centre at a decision
time becomes a Cluster and a Forecast, advisor.optimize's power-aware heuristic plans it, and the moves
in its placement are the migrations.

The optimizer sees a subset: the hosts to relieve (asking for more than `trigger` of their MIPS now, or
holding a VM whose P95 is wider than a core), every active host within the packing headroom at the
forecast P95 (consolidation sources and destinations) and a few empty hosts of each kind to wake if
relief needs one. Hosts between the two levels are left out, neither relieved nor filled: that dead band
is the hysteresis against a host filled by a move being relieved at the next step.

Relief waits for a host to be short now rather than forecast short: relieving on the P95 doubled the
migrations on 20110303, and in CloudSim's accounting every migration marks its destination short while
it runs, so SLATAH rose too (0.59% against 0.17%).

Units for the optimizer: 1 core = 1000 MIPS, so a G4 host has 3.72 cores. A VM whose P95 is wider
than a G4 core is pinned to hosts whose cores are wide enough. Memory binds only when the setup holds it
(`StepView.ram_free`), as in CloudSim, where RAM is checked only at t = 0; without it the plan is
CPU-only (PABFD), with it CPU and memory (PABFD-2D).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from advisor.config import PlanSettings
from advisor.core import VM, Cluster, Forecast, Host, HostState, PowerModel, Rules, VMForecast
from advisor.optimize.heuristics import pabfd, pabfd2d
from advisor.optimize.problem import build_problem
from advisor.simulate.engine import STEP_S, Migration, StepView
from advisor.simulate.online_forecast import EPOCH

MIPS_PER_CORE = 1000.0


@dataclass(frozen=True)
class StepPlan:
    trigger: float = 1.0  # share of host MIPS asked for now that calls for relief
    pack: float = 0.9  # share of host MIPS at the forecast P95 that moves may fill a host to
    move_cost_w: float = 10.0  # watts-equivalent of a move over the payback horizon
    spare_hosts: int = 2  # empty hosts of each kind offered beyond one per host to relieve


def host_sets(view: StepView, p95: np.ndarray, s: StepPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean masks (relieve, pack, spare) over hosts; `p95` is each VM's planned MIPS."""
    dc = view.dc
    alive = view.host_of >= 0
    where = view.host_of[alive]
    need = np.bincount(where, np.ceil(p95[alive] - 1e-9), minlength=dc.size)  # as the optimizer rounds
    now = np.bincount(where, view.req[alive], minlength=dc.size)
    wide = np.zeros(dc.size, dtype=bool)
    wide[where[p95[alive] > dc.pe[where]]] = True
    active = np.bincount(where, minlength=dc.size) > 0
    relieve = active & ((now > s.trigger * dc.cap) | wide)
    pack = active & ~relieve & (need <= np.floor(s.pack * dc.cap + 1e-9))
    spare = np.zeros(dc.size, dtype=bool)
    per_kind = int(relieve.sum()) + s.spare_hosts
    for pe in np.unique(dc.pe):
        empty = np.flatnonzero(~active & (dc.pe == pe))
        spare[empty[:per_kind]] = True
    return relieve, pack, spare


def plan_step(
    view: StepView, p50: np.ndarray, p95: np.ndarray, sticky: np.ndarray, s: StepPlan
) -> list[Migration]:
    """Migrations from the optimizer's placement of the subset. `p50`/`p95`: planned MIPS per VM;
    `sticky`: VMs that may leave only a host being relieved (recently moved ones)."""
    dc = view.dc
    relieve, pack, spare = host_sets(view, p95, s)
    if not relieve.any() and pack.sum() < 2:
        return []
    hosts = np.flatnonzero(relieve | pack | spare)
    vms = np.flatnonzero((view.host_of >= 0) & np.isin(view.host_of, hosts))
    holds_memory = view.ram_free is not None
    big = float(view.ram.sum()) + 1.0  # CloudSim: RAM binds at t = 0 only
    cluster = Cluster(
        name="sim",
        hosts=tuple(
            Host(
                name=f"h{h}",
                cpu_cores=float(dc.cap[h]) / MIPS_PER_CORE,
                mem_mib=float(dc.ram[h]) if holds_memory else big,
                state=HostState.STANDBY if spare[h] else HostState.UP,
                power=PowerModel(standby_w=0.0, curve_w=tuple(float(w) for w in dc.curve[h])),
            )
            for h in hosts
        ),
        vms=tuple(
            VM(
                name=f"v{j}",
                host=f"h{view.host_of[j]}",
                vcpus=1,
                mem_mib=float(view.ram[j]),
                movable=bool(relieve[view.host_of[j]] or not sticky[j]),
            )
            for j in vms
        ),
        rules=Rules(pins=_core_pins(view, p95, vms, hosts)),
    )
    forecast = Forecast(
        made_at=(EPOCH + pd.Timedelta(seconds=STEP_S * view.k)).to_pydatetime(),
        horizon_s=3600,
        model="change-1h",
        cluster_fingerprint="",
        vms={
            f"v{j}": VMForecast(
                cpu_p50=float(p50[j]) / MIPS_PER_CORE,
                cpu_p95=float(p95[j]) / MIPS_PER_CORE,
                mem_p50=float(view.ram[j]),
                mem_p95=float(view.ram[j]),
            )
            for j in vms
        },
    )
    settings = PlanSettings(
        cpu_headroom=s.pack,
        migration_cap=1.0,
        migration_cost_w=s.move_cost_w,
        migration_cost_w_per_gib=0.0,
    )
    problem = build_problem(cluster, forecast, settings)
    if problem.contradictions:
        raise ValueError(f"step {view.k}: {problem.contradictions[0].message}")
    heuristic = pabfd2d if holds_memory else pabfd  # CloudSim after t = 0: CPU-only bin packing
    placement = problem.placement(heuristic(problem).assign)
    return [
        (int(vm[1:]), int(h[1:])) for vm, h in placement.items() if int(h[1:]) != view.host_of[int(vm[1:])]
    ]


def _core_pins(
    view: StepView, p95: np.ndarray, vms: np.ndarray, hosts: np.ndarray
) -> dict[str, tuple[str, ...]]:
    """A VM whose P95 is wider than some hosts' cores may run only where a core holds it."""
    pe = view.dc.pe[hosts]
    out = {}
    for j in vms[p95[vms] > pe.min()]:
        out[f"v{j}"] = tuple(f"h{h}" for h in hosts[pe >= min(p95[j], pe.max())])
    return out
