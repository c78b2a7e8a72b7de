"""The simulated data centre: host capacities and SPECpower curves as arrays, CloudSim's 800 hosts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from advisor.collect.traces import PL_HOST_MEM, PL_HOST_PES, PL_HOST_TYPES, PL_HOSTS

HOST_BW_KBIT = 1_000_000.0
VM_BW_KBIT = 100_000.0


@dataclass(frozen=True)
class DataCentre:
    """Per host: total MIPS, MIPS per core, RAM (MB) and watts at 0%, 10%, ..., 100% CPU (rows)."""

    cap: np.ndarray
    pe: np.ndarray
    ram: np.ndarray
    curve: np.ndarray

    @property
    def size(self) -> int:
        return len(self.cap)

    def watts(self, util: np.ndarray, hosts: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Power at utilisation `util` (clipped to [0, 1]) of `hosts`, linear between table points."""
        curve = self.curve[hosts]
        pos = np.clip(util, 0.0, 1.0) * (curve.shape[1] - 1)
        i = np.minimum(pos.astype(int), curve.shape[1] - 2)
        rows = np.arange(len(i))
        lo = curve[rows, i]
        return lo + (curve[rows, i + 1] - lo) * (pos - i)


def planetlab_datacentre(hosts: int = PL_HOSTS) -> DataCentre:
    """SETUP.md §1: host i is an ML110 G4 if i is even, a G5 if odd; 2 cores each."""
    kind = np.arange(hosts) % 2
    core = np.array([t[1] for t in PL_HOST_TYPES])[kind]
    curve = np.array([t[2] for t in PL_HOST_TYPES])[kind]
    return DataCentre(core * PL_HOST_PES, core, np.full(hosts, PL_HOST_MEM), curve)
