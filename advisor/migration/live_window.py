"""VMs that cannot move live now, and when they could.

A VM cannot move live now when its plain pre-copy migration (no auto-converge: that slows the guest) is
predicted not to converge at its forecast dirty rate. Its window is the next hour of the day (UTC) whose
typical dirty rate, the median of the history's samples in that hour of the day, is below the fastest
rate at which it still moves live (`max_live_dirty_mibps` at the plan's bandwidth and downtime budget);
"not within a day" when no hour of the next 24 is, "no dirty-rate history" when the history has none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from advisor.core import Cluster, Forecast
from advisor.errors import InputError
from advisor.migration.predict import MigrationPrediction, max_live_dirty_mibps_many

if TYPE_CHECKING:
    from advisor.migration.model import MigrationCorrection

HOURS = 24


@dataclass(frozen=True)
class LiveWindow:
    vm: str
    host: str
    dirty_mibps: float  # its forecast dirty rate: what the plan judged its move by
    max_live_dirty_mibps: float  # below this it moves live
    next_hour_utc: int | None  # the next hour of the day typically below that; None: none within a day
    wait_h: int | None  # hours from the start of the current hour to the start of that one
    hours_seen: int  # hours of the day (of 24) the history has dirty-rate samples in
    moved: str = ""  # why the plan moves it anyway (maintenance, overload, rule); "": it stays

    @property
    def when(self) -> str:
        if self.next_hour_utc is None or self.wait_h is None:
            return "not within a day" if self.hours_seen else "no dirty-rate history"
        return f"from {self.next_hour_utc:02d}:00 UTC (in {self.wait_h} h)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "plan") -> LiveWindow:
        """One entry of a plan's cannot_move_live, or an InputError naming it."""
        try:
            return cls(**data)
        except TypeError as e:
            raise InputError(f"{source}: cannot_move_live entry {dict(data)!r}: {e}") from None


def cannot_move_live(cluster: Cluster, moves: Mapping[str, MigrationPrediction]) -> list[str]:
    """Movable, live-migratable VMs whose predicted move does not converge, by name."""
    return sorted(
        v.name
        for v in cluster.vms
        if v.movable and v.live_migratable and v.name in moves and not moves[v.name].converges
    )


def hourly_median_dirty(history: pd.DataFrame, vms: Iterable[str]) -> dict[str, np.ndarray]:
    """Per VM, the median dirty rate (MiB/s) of its samples in each hour of the day (UTC): 24 values,
    NaN for an hour without samples. `history` has the metrics schema; no dirty_mibps column: all NaN."""
    names = list(vms)
    out = {vm: np.full(HOURS, np.nan) for vm in names}
    if "dirty_mibps" not in history.columns:
        return out
    rows = history[history["vm"].isin(names)]
    rows = rows[rows["dirty_mibps"].notna()]
    medians = rows.groupby([rows["vm"], rows["ts"].dt.hour])["dirty_mibps"].median()
    for (vm, hour), value in medians.items():
        out[str(vm)][int(hour)] = float(value)
    return out


def next_live_hour(medians: np.ndarray, max_mibps: float, now: datetime) -> tuple[int, int] | None:
    """(hour of day, hours from now's hour) of the first of the next 24 hours whose median is below
    `max_mibps`; None when none is (an hour without history never qualifies)."""
    start = now.astimezone(UTC) if now.tzinfo else now
    for wait in range(1, HOURS + 1):
        hour = (start + timedelta(hours=wait)).hour
        if medians[hour] < max_mibps:  # NaN compares False
            return hour, wait
    return None


def live_windows(
    cluster: Cluster,
    forecast: Forecast,
    vms: Iterable[str],
    history: pd.DataFrame | None,
    bandwidth_mibps: float,
    max_downtime_ms: float,
    correction: MigrationCorrection | None = None,
) -> list[LiveWindow]:
    """A LiveWindow for each of `vms` (see `cannot_move_live`), judged from the forecast's time."""
    names = list(vms)
    if not names:
        return []
    by_name = cluster.vm_by_name
    max_live = max_live_dirty_mibps_many(
        [by_name[n].mem_mib for n in names], bandwidth_mibps, max_downtime_ms, correction=correction
    )
    medians = hourly_median_dirty(history if history is not None else pd.DataFrame(), names)
    out = []
    for name, limit in zip(names, max_live, strict=True):
        window = next_live_hour(medians[name], float(limit), forecast.made_at)
        out.append(
            LiveWindow(
                vm=name,
                host=by_name[name].host,
                dirty_mibps=forecast.vms[name].dirty_mibps,
                max_live_dirty_mibps=float(limit),
                next_hour_utc=None if window is None else window[0],
                wait_h=None if window is None else window[1],
                hours_seen=int(np.isfinite(medians[name]).sum()),
            )
        )
    return out
