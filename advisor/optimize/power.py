"""Linear views of a host power curve, for the models that can only take lines (CP-SAT, the LP bound),
and the curves of many hosts evaluated at once, for the searches."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from advisor.core import PowerModel


def hull_lines(power: PowerModel) -> list[tuple[float, float]]:
    """(watts at 0%, watts per unit of utilisation) of lines whose maximum is the lower convex hull of
    the power curve on [0, 1]: never above the real curve (so bounds stay bounds), equal to it where
    the curve is convex, and exactly the curve for a linear model."""
    if not power.curve_w:
        return [(power.idle_w, power.max_w - power.idle_w)]
    n = len(power.curve_w) - 1
    hull: list[tuple[float, float]] = []
    for p in ((i / n, w) for i, w in enumerate(power.curve_w)):
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) <= 0:  # hull[-1] on or above the chord
                hull.pop()
            else:
                break
        hull.append(p)
    lines = []
    for (x1, y1), (x2, y2) in zip(hull, hull[1:], strict=False):
        slope = (y2 - y1) / (x2 - x1)
        lines.append((y1 - slope * x1, slope))
    return lines


def hull_watts(power: PowerModel, util: float) -> float:
    u = min(max(util, 0.0), 1.0)
    return max(a + b * u for a, b in hull_lines(power))


class PowerTable:
    """Every host's power curve evaluated at once, with the very float operations of
    `PowerModel.watts`, so vectorised searches and the scalar objective agree to the last bit."""

    def __init__(self, powers: Sequence[PowerModel], cores: Sequence[float]) -> None:
        self.cores = np.asarray(cores, dtype=float)
        self.standby = np.array([p.standby_w for p in powers], dtype=float)
        groups: dict[PowerModel, list[int]] = {}
        for h, p in enumerate(powers):
            groups.setdefault(p, []).append(h)
        self.groups = [(p, np.array(hs, dtype=np.int64)) for p, hs in groups.items()]

    def watts(self, util: np.ndarray) -> np.ndarray:
        """Running power of each host at CPU utilisation `util` (one value per host)."""
        u = np.clip(util, 0.0, 1.0)
        out = np.empty_like(u)
        for p, hs in self.groups:
            x = u[hs]
            if not p.curve_w:
                out[hs] = p.idle_w + (p.max_w - p.idle_w) * x
                continue
            curve = np.array(p.curve_w)
            pos = x * (len(curve) - 1)
            i = np.minimum(pos.astype(np.int64), len(curve) - 2)
            out[hs] = curve[i] + (curve[i + 1] - curve[i]) * (pos - i)
        return out

    def at_p50(self, p50: np.ndarray) -> np.ndarray:
        return self.watts(p50 / self.cores)
