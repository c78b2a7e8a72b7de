"""Analytic pre-copy live-migration model: how long a move takes, how long the guest pauses, how many
bytes cross the wire, and whether it converges at all.

Round 1 copies the whole guest memory while it runs; every later round copies what the guest dirtied
during the previous round. Once that remainder can be sent within the downtime budget the guest is paused
and the remainder copied (stop-and-copy). A guest that dirties memory at least as fast as the link carries
it never converges (the remainder cannot shrink), whatever its size: the planner then needs auto-converge
or post-copy, which it flags rather than hides.
"""

from __future__ import annotations

from dataclasses import dataclass

from advisor.errors import InputError


@dataclass(frozen=True)
class PrecopyEstimate:
    total_time_s: float
    downtime_ms: float
    transferred_mib: float
    iterations: int  # live copy rounds before stop-and-copy
    converges: bool


def predict_precopy(
    mem_mib: float,
    dirty_mibps: float,
    bandwidth_mibps: float,
    max_downtime_ms: float,
    max_iterations: int = 30,
) -> PrecopyEstimate:
    """Predict one pre-copy migration; a run that hits `max_iterations` ends with a forced, over-budget
    stop-and-copy and `converges=False`."""
    if bandwidth_mibps <= 0 or max_downtime_ms <= 0 or max_iterations < 1:
        raise InputError(
            f"pre-copy model needs positive bandwidth, downtime budget and rounds, got "
            f"{bandwidth_mibps}, {max_downtime_ms}, {max_iterations}"
        )
    if mem_mib < 0 or dirty_mibps < 0:
        raise InputError(
            f"pre-copy model needs non-negative memory and dirty rate, got {mem_mib}, {dirty_mibps}"
        )
    budget_mib = bandwidth_mibps * max_downtime_ms / 1000.0
    remaining = float(mem_mib)
    time_s = transferred = 0.0
    converges = False
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        round_s = remaining / bandwidth_mibps
        time_s += round_s
        transferred += remaining
        remaining = min(dirty_mibps * round_s, float(mem_mib))  # a page dirtied twice is sent once
        if dirty_mibps < bandwidth_mibps and remaining <= budget_mib:
            converges = True
            break
    stop_s = remaining / bandwidth_mibps
    return PrecopyEstimate(
        total_time_s=time_s + stop_s,
        downtime_ms=stop_s * 1000.0,
        transferred_mib=transferred + remaining,
        iterations=iterations,
        converges=converges,
    )
