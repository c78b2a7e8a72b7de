"""Linear views of a host power curve, for the models that can only take lines (CP-SAT, the LP bound)."""

from __future__ import annotations

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
