"""A PlanetLab day as CloudSim replays it: utilisation per VM and step, VM sizes by CloudSim's type rule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from advisor.collect.traces import PL_STEPS, PL_VM_TYPES
from advisor.errors import InputError


@dataclass(frozen=True)
class Day:
    """One day: `util[j, k]` is VM j's CPU share at step k (0..1, 288 steps), sizes in MIPS and MB."""

    name: str
    vms: tuple[str, ...]
    util: np.ndarray
    mips: np.ndarray
    ram: np.ndarray


def day_from_util(name: str, util: np.ndarray) -> Day:
    """VM i of N gets CloudSim type i // ceil(N/4) (SETUP.md §2)."""
    n = util.shape[0]
    kind = np.arange(n) // math.ceil(n / len(PL_VM_TYPES))
    mips = np.array([m for m, _ in PL_VM_TYPES])[kind]
    ram = np.array([r for _, r in PL_VM_TYPES])[kind]
    return Day(name, tuple(f"vm{i}" for i in range(n)), util.astype(float), mips, ram)


def load_day(path: str) -> Day:
    """A shared-format day file (`vm,step,cpu`, cpu in percent, 288 steps per VM, rows in VM order)."""
    try:
        df = pd.read_csv(path, dtype={"vm": str})
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{path}: cannot read the trace: {e}") from None
    missing = {"vm", "step", "cpu"} - set(df.columns)
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(sorted(missing))} (expected vm,step,cpu)")
    order = list(pd.unique(df["vm"]))
    counts = df.groupby("vm", sort=False).size()
    short = counts[counts != PL_STEPS]
    if len(short):
        raise InputError(f"{path}: VM {short.index[0]} has {short.iloc[0]} rows, expected {PL_STEPS}")
    step = pd.to_numeric(df["step"], errors="coerce")
    cpu = pd.to_numeric(df["cpu"], errors="coerce")
    bad = step.isna() | (step < 0) | (step >= PL_STEPS) | cpu.isna() | (cpu < 0) | (cpu > 100)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{path}: row {i + 2}: step must be 0..{PL_STEPS - 1} and cpu 0..100")
    table = pd.DataFrame({"vm": df["vm"], "step": step.astype(int), "cpu": cpu})
    if table.duplicated(["vm", "step"]).any():
        i = int(np.flatnonzero(table.duplicated(["vm", "step"]).to_numpy())[0])
        raise InputError(
            f"{path}: row {i + 2}: VM {table['vm'].iloc[i]} has step {table['step'].iloc[i]} twice"
        )
    wide = table.pivot(index="vm", columns="step", values="cpu").loc[order]
    day = day_from_util(Path(path).name.split(".")[0], wide.to_numpy() / 100.0)
    return Day(day.name, tuple(order), day.util, day.mips, day.ram)
