"""The `advisor` policy: the project's forecaster predicts each VM's demand an hour ahead, the optimizer
places the VMs, and only moves that pay back are made.

- Forecast: advisor.forecast.horizons' 1-h HorizonForecaster (P50 for energy, calibrated P95 for
  capacity), learned during the replay from the past only (`OnlineForecaster`). A VM is planned at
  max(P95, demand now).
- Plan: advisor.optimize's power-aware best fit (`planner.plan_step`) at every step, on the hosts short
  of MIPS now (relief), the hosts within the packing headroom at the P95 (consolidation) and a few
  empty ones.
- Payback: the optimizer keeps an evacuation only if the power it saves beats the moves' cost,
  `MIGRATION_COST_WH` per move spread over `payback_h` (watts-equivalent).
- Hysteresis: a moved VM is sticky for `cooldown_steps` (it leaves only a host that must be relieved),
  and moves fill hosts to PACK_SHARE of the relief trigger, so a host filled by a move is not relieved
  at the next step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from advisor.simulate.datacentre import DataCentre
from advisor.simulate.engine import Migration, StepView, first_fit
from advisor.simulate.online_forecast import OnlineForecaster, OnlineSettings
from advisor.simulate.planner import StepPlan, plan_step

MIGRATION_COST_WH = 10.0  # energy-equivalent of one move: both hosts busier and the VM degraded meanwhile
PACK_SHARE = 0.9  # moves fill hosts to this share of the relief trigger at the forecast P95


@dataclass(frozen=True)
class AdvisorSettings:
    headroom: float = 1.0  # relief trigger, share of host MIPS
    cooldown_steps: int = 12
    payback_h: float = 1.0
    forecast: OnlineSettings = OnlineSettings()


class AdvisorPolicy:
    name = "advisor"

    def __init__(self, settings: AdvisorSettings | None = None):
        self.s = settings or AdvisorSettings()
        self.moved_at: np.ndarray | None = None
        self.forecaster: OnlineForecaster | None = None
        self.plan = StepPlan(
            trigger=self.s.headroom,
            pack=PACK_SHARE * self.s.headroom,
            move_cost_w=MIGRATION_COST_WH / self.s.payback_h,
        )

    def initial(self, dc: DataCentre, mips: np.ndarray, ram: np.ndarray) -> np.ndarray:
        self.moved_at = np.full(len(mips), -(10**9))
        self.forecaster = OnlineForecaster(len(mips), self.s.forecast)
        return first_fit(dc, mips, ram)  # densest start the t = 0 rule allows: fewer moves at the first step

    def demand(self, view: StepView) -> tuple[np.ndarray, np.ndarray]:
        """Planned (P50, P95) MIPS per VM: the forecast 1 h ahead, P95 never below the demand now."""
        assert self.forecaster is not None, "initial() first"
        self.forecaster.observe(view.k, view.history)
        q = self.forecaster.forecast(view.k)
        alive = view.host_of >= 0
        p95 = np.where(alive, np.maximum(q.p95 * view.mips, view.req), 0.0)
        p50 = np.where(alive, np.minimum(q.p50 * view.mips, p95), 0.0)
        return p50, p95

    def decide(self, view: StepView) -> list[Migration]:
        assert self.moved_at is not None, "initial() first"
        p50, p95 = self.demand(view)
        sticky = view.k - self.moved_at < self.s.cooldown_steps
        plan = plan_step(view, p50, p95, sticky, self.plan)
        for j, _ in plan:
            self.moved_at[j] = view.k
        return plan
