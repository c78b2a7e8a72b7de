"""Helpers for the live-apply tests on the test bed: the configuration that points `advisor apply` at the
bed's two hosts, a plan built for the bed's live cluster, the CLI as a subprocess, and the checks every
test ends with (each VM runs on exactly one host, its memory intact there)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import libvirt

from advisor.config import Config, parse_config
from advisor.core import Bounds, Migration, MigrationReason, Plan, PlanFigures, PlanStatus
from advisor.execute.journal import Journal
from advisor.virt.inventory import host_connections, read_inventory
from testbed.bed import Bed

ADVISOR = [sys.executable, "-c", "from advisor.cli import app; app(prog_name='advisor')"]


def bed_settings(bed: Bed, **apply: Any) -> dict[str, Any]:
    """[collect.libvirt] and [apply] for the bed: clients use the unix sockets, the daemons reach each
    other over the veth (peer-to-peer) and QEMU streams over it too."""
    a, b = bed.hosts["a"], bed.hosts["b"]
    return {
        "collect": {
            "libvirt": {
                "hosts": [{"name": h.name, "uri": h.uri} for h in (a, b)],
                "dirty_samples": 1,
            }
        },
        "apply": {
            "peer_uris": {h.name: h.peer_uri for h in (a, b)},
            "migration_uris": {h.name: h.migration_uri for h in (a, b)},
            **apply,
        },
    }


def bed_config(bed: Bed, **apply: Any) -> Config:
    return parse_config(bed_settings(bed, **apply), "bed")


def write_config(path: Path, settings: dict[str, Any]) -> Path:
    """The settings as a TOML file (tables of strings, numbers, booleans, string maps and host lists)."""
    lines: list[str] = []
    for section, table in settings.items():
        for sub, values in table.items():
            if isinstance(values, dict) and section == "collect":
                lines.append(f"[{section}.{sub}]")
                lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
            else:
                if f"[{section}]" not in lines:
                    lines.append(f"[{section}]")
                lines.append(f"{sub} = {_toml(values)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(_toml(v) for v in value) + "]"


def bed_plan(cfg: Config, moves: Sequence[tuple[str, str, int]]) -> Plan:
    """A plan for the bed's live cluster: (VM, destination host, wave) in order; each move starts where
    the one before it left the VM. Predictions and figures are placeholders: the executor predicts its
    deadlines itself, at its own bandwidth."""
    cluster = read_inventory(host_connections(cfg.collect.libvirt, cfg.power), cfg.collect.libvirt)
    placement = dict(cluster.placement)
    migrations = []
    for vm, destination, wave in moves:
        migrations.append(
            Migration(vm, placement[vm], destination, MigrationReason.BALANCE, wave, 10.0, 50.0, 256.0, True)
        )
        placement[vm] = destination
    figures = PlanFigures(2, 1.0, 0.1, 0.1, 0)
    return Plan(
        cluster=cluster.name,
        cluster_fingerprint=cluster.fingerprint(),
        forecast_fingerprint="bed",
        created_at=datetime.now(UTC),
        goal="balance",
        status=PlanStatus.FEASIBLE,
        solver="test",
        placement=placement,
        migrations=tuple(migrations),
        standby=(),
        before=figures,
        after=figures,
        bounds=Bounds(1, 1, 1.0),
    )


def advisor(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*ADVISOR, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )


def host_of(bed: Bed, vm: str) -> str:
    """The bed letter of the one host that runs `vm`; fails if it is lost, duplicated, or defined on a
    host that does not run it."""
    active, defined = [], []
    for letter in ("a", "b"):
        conn = bed.connect(letter)
        try:
            names = {d.name(): d for d in conn.listAllDomains()}
            if vm not in names:
                continue
            defined.append(letter)
            if names[vm].isActive():
                state = names[vm].state()[0]
                assert state == libvirt.VIR_DOMAIN_RUNNING, f"{vm} is in state {state} on host {letter}"
                active.append(letter)
        finally:
            conn.close()
    assert len(active) == 1, f"{vm} runs on {active or 'no host'}: lost or duplicated"
    assert defined == active, f"{vm} is defined on {defined} but runs on {active}"
    return active[0]


def intact(bed: Bed, vm: str, beats: int = 3) -> str:
    """Where `vm` runs, once it has written `beats` more heartbeats there, all with no lost page."""
    letter = host_of(bed, vm)
    seen = len(bed.wait_heartbeats(letter, vm, count=0))
    after = bed.wait_heartbeats(letter, vm, count=seen + beats, timeout_s=90)
    bad = [b for b in after if b.bad]
    assert not bad, f"{vm} lost dirty pages on host {letter}: {bad[:3]}"
    return letter


def other(letter: str) -> str:
    return "b" if letter == "a" else "a"


def migrate_begins(journal_path: Path, run_id: int = 1) -> dict[int, int]:
    """How often each migration's call was made: a repeated migration shows as 2."""
    journal = Journal(journal_path)
    try:
        counts: dict[int, int] = {}
        for s in journal.steps(run_id):
            if s.step == "migrate-to-uri" and s.phase == "begin" and s.idx is not None:
                counts[s.idx] = counts.get(s.idx, 0) + 1
        return counts
    finally:
        journal.close()


def wait_for_step(
    journal_path: Path,
    idx: int,
    step: str,
    ended: Callable[[], str | None],
    timeout_s: float = 120.0,
) -> None:
    """Until migration `idx` of run 1 has begun `step` (read from the journal, as any observer could).

    `ended` says how the apply doing the work ended (None while it runs): if it ends before the step
    begins, the wait fails at once with that, instead of timing out with nothing to go on."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if journal_path.exists():
            journal = Journal(journal_path)
            try:
                if any(s.step == step and s.phase == "begin" for s in journal.steps(1, idx)):
                    return
            except Exception:  # noqa: BLE001 - the run is not in the journal yet
                pass
            finally:
                journal.close()
        how = ended()
        if how is not None:
            raise AssertionError(f"migration {idx} did not begin {step}: the apply ended first ({how})")
        time.sleep(0.2)
    raise TimeoutError(f"migration {idx} did not begin {step} within {timeout_s:.0f} s (the apply runs on)")


def process_ended(process: subprocess.Popen[str]) -> Callable[[], str | None]:
    """`wait_for_step`'s probe for an `advisor` subprocess: its exit code and the end of its stderr."""

    def ended() -> str | None:
        if process.poll() is None:
            return None
        _, stderr = process.communicate()
        return f"exit {process.returncode}: {stderr[-2000:]}"

    return ended
