"""The escalation ladder of one live migration: when to raise the downtime budget, switch to post-copy or
abort, decided from the elapsed time and the job's progress. Pure: the libvirt driver feeds it samples.

Pre-copy never gives up by itself (shared/notes/testbed.md: 345 s, 44 passes, no end), so every migration
gets deadlines from the migration model's prediction. Rung 1 is auto-converge (a start flag: QEMU
throttles a guest that outruns the link). At the soft deadline, or earlier when passes stop making
progress without auto-converge, the ladder climbs one rung every `escalate_after_s`: the downtime budget
raised to the VM's limit, then post-copy where the VM's policy allows it (irreversible: no abort after
it); at the hard deadline (or, once passes stalled, one step after the last rung) it aborts, which leaves
the VM running on its source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from advisor.config import ApplySettings
from advisor.core import VM
from advisor.errors import InputError
from advisor.migration import MigrationPrediction

DOWNTIME_LABEL = "max_downtime_ms"  # a VM's own downtime limit, ms
POSTCOPY_LABEL = "postcopy"  # allow | deny: the VM's post-copy policy
STALL_PROGRESS = 0.9  # a pass that leaves more than 90% of the best remainder so far made no progress


class Rung(StrEnum):
    DOWNTIME = "downtime"
    POSTCOPY = "postcopy"
    ABORT = "abort"


@dataclass(frozen=True)
class VMPolicy:
    downtime_ms: float  # the budget a migration starts with
    downtime_limit_ms: float  # the downtime rung's budget
    postcopy: bool


def vm_policy(vm: VM, settings: ApplySettings) -> VMPolicy:
    """The VM's labels over the [apply] defaults; a VM's limit caps the starting budget too."""
    limit = settings.max_downtime_limit_ms
    raw = vm.labels.get(DOWNTIME_LABEL)
    if raw is not None:
        try:
            limit = float(raw)
        except ValueError:
            limit = math.nan
        if not math.isfinite(limit) or limit <= 0:
            raise InputError(f"VM {vm.name}: label {DOWNTIME_LABEL}={raw!r} is not a positive number of ms")
    postcopy = settings.allow_postcopy
    rule = vm.labels.get(POSTCOPY_LABEL)
    if rule is not None:
        if rule not in ("allow", "deny"):
            raise InputError(f"VM {vm.name}: label {POSTCOPY_LABEL}={rule!r} is not allow or deny")
        postcopy = rule == "allow"
    return VMPolicy(min(settings.max_downtime_ms, limit), limit, postcopy)


@dataclass(frozen=True)
class Ladder:
    soft_s: float  # escalation starts by then at the latest
    step_s: float  # time on one rung before the next
    abort_s: float  # the abort rung fires then, or one step after the rung before it if later (or stalled)
    rungs: tuple[Rung, ...]  # in order; ABORT last
    stall_passes: int  # passes without progress that start escalation early; 0: time only


def ladder_for(
    policy: VMPolicy, prediction: MigrationPrediction, disk_mib: float, settings: ApplySettings
) -> Ladder:
    """The migration model's deadlines (`deadline_s`, `abort_s`, predicted at [apply]'s bandwidth,
    downtime budget, deadline factor and slack) plus the copy time of local disks; the rungs between
    them one `escalate_after_s` apart."""
    rungs: list[Rung] = []
    if policy.downtime_limit_ms > policy.downtime_ms:
        rungs.append(Rung.DOWNTIME)
    if policy.postcopy:
        rungs.append(Rung.POSTCOPY)
    rungs.append(Rung.ABORT)
    disk_s = settings.deadline_factor * disk_mib / settings.bandwidth_mibps
    soft = prediction.deadline_s + disk_s
    abort = max(prediction.abort_s + disk_s, soft + settings.escalate_after_s * (len(rungs) - 1))
    stall = 0 if settings.auto_converge else settings.stall_passes
    return Ladder(soft, settings.escalate_after_s, abort, tuple(rungs), stall)


@dataclass
class Escalation:
    """Which rung is due, fed the job's samples as they come. Fires each rung once, in order, at most one
    per call, and none after post-copy or abort."""

    ladder: Ladder
    fired: list[tuple[float, Rung]] = field(default_factory=list)
    stalled_at_s: float | None = None
    _pass: int = 0
    _best_mib: float = math.inf
    _stalls: int = 0

    refused: set[Rung] = field(default_factory=set)

    @property
    def done(self) -> bool:
        """Nothing left to climb: aborted, or switched to post-copy (which cannot be undone)."""
        if not self.fired:
            return False
        last = self.fired[-1][1]
        return last == Rung.ABORT or (last == Rung.POSTCOPY and Rung.POSTCOPY not in self.refused)

    def refuse(self, rung: Rung) -> None:
        """libvirt refused the rung's call: the ladder goes on to the next one (post-copy that never
        switched can still be aborted)."""
        self.refused.add(rung)

    def observe(
        self, elapsed_s: float, iteration: int | None = None, remaining_mib: float | None = None
    ) -> Rung | None:
        if self.done:
            return None
        self._watch_progress(elapsed_s, iteration, remaining_mib)
        rung = self.ladder.rungs[len(self.fired)]
        if self.fired:
            due = self.fired[-1][0] + self.ladder.step_s
        elif self.stalled_at_s is not None:
            due = min(self.stalled_at_s, self.ladder.soft_s)
        else:
            due = self.ladder.soft_s
        if rung == Rung.ABORT and self.stalled_at_s is None:
            due = max(due, self.ladder.abort_s)
        if elapsed_s < due:
            return None
        self.fired.append((elapsed_s, rung))
        return rung

    def _watch_progress(self, elapsed_s: float, iteration: int | None, remaining_mib: float | None) -> None:
        """A pass (after the first) that starts with no less than 90% of the smallest remainder seen so
        far made no progress; `stall_passes` of them in a row start the ladder now."""
        if not self.ladder.stall_passes or iteration is None or remaining_mib is None:
            return
        if iteration <= self._pass:
            return
        self._pass = iteration
        if iteration > 2 and remaining_mib >= STALL_PROGRESS * self._best_mib:
            self._stalls += 1
        else:
            self._stalls = 0
        self._best_mib = min(self._best_mib, remaining_mib)
        if self._stalls >= self.ladder.stall_passes and self.stalled_at_s is None:
            self.stalled_at_s = elapsed_s
