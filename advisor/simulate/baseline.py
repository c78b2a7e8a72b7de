"""CloudSim's dynamic consolidation (SETUP.md §5): detector + MMT selection + PABFD placement, then the
underload pass, with CloudSim's choices kept (stale utilisation in the power estimate, first host on ties,
targets of the overload pass still eligible as underloaded sources)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from advisor.simulate.datacentre import DataCentre
from advisor.simulate.detectors import DetectorSpec
from advisor.simulate.engine import Migration, StepView, first_fit, pabfd_at_zero

BASELINES = {
    "thr-mmt": DetectorSpec("thr", 0.8),
    "iqr-mmt": DetectorSpec("iqr", 1.5),
    "mad-mmt": DetectorSpec("mad", 2.5),
    "lr-mmt": DetectorSpec("lr", 1.2),
}


class Dvfs:
    """No migrations: first-fit at t = 0 and power that follows load."""

    name = "dvfs"

    def initial(self, dc: DataCentre, mips: np.ndarray, ram: np.ndarray) -> np.ndarray:
        return first_fit(dc, mips, ram)

    def decide(self, view: StepView) -> list[Migration]:
        return []


@dataclass
class _Draft:
    """The tentative allocation a pass edits: VM lists, requested MIPS, free MIPS and host histories."""

    view: StepView
    members: list[list[int]]
    req_sum: np.ndarray
    alloc: np.ndarray  # MIPS the scheduler hands out now, tentative VMs included
    avail: np.ndarray
    hist: np.ndarray | None
    ram_free: np.ndarray | None  # realistic setup: memory binds

    def add(self, j: int, h: int) -> None:
        v = self.view
        capped = min(v.req[j], v.dc.pe[h])
        self.members[h].append(j)
        self.req_sum[h] += v.req[j]
        self.alloc[h] = min(self.alloc[h] + capped, v.dc.cap[h])
        self.avail[h] = max(self.avail[h] - capped, 0.0)
        if self.ram_free is not None:
            self.ram_free[h] -= v.ram[j]
        if self.hist is not None:
            self.hist[h] += v.history[j] * (v.mips[j] / v.dc.cap[h])

    def remove(self, j: int, h: int) -> None:
        v = self.view
        self.members[h].remove(j)
        stay = np.array(self.members[h], dtype=int)
        self.req_sum[h] = v.req[stay].sum()
        need = np.minimum(v.req[stay], v.dc.pe[h]).sum()
        self.alloc[h] = min(need, v.dc.cap[h])
        self.avail[h] = max(v.dc.cap[h] - need, 0.0)
        if self.ram_free is not None:
            self.ram_free[h] += v.ram[j]
        if self.hist is not None:
            self.hist[h] = (v.history[stay] * v.mips[stay, None]).sum(axis=0) / v.dc.cap[h]


class Consolidation:
    """One of thr/iqr/mad/lr-mmt."""

    def __init__(self, name: str, detector: DetectorSpec):
        self.name = name
        self.spec = detector
        self.detect = detector.build()

    def initial(self, dc: DataCentre, mips: np.ndarray, ram: np.ndarray) -> np.ndarray:
        return pabfd_at_zero(dc, mips, ram)

    def _over(self, d: _Draft, hosts: np.ndarray) -> np.ndarray:
        cap = d.view.dc.cap[hosts]
        hist = d.hist[hosts] if d.hist is not None else np.zeros((len(hosts), 1))
        return self.detect(hist, d.req_sum[hosts] / cap)

    def decide(self, view: StepView) -> list[Migration]:
        dc = view.dc
        hist = None
        if self.spec.needs_history:
            weight = view.history * view.mips[:, None]
            alive = view.host_of >= 0
            hist = np.zeros((dc.size, view.history.shape[1]))
            np.add.at(hist, view.host_of[alive], weight[alive])
            hist /= dc.cap[:, None]
        req_sum = np.bincount(view.host_of[view.host_of >= 0], view.req[view.host_of >= 0], minlength=dc.size)
        ram_free = None if view.ram_free is None else view.ram_free.copy()
        d = _Draft(
            view,
            [list(m) for m in view.members],
            req_sum,
            view.util_mips.copy(),
            view.avail.copy(),
            hist,
            ram_free,
        )
        util = view.util
        power_now = dc.watts(util)
        all_hosts = np.arange(dc.size)
        over = self._over(d, all_hosts)
        leaving: list[int] = []
        for hot in np.flatnonzero(over):
            while d.members[hot]:
                j = min(d.members[hot], key=lambda x: view.ram[x])
                leaving.append(j)
                d.remove(j, int(hot))
                if not self._over(d, np.array([hot]))[0]:
                    break
        plan: list[Migration] = []
        excluded = over.copy()
        for j in sorted(leaving, key=lambda x: -view.req[x]):
            h = self._find_host(d, j, excluded, util, power_now)
            if h >= 0:
                d.add(j, h)
                plan.append((j, h))
        # CloudSim reads "off" as 0% CPU; with memory held (realistic) a host is off only when it holds no VM
        off = util == 0 if view.ram_free is None else np.array([not m for m in view.members])
        no_source = over | off
        no_target = over | off
        while not no_source.all():
            free = (~no_source) & ~off & (util < 1)
            if not free.any():
                break
            src = int(np.flatnonzero(free)[np.argmin(util[free])])
            no_source[src] = no_target[src] = True
            moves: list[Migration] = []
            for j in sorted(d.members[src], key=lambda x: -view.req[x]):
                h = self._find_host(d, j, no_target, util, power_now)
                if h < 0:
                    for jj, hh in moves:
                        d.remove(jj, hh)
                    moves = []
                    break
                d.add(j, h)
                moves.append((j, h))
            for _, h in moves:
                no_source[h] = True
            plan.extend(moves)
        return plan

    def _find_host(
        self, d: _Draft, j: int, excluded: np.ndarray, util: np.ndarray, power_now: np.ndarray
    ) -> int:
        """PABFD as CloudSim 3.0.3 computes it: the power after the move counts the VMs placed earlier in
        this pass, the power before is the host's at the last update; a host already holding VMs (in this
        pass too) is skipped if the VM would overload it."""
        v = d.view
        r = v.req[j]
        dc = v.dc
        after = (d.alloc + r) / dc.cap
        ok = (~excluded) & (dc.pe >= r) & (d.avail >= r) & (after <= 1.0)
        if d.ram_free is not None:
            ok &= d.ram_free >= v.ram[j]
        hosts = np.flatnonzero(ok)
        if not len(hosts):
            return -1
        busy = hosts[d.alloc[hosts] != 0]
        if len(busy):
            cap = dc.cap[busy]
            hist = (
                d.hist[busy] + v.history[j] * (v.mips[j] / cap[:, None])
                if d.hist is not None
                else np.zeros((len(busy), 1))
            )
            bad = self.detect(hist, (d.req_sum[busy] + r) / cap)
            if bad.any():
                ok[busy[bad]] = False
                hosts = np.flatnonzero(ok)
                if not len(hosts):
                    return -1
        diff = dc.watts(after[hosts], hosts) - power_now[hosts]
        return int(hosts[np.argmin(diff)])


def baseline(name: str) -> Consolidation | Dvfs:
    if name == "dvfs":
        return Dvfs()
    return Consolidation(name, BASELINES[name])
