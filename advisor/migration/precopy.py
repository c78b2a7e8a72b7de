"""Analytic pre-copy live-migration model: how long a move takes, how long the guest pauses, how many
bytes cross the wire, and whether it converges at all.

Round 1 copies every page the guest has touched (all its memory unless told otherwise: untouched pages
cross as zero-page markers, nearly free); every later round copies what the guest dirtied during the
previous round, at most its working set (a page dirtied twice is sent once). After each round QEMU
compares the dirtied pages with what the link carries within the downtime budget; once they fit, the
guest is paused and the remainder copied (stop-and-copy). A guest whose working set exceeds the budget
and who dirties it faster than the link carries it never converges by itself: QEMU has no round limit,
so the model stops at `max_iterations` rounds or at `deadline_s` (the executor's abort) and says so.

Options, as QEMU implements them:
- auto-converge: at each round's end, a round that dirtied more than half of what it sent counts as
  "high"; every second high round raises the vCPU throttle (first `throttle_initial_pct`, then by
  `throttle_increment_pct`, at most 99 %), and a throttled guest dirties `1 - throttle` of its rate.
- xbzrle: from round 2 on, a dirtied page found in the cache (a share cache / working set of them) is
  sent as a delta of `xbzrle_ratio` of a page, the others whole; the first round is never compressed.
  QEMU fills the cache only from round 2 on (`xbzrle_cold_round`: round 2 goes whole too, deltas start
  in round 3). QEMU's switch-over test still counts the pages uncompressed, so xbzrle helps by shortening
  rounds. (A step-like hit rule, all hits while the working set fits the direct-mapped cache and none
  past it, fitted the 48 measured xbzrle migrations worse than cache / working set: the guest's pages
  are scattered over the cache's slots.)

`predict_precopy_batch` answers for arrays of migrations (the planner's moves, the simulator's, the
learned correction's rows); `predict_precopy` for one, as a one-row batch.
`analytic_frame` runs it on a frame of measured-migration inputs with one machine's `Calibration`
(textbook by default): what the planner predicts with, and what the learned correction (model.py) is
fitted around. Nothing here needs scikit-learn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from advisor.errors import InputError
from advisor.migration.measured import abort_deadline_s

MAX_THROTTLE_PCT = 99.0  # QEMU's max-cpu-throttle default
THROTTLE_TRIGGER = 0.5  # QEMU's throttle-trigger-threshold: dirtied > 50 % of sent in a round
HIGH_ROUNDS_PER_STEP = 2  # QEMU raises the throttle on every second high round
XBZRLE_RATIO = 0.25  # delta size of a cached page, as a share of the page (workload-dependent)
XBZRLE_CACHE_SHARE = 0.25  # the default xbzrle cache, as a share of guest memory


@dataclass(frozen=True)
class PrecopyEstimate:
    total_time_s: float
    downtime_ms: float
    transferred_mib: float
    iterations: int  # live copy rounds before stop-and-copy
    converges: bool
    throttle_pct: float = 0.0  # auto-converge's vCPU throttle at the end


def default_xbzrle_cache_mib(mem_mib: float) -> float:
    """The xbzrle cache bench/migrations.py gives a guest (and the default here): a quarter of its
    memory."""
    return XBZRLE_CACHE_SHARE * mem_mib


def predict_precopy(
    mem_mib: float,
    dirty_mibps: float,
    bandwidth_mibps: float,
    max_downtime_ms: float,
    max_iterations: int = 30,
    *,
    working_set_mib: float | None = None,
    resident_mib: float | None = None,
    deadline_s: float | None = None,
    auto_converge: bool = False,
    throttle_initial_pct: float = 20.0,
    throttle_increment_pct: float = 10.0,
    dirty_cpu_share: float = 1.0,
    xbzrle: bool = False,
    xbzrle_cache_mib: float | None = None,
    xbzrle_ratio: float = XBZRLE_RATIO,
    xbzrle_mibps: float = math.inf,
    xbzrle_cold_round: bool = False,
    midround: bool = False,
    switchover_mibps: float | None = None,
) -> PrecopyEstimate:
    """Predict one pre-copy migration. A run that reaches `max_iterations` rounds, or whose live rounds
    outlast `deadline_s`, ends with a forced, over-budget stop-and-copy and `converges=False`.

    `working_set_mib` (default: all memory) bounds what one round can dirty; `resident_mib` (default: all
    memory) is what round 1 sends in full: pages the guest never touched cross as zero-page markers.
    `dirty_cpu_share`: the share of its vCPU time the guest needs to dirty at its rate (1: all of it, a
    CPU-bound writer); auto-converge's throttle slows the dirtying only once it leaves less than that.
    `xbzrle_mibps`: dirtied pages per second xbzrle can encode (it is CPU work; default: no limit).
    `xbzrle_cold_round`: round 2 fills the cache and goes uncompressed, as in QEMU (default: it hits).
    `midround`: switch over inside the last round, as QEMU does (see `_switch_midround`), instead of at
    its end. `switchover_mibps`: the stop-and-copy's rate (QEMU lifts the cap then; default: the cap)."""
    row = predict_precopy_batch(
        mem_mib,
        dirty_mibps,
        bandwidth_mibps,
        max_downtime_ms,
        max_iterations,
        working_set_mib=working_set_mib,
        resident_mib=resident_mib,
        deadline_s=deadline_s,
        auto_converge=auto_converge,
        throttle_initial_pct=throttle_initial_pct,
        throttle_increment_pct=throttle_increment_pct,
        dirty_cpu_share=dirty_cpu_share,
        xbzrle=xbzrle,
        xbzrle_cache_mib=xbzrle_cache_mib,
        xbzrle_ratio=xbzrle_ratio,
        xbzrle_mibps=xbzrle_mibps,
        xbzrle_cold_round=xbzrle_cold_round,
        midround=midround,
        switchover_mibps=switchover_mibps,
    )
    return PrecopyEstimate(
        total_time_s=float(row["total_time_s"][0]),
        downtime_ms=float(row["downtime_ms"][0]),
        transferred_mib=float(row["transferred_mib"][0]),
        iterations=int(row["iterations"][0]),
        converges=bool(row["converges"][0]),
        throttle_pct=float(row["throttle_pct"][0]),
    )


def predict_precopy_batch(
    mem_mib: ArrayLike,
    dirty_mibps: ArrayLike,
    bandwidth_mibps: ArrayLike,
    max_downtime_ms: ArrayLike,
    max_iterations: int = 30,
    *,
    working_set_mib: ArrayLike | None = None,
    resident_mib: ArrayLike | None = None,
    deadline_s: ArrayLike | None = None,
    auto_converge: ArrayLike = False,
    throttle_initial_pct: float = 20.0,
    throttle_increment_pct: float = 10.0,
    dirty_cpu_share: float = 1.0,
    xbzrle: ArrayLike = False,
    xbzrle_cache_mib: ArrayLike | None = None,
    xbzrle_ratio: float = XBZRLE_RATIO,
    xbzrle_mibps: float = math.inf,
    xbzrle_cold_round: bool = False,
    midround: bool = False,
    switchover_mibps: float | None = None,
) -> dict[str, np.ndarray]:
    """`predict_precopy` for many migrations at once (arguments broadcast against each other): arrays
    total_time_s, downtime_ms, transferred_mib, iterations, converges, throttle_pct."""
    mem, dirty, bw, budget_ms = np.broadcast_arrays(
        *(
            np.atleast_1d(np.asarray(v, dtype=float))
            for v in (mem_mib, dirty_mibps, bandwidth_mibps, max_downtime_ms)
        )
    )
    n = mem.shape
    _check(
        mem,
        dirty,
        bw,
        budget_ms,
        working_set_mib,
        max_iterations,
        xbzrle_ratio,
        dirty_cpu_share,
        xbzrle_mibps,
        switchover_mibps,
    )
    ws = mem.copy() if working_set_mib is None else np.minimum(_arr(working_set_mib, n), mem)
    # Bytes on the wire per dirtied MiB after round 1: cache hits go as deltas.
    compressing = _arr(xbzrle, n) > 0
    cache = XBZRLE_CACHE_SHARE * mem if xbzrle_cache_mib is None else _arr(xbzrle_cache_mib, n)
    hit = np.where(ws > 0, np.clip(cache / np.where(ws > 0, ws, 1.0), 0.0, 1.0), 1.0)
    page_cost = np.where(compressing, hit * xbzrle_ratio + (1.0 - hit), 1.0)
    encode_s_per_mib = np.where(compressing, 1.0 / xbzrle_mibps, 0.0)
    throttling = _arr(auto_converge, n) > 0
    deadline = np.full(n, np.inf) if deadline_s is None else _arr(deadline_s, n)
    budget = bw * budget_ms / 1000.0
    raw = mem.copy() if resident_mib is None else np.minimum(np.maximum(_arr(resident_mib, n), ws), mem)
    wire = raw.copy()  # round 1 goes uncompressed, at the link's pace
    encode = np.zeros(n)
    throttle, high = np.zeros(n), np.zeros(n)
    time_s, transferred = np.zeros(n), np.zeros(n)
    iterations = np.zeros(n, dtype=int)
    converges = np.zeros(n, dtype=bool)
    live = np.ones(n, dtype=bool)
    for _ in range(max_iterations):
        if not live.any():
            break
        iterations += live
        round_s = np.where(live, np.maximum(wire / bw, raw * encode), 0.0)
        time_s += round_s
        transferred += np.where(live, wire, 0.0)
        sent, before = wire, raw
        pace = np.minimum(1.0, (1.0 - throttle / 100.0) / dirty_cpu_share)
        raw = np.where(live, np.minimum(dirty * pace * round_s, ws), raw)
        cost = np.where((iterations == 1) & xbzrle_cold_round, 1.0, page_cost)
        wire = np.where(live, raw * cost, wire)
        encode = np.where(live, encode_s_per_mib, encode)
        done = live & (raw <= budget)
        if midround and done.any():
            cut = _switch_midround(
                np.where(iterations == 1, mem, before), sent, round_s, dirty * pace, ws, budget, cost
            )
            time_s = np.where(done, time_s - cut["early_s"], time_s)
            transferred = np.where(done, transferred - cut["unsent"], transferred)
            raw = np.where(done, cut["pending_pages"], raw)
            wire = np.where(done, cut["pending_bytes"], wire)
        converges |= done
        live &= ~done & (time_s < deadline)
        settled = ~throttling | (throttle >= MAX_THROTTLE_PCT)  # before this round's step
        high += live & throttling & (raw > THROTTLE_TRIGGER * sent)
        step = live & (high >= HIGH_ROUNDS_PER_STEP)
        high[step] = 0
        increment = np.where(throttle == 0, throttle_initial_pct, throttle_increment_pct)
        throttle = np.where(step, np.minimum(MAX_THROTTLE_PCT, throttle + increment), throttle)
        repeats = live & (raw == before) & (wire == sent) & settled
        if repeats.any():
            # The whole working set again, throttle settled: the same round until the deadline or
            # the round cap. Jump there instead of looping (tiny working sets take thousands).
            again_s = np.maximum(wire / bw, raw * encode)[repeats]
            left = max_iterations - iterations[repeats]
            to_deadline = np.ceil((deadline[repeats] - time_s[repeats]) / again_s)
            k = np.minimum(left, np.where(np.isfinite(to_deadline), to_deadline, left)).astype(int)
            time_s[repeats] += k * again_s
            transferred[repeats] += k * wire[repeats]
            iterations[repeats] += k
            live &= ~repeats
    stop_s = np.maximum(wire / (bw if switchover_mibps is None else switchover_mibps), raw * encode)
    return {
        "total_time_s": time_s + stop_s,
        "downtime_ms": stop_s * 1000.0,
        "transferred_mib": transferred + wire,
        "iterations": iterations,
        "converges": converges,
        "throttle_pct": throttle,
    }


def _switch_midround(
    pages: ArrayLike,
    sent: ArrayLike,
    round_s: ArrayLike,
    dirty: ArrayLike,
    ws: ArrayLike,
    budget: ArrayLike,
    page_cost: ArrayLike,
) -> dict[str, np.ndarray]:
    """QEMU's switch-over inside the last round: it counts the round's unsent pages (zero pages too, evenly
    spread over the round) plus those dirtied since, and stops as soon as they fit the budget rather than
    at the round's end. Returns the time and bytes not spent live, and the pages and bytes left."""
    pages, sent, round_s, dirty, ws, budget, page_cost = (
        np.asarray(v, dtype=float) for v in (pages, sent, round_s, dirty, ws, budget, page_cost)
    )
    T = np.maximum(round_s, 1e-12)
    fall = pages / T  # pages counted off per second
    tau_free = np.where(fall > dirty, (pages - budget) / np.maximum(fall - dirty, 1e-12), np.inf)
    tau_capped = T * (1.0 - (budget - ws) / np.maximum(pages, 1e-12))
    tau = np.where(dirty * tau_free <= ws, tau_free, tau_capped)
    tau = np.clip(np.where(pages <= budget, 0.0, tau), 0.0, T)
    left = 1.0 - tau / T
    dirtied = np.minimum(dirty * tau, ws)
    return {
        "early_s": round_s * left,
        "unsent": sent * left,
        "pending_pages": pages * left + dirtied,
        "pending_bytes": sent * left + dirtied * page_cost,
    }


def _check(
    mem: ArrayLike,
    dirty: ArrayLike,
    bw: ArrayLike,
    budget_ms: ArrayLike,
    ws: ArrayLike | None,
    max_iterations: int,
    xbzrle_ratio: float,
    dirty_cpu_share: float,
    xbzrle_mibps: float,
    switchover_mibps: float | None,
) -> None:
    if np.any(np.asarray(bw) <= 0) or np.any(np.asarray(budget_ms) <= 0) or max_iterations < 1:
        raise InputError(
            f"pre-copy model needs positive bandwidth, downtime budget and rounds, got "
            f"{np.min(bw)}, {np.min(budget_ms)}, {max_iterations}"
        )
    if np.any(np.asarray(mem) < 0) or np.any(np.asarray(dirty) < 0):
        raise InputError(
            f"pre-copy model needs non-negative memory and dirty rate, got {np.min(mem)}, {np.min(dirty)}"
        )
    if ws is not None and np.any(np.asarray(ws) < 0):
        raise InputError(f"pre-copy model needs a non-negative working set, got {np.min(ws)}")
    if not 0 < xbzrle_ratio <= 1:
        raise InputError(f"pre-copy model needs an xbzrle ratio in (0, 1], got {xbzrle_ratio}")
    if not 0 < dirty_cpu_share <= 1:
        raise InputError(f"pre-copy model needs a dirty CPU share in (0, 1], got {dirty_cpu_share}")
    if not xbzrle_mibps > 0:
        raise InputError(f"pre-copy model needs a positive xbzrle encoding rate, got {xbzrle_mibps}")
    if switchover_mibps is not None and not switchover_mibps > 0:
        raise InputError(f"pre-copy model needs a positive switch-over rate, got {switchover_mibps}")


def _arr(value: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=float), shape).copy()


# Rounds the analytic model may run before its deadline: QEMU itself has no limit.
ROUND_LIMIT = 1000


@dataclass(frozen=True)
class Calibration:
    """Constants of one machine's migrations; the defaults are the textbook analytic model."""

    overhead_s: float = 0.0  # added to every migration
    base_mib: float = math.inf  # round 1 sends working set + base_mib + base_share x memory (at most all)
    base_share: float = 0.0
    dirty_cpu_share: float = 1.0  # see predict_precopy
    xbzrle_ratio: float = XBZRLE_RATIO
    xbzrle_mibps: float = math.inf
    xbzrle_cold_round: bool = False  # see predict_precopy
    midround: bool = False  # QEMU's switch-over inside the last round (see predict_precopy)
    switchover_mibps: float | None = None  # stop-and-copy rate (QEMU lifts the cap); None: the cap
    downtime_overhead_ms: float = 0.0  # added to every downtime (and total time)


def analytic_frame(X: pd.DataFrame, cal: Calibration | None = None) -> pd.DataFrame:
    """The analytic model on every row of inputs, with the sweep's abort deadline, textbook or
    calibrated."""
    c = cal or Calibration()
    mem, bw = X["mem_mib"].to_numpy(float), X["bandwidth_mibps"].to_numpy(float)
    ws = X["working_set_mib"].to_numpy(float)
    out = predict_precopy_batch(
        mem,
        X["dirty_mibps"].to_numpy(float),
        bw,
        X["max_downtime_ms"].to_numpy(float),
        ROUND_LIMIT,
        working_set_mib=ws,
        resident_mib=np.minimum(ws + c.base_mib + c.base_share * mem, mem),
        deadline_s=abort_deadline_s(mem, bw),
        auto_converge=X["auto_converge"].to_numpy(bool),
        dirty_cpu_share=c.dirty_cpu_share,
        xbzrle=X["xbzrle"].to_numpy(bool),
        xbzrle_ratio=c.xbzrle_ratio,
        xbzrle_mibps=c.xbzrle_mibps,
        xbzrle_cold_round=c.xbzrle_cold_round,
        midround=c.midround,
        switchover_mibps=c.switchover_mibps,
    )
    frame = pd.DataFrame(out, index=X.index)
    frame["downtime_ms"] += c.downtime_overhead_ms
    frame["total_time_s"] += c.overhead_s + c.downtime_overhead_ms / 1000.0
    return frame
