"""The `advisor` policy: place and pack VMs by a demand quantile forecast, relieve only hosts that are short
of MIPS now, and evacuate lightly used hosts only when the energy saved within the payback horizon is worth
the moves. Hysteresis: a moved VM stays put for a cooldown, and every move lands inside a packing band below
the relief threshold, so a host it fills is not relieved again at the next step.

The forecast is the empirical `quantile` of each VM's last `window_steps` samples (at least its current
demand): the cheap stand-in for the trained forecaster that a 288-step replay can afford at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from advisor.simulate.datacentre import DataCentre
from advisor.simulate.engine import Migration, StepView, first_fit

PACK_MARGIN = 0.9  # consolidation fills hosts to this share of the relief threshold (dead band)
MIGRATION_COST_WH = 10.0  # energy-equivalent of one move: both hosts busier and the VM degraded meanwhile


@dataclass(frozen=True)
class AdvisorSettings:
    quantile: float = 0.95
    window_steps: int = 12
    headroom: float = 1.0
    cooldown_steps: int = 12
    payback_h: float = 1.0


class AdvisorPolicy:
    name = "advisor"

    def __init__(self, settings: AdvisorSettings | None = None):
        self.s = settings or AdvisorSettings()
        self.moved_at: np.ndarray | None = None

    def initial(self, dc: DataCentre, mips: np.ndarray, ram: np.ndarray) -> np.ndarray:
        self.moved_at = np.full(len(mips), -(10**9))
        return first_fit(dc, mips, ram)  # densest start the t = 0 rule allows: fewer moves at the first step

    def forecast(self, view: StepView) -> np.ndarray:
        """Planned MIPS per VM: the window quantile, never below what it asks for now."""
        window = view.history[:, : self.s.window_steps]
        q = np.quantile(window, self.s.quantile, axis=1) * view.mips
        return np.where(view.host_of >= 0, np.maximum(q, view.req), 0.0)

    def decide(self, view: StepView) -> list[Migration]:
        assert self.moved_at is not None, "initial() first"
        dc = view.dc
        need = self.forecast(view)
        members = [list(m) for m in view.members]
        load = np.array([need[m].sum() for m in members])
        ram_free = None if view.ram_free is None else view.ram_free.copy()
        limit = self.s.headroom * dc.cap
        plan: list[Migration] = []
        touched = np.zeros(dc.size, dtype=bool)

        def fits(j: int, cap_share: float, exclude: np.ndarray) -> np.ndarray:
            ok = (~exclude) & (dc.pe >= need[j]) & (load + need[j] <= limit * cap_share)
            if ram_free is not None:
                ok &= ram_free >= view.ram[j]
            return ok

        def move(j: int, src: int, dst: int) -> None:
            members[src].remove(j)
            members[dst].append(j)
            load[src] -= need[j]
            load[dst] += need[j]
            if ram_free is not None:
                ram_free[src] += view.ram[j]
                ram_free[dst] -= view.ram[j]
            plan.append((j, dst))
            touched[src] = touched[dst] = True
            assert self.moved_at is not None
            self.moved_at[j] = view.k

        active = np.array([bool(m) for m in members])
        # 1. relief: hosts short of MIPS now (over the threshold, or a VM wider than a core). Moves go where
        # the forecast fits inside the packing band, and stop once the host is back inside it too.
        now = np.array([view.req[m].sum() for m in members])

        def short(h: int, share: float) -> bool:
            return bool(now[h] > share * limit[h] or any(view.req[j] > dc.pe[h] for j in members[h]))

        for h in np.argsort(-(now / dc.cap)):
            if not short(int(h), 1.0):
                continue
            while members[h] and short(int(h), PACK_MARGIN):
                wide = [j for j in members[h] if view.req[j] > dc.pe[h]]
                excess = now[h] - PACK_MARGIN * limit[h]
                enough = [j for j in members[h] if view.req[j] >= excess]
                if wide:
                    j = max(wide, key=lambda x: view.req[x])
                elif enough:
                    j = min(enough, key=lambda x: view.req[x])  # one move, the smallest that does it
                else:
                    j = max(members[h], key=lambda x: view.req[x])
                exclude = np.zeros(dc.size, dtype=bool)
                exclude[h] = True
                ok = fits(j, PACK_MARGIN, exclude) & active
                if ok.any():
                    cand = np.flatnonzero(ok)
                    dst = int(cand[np.argmax(load[cand] / limit[cand])])  # best fit
                else:
                    ok = fits(j, PACK_MARGIN, exclude) & ~active
                    if not ok.any():
                        break
                    cand = np.flatnonzero(ok)
                    dst = int(cand[np.argmax(dc.cap[cand])])  # wake the biggest host
                    active[dst] = True
                now[h] -= view.req[j]
                now[dst] += view.req[j]
                move(j, int(h), dst)
        # 2. consolidation: evacuate the least loaded hosts when their VMs fit elsewhere and it pays back
        cooled = view.k - self.moved_at >= self.s.cooldown_steps
        # a short history gives a shaky quantile: pack looser until the window is full
        pack = PACK_MARGIN * (0.6 + 0.4 * min(1.0, view.history.shape[1] / self.s.window_steps))
        fewest_vms_first = sorted(range(dc.size), key=lambda x: (len(members[x]), load[x] / dc.cap[x]))
        for h in fewest_vms_first:  # the most hosts freed per move
            if not members[h] or touched[h] or not all(cooled[j] for j in members[h]):
                continue
            watts = float(dc.watts(np.array([min(view.util_mips[h] / dc.cap[h], 1.0)]), np.array([h]))[0])
            if watts * self.s.payback_h < MIGRATION_COST_WH * len(members[h]):
                continue
            trial: list[tuple[int, int]] = []
            exclude = ~active.copy()
            exclude[h] = True
            for j in sorted(members[h], key=lambda x: -need[x]):
                ok = fits(j, pack, exclude)
                if not ok.any():
                    break
                cand = np.flatnonzero(ok)
                dst = int(cand[np.argmax(load[cand] / limit[cand])])
                trial.append((j, dst))
                load[dst] += need[j]
                if ram_free is not None:
                    ram_free[dst] -= view.ram[j]
            for j, dst in trial:  # undo the trial bookkeeping; move() redoes it if kept
                load[dst] -= need[j]
                if ram_free is not None:
                    ram_free[dst] += view.ram[j]
            if len(trial) < len(members[h]):
                continue
            for j, dst in trial:
                move(j, int(h), dst)
            active[h] = False
        return plan
