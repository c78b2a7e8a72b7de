"""Measured pre-copy live migrations on the test bed: the data the migration-cost model learns from.

    sudo .venv/bin/python bench/migrations.py --out data/migrations.csv --seed 1 --cells 40
    sudo .venv/bin/python bench/migrations.py --out data/migrations-test.csv --seed 2 --cells 12
    sudo .venv/bin/python bench/migrations.py --out data/migrations-test2.csv --seed 3 --cells 12
    sudo .venv/bin/python bench/migrations.py --out data/migrations-test3.csv --seed 4 --cells 12
    sudo .venv/bin/python bench/migrations.py --out data/migrations-quiet.csv --seed 5 --cells 40
    sudo .venv/bin/python bench/migrations.py --out data/migrations-quiet-test.csv --seed 6 --cells 12
    sudo .venv/bin/python bench/migrations.py --out /tmp/smoke.csv --quick

(the committed files: 200 training migrations in 79-85 min, 60 held-out ones in 22-32 min; the seed-5
and seed-6 sweeps ran on an otherwise quiet machine, the others beside other jobs).

Each cell (guest memory, working set, dirtier rate) is drawn at random from the seed, booted once on
host A, then migrated A -> B -> A ... (peer-to-peer, over the bed's veth) once per variant (bandwidth cap,
max downtime, auto-converge, xbzrle), so different seeds give different cells and no migration appears in
two files. Before every migration the dirty rate is measured on the source with QEMU's page-sampling
calculation (10 000 pages per GiB, the mean of 3 one-second readings; libvirt's own API samples only
512 pages per GiB). A migration still running at its abort deadline
(advisor.migration.abort_deadline_s: 20 s + 1.5 x memory / bandwidth) is aborted and written with
converged=False and the job statistics of the last sample before the abort (no downtime). After every
migration the guest's own memory check must stay clean (heartbeats bad == 0): a row where it is not is
dropped and reported. One guest at a time (the machine has 2 cores). A last column, `loadavg_1m`
(the machine's 1-minute load average before the migration), is for diagnosis only: no model reads it
(the seed-1 to seed-3 files predate it), and data/migrations-test3.csv is the first file to carry it.

Progress goes to stdout and to `<out>.progress` (one JSON line per planned migration, written or
dropped), which `--append` reads to continue an interrupted sweep; a finished sweep deletes it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu

from advisor.migration import MEASURED_COLUMNS, abort_deadline_s, default_xbzrle_cache_mib
from testbed.bed import Bed, running_bed
from testbed.guest import GuestSpec, heartbeats

MEMORIES_MIB = (256, 512, 1024)
WS_SHARES = (0.0625, 0.125, 0.25, 0.5, 0.75)
BANDWIDTHS_MIBPS = (16, 32, 64, 128)
DOWNTIMES_MS = (25, 50, 100, 300, 1000)
GUEST_RESERVE_MIB = 96  # kernel and initramfs: the dirtier's working set must leave this free
MAX_FIRST_PASS_S = 32.0  # bandwidths that need longer to copy the whole memory once are not drawn
SAMPLE_PAGES_PER_GIB = 10_000
DIRTY_READINGS = 3
POLL_S = 0.5
FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    | libvirt.VIR_MIGRATE_PEER2PEER
)
MIB = 1024 * 1024
# After the measured columns, read by no model (see the module docstring): the per-migration fixed
# cost moved with the machine's load between sweeps (docs/benchmarks.md, issue 7).
DIAGNOSTIC_COLUMNS = ("loadavg_1m",)


@dataclass(frozen=True)
class Cell:
    mem_mib: int
    ws_mib: int
    rate_mibps: int


@dataclass(frozen=True)
class Variant:
    bandwidth_mibps: int
    max_downtime_ms: int
    auto_converge: bool
    xbzrle: bool


def sweep_plan(seed: int, cells: int, variants: int) -> list[tuple[Cell, list[Variant]]]:
    """Random cells and variants; a dirtier rate is drawn log-uniformly so that both slow guests and
    guests outrunning the link appear."""
    rng = random.Random(seed)
    plan = []
    for _ in range(cells):
        mem = rng.choice(MEMORIES_MIB)
        shares = [s for s in WS_SHARES if 16 <= s * mem <= mem - GUEST_RESERVE_MIB]
        ws = int(rng.choice(shares) * mem)
        rate = max(1, round(10 ** rng.uniform(0.3, 2.1)))  # 2 .. 125 MiB/s
        bandwidths = [b for b in BANDWIDTHS_MIBPS if mem / b <= MAX_FIRST_PASS_S]
        chosen = []
        for _ in range(variants):
            option = rng.random()
            chosen.append(
                Variant(
                    bandwidth_mibps=rng.choice(bandwidths),
                    max_downtime_ms=rng.choice(DOWNTIMES_MS),
                    auto_converge=option < 0.2,
                    xbzrle=0.2 <= option < 0.4,
                )
            )
        plan.append((Cell(mem, ws, rate), chosen))
    return plan


def measure_dirty_rate(dom: libvirt.virDomain, readings: int = DIRTY_READINGS) -> float:
    """Mean of `readings` one-second page-sampling readings, MiB/s."""
    values = []
    for _ in range(readings):
        _qmp(dom, "calc-dirty-rate", {"calc-time": 1, "sample-pages": SAMPLE_PAGES_PER_GIB})
        deadline = time.monotonic() + 10
        while True:
            time.sleep(0.2)
            answer = _qmp(dom, "query-dirty-rate")
            if answer.get("status") == "measured":
                values.append(float(answer["dirty-rate"]))
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"dirty-rate calculation on {dom.name()} never finished")
    return sum(values) / len(values)


def _qmp(dom: libvirt.virDomain, command: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"execute": command}
    if arguments:
        message["arguments"] = arguments
    reply = json.loads(libvirt_qemu.qemuMonitorCommand(dom, json.dumps(message), 0))
    return dict(reply.get("return") or {})


def migrate(
    bed: Bed,
    conns: dict[str, libvirt.virConnect],
    name: str,
    src: str,
    dst: str,
    cell: Cell,
    variant: Variant,
) -> dict[str, Any]:
    """One live migration src -> dst, aborted at its deadline; the measured row (no dirty rate yet)."""
    dom = conns[src].lookupByName(name)
    dom.migrateSetMaxDowntime(variant.max_downtime_ms)
    params: dict[str, Any] = {
        libvirt.VIR_MIGRATE_PARAM_URI: bed.hosts[dst].migration_uri,
        libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: variant.bandwidth_mibps,
    }
    flags = FLAGS
    if variant.auto_converge:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
        params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL] = 20
        params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT] = 10
    if variant.xbzrle:
        flags |= libvirt.VIR_MIGRATE_COMPRESSED
        params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] = "xbzrle"
        params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION_XBZRLE_CACHE] = (
            int(default_xbzrle_cache_mib(cell.mem_mib)) * MIB
        )
    failure: list[libvirt.libvirtError] = []

    def run() -> None:
        try:
            dom.migrateToURI3(bed.hosts[dst].peer_uri, params, flags)
        except libvirt.libvirtError as e:
            failure.append(e)

    deadline = abort_deadline_s(cell.mem_mib, variant.bandwidth_mibps)
    worker = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    worker.start()
    last: dict[str, Any] = {}
    aborted = False
    while worker.is_alive():
        worker.join(POLL_S)
        if aborted or not worker.is_alive():
            continue
        try:
            sample = dom.jobStats()
        except libvirt.libvirtError:
            continue
        if sample.get("type") == libvirt.VIR_DOMAIN_JOB_UNBOUNDED:
            last = sample
        elapsed = last.get("time_elapsed", 0) / 1000.0 if last else time.monotonic() - started
        if elapsed >= deadline:
            try:
                dom.abortJob()
                aborted = True
            except libvirt.libvirtError:
                pass  # finished meanwhile
    if failure and not aborted:
        raise RuntimeError(f"migration {src}->{dst} failed: {failure[0].get_error_message()}")
    if failure:
        return {
            "total_time_s": last.get("time_elapsed", 0) / 1000.0,
            "downtime_ms": "",
            "transferred_mib": last.get("memory_processed", 0) / MIB,
            "iterations": last.get("memory_iteration", 0),
            "converged": False,
        }
    done = conns[dst].lookupByName(name).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    return {
        "total_time_s": done["time_elapsed"] / 1000.0,
        "downtime_ms": done["downtime"],
        "transferred_mib": done["memory_processed"] / MIB,
        "iterations": done["memory_iteration"],
        "converged": True,
    }


def memory_intact(bed: Bed, letter: str, name: str, after_beat: int, timeout_s: float = 30.0) -> bool:
    """The guest's next two heartbeats on `letter` (after heartbeat `after_beat`) found no lost page."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fresh = [b for b in heartbeats(bed.hosts[letter].serial_log(name)) if b.n > after_beat]
        if len(fresh) >= 2:
            return all(b.bad == 0 for b in fresh)
        time.sleep(0.5)
    return False


def last_beat(bed: Bed, letter: str, name: str) -> int:
    beats = heartbeats(bed.hosts[letter].serial_log(name))
    return beats[-1].n if beats else 0


class Sweep:
    """The CSV and its progress file; rows are flushed one by one, so an interruption loses one row."""

    columns = [*MEASURED_COLUMNS, *DIAGNOSTIC_COLUMNS]

    def __init__(self, out: Path, append: bool) -> None:
        self.out = out
        self.progress = out.with_name(out.name + ".progress")
        self.done: set[str] = set()
        fresh = not (append and out.exists())
        if fresh:
            self.progress.unlink(missing_ok=True)
        elif not self.progress.exists():
            raise SystemExit(f"{out}: no {self.progress.name} beside it (a finished sweep): not appending")
        else:
            self.done = {json.loads(line)["key"] for line in self.progress.read_text().splitlines() if line}
            with open(out, newline="") as f:
                header = next(csv.reader(f), [])
            if header != self.columns:
                raise SystemExit(f"{out}: its columns are not this version's ({', '.join(self.columns)})")
        out.parent.mkdir(parents=True, exist_ok=True)
        self._csv = open(out, "w" if fresh else "a", newline="")  # noqa: SIM115 - closed in close()
        self._writer = csv.DictWriter(self._csv, fieldnames=self.columns)
        if fresh:
            self._writer.writeheader()
            self._csv.flush()

    def record(self, key: str, row: dict[str, Any] | None, note: str) -> None:
        if row is not None:
            self._writer.writerow(row)
            self._csv.flush()
        with open(self.progress, "a") as f:
            f.write(json.dumps({"key": key, "written": row is not None, "note": note}) + "\n")
        self.done.add(key)

    def close(self, finished: bool) -> None:
        self._csv.close()
        if finished:
            self.progress.unlink(missing_ok=True)


@contextmanager
def connections(bed: Bed) -> Iterator[dict[str, libvirt.virConnect]]:
    conns = {letter: bed.connect(letter) for letter in bed.hosts}
    try:
        yield conns
    finally:
        for conn in conns.values():
            conn.close()


def run_cell(
    bed: Bed,
    conns: dict[str, libvirt.virConnect],
    sweep: Sweep,
    index: int,
    cell: Cell,
    variants: list[Variant],
    seed: int,
    counter: dict[str, float],
) -> None:
    todo = [(j, v) for j, v in enumerate(variants) if f"{seed}:{index}:{j}" not in sweep.done]
    if not todo:
        return
    name = f"mig{seed}x{index}"
    for letter in bed.hosts:
        bed.destroy_all(letter)
    bed.start_guest(
        "a", GuestSpec(name, mem_mib=cell.mem_mib, ws_mib=cell.ws_mib, rate_mibps=cell.rate_mibps)
    )
    bed.wait_heartbeats("a", name, count=2, timeout_s=120)
    here = "a"
    try:
        for j, variant in todo:
            key = f"{seed}:{index}:{j}"
            there = "b" if here == "a" else "a"
            dirty = measure_dirty_rate(conns[here].lookupByName(name))
            beat = last_beat(bed, here, name)
            load = os.getloadavg()[0]
            started = time.monotonic()
            try:
                measured = migrate(bed, conns, name, here, there, cell, variant)
            except RuntimeError as e:
                print(f"  {key}: {e}; cell abandoned", flush=True)
                sweep.record(key, None, str(e))
                return
            if measured["converged"]:
                here = there
            intact = memory_intact(bed, here, name, beat)
            row = {
                "mem_mib": cell.mem_mib,
                "working_set_mib": cell.ws_mib,
                "dirty_mibps": round(dirty, 2),
                "bandwidth_mibps": variant.bandwidth_mibps,
                "max_downtime_ms": variant.max_downtime_ms,
                "auto_converge": variant.auto_converge,
                "xbzrle": variant.xbzrle,
                "total_time_s": round(measured["total_time_s"], 3),
                "downtime_ms": measured["downtime_ms"],
                "transferred_mib": round(measured["transferred_mib"], 1),
                "iterations": measured["iterations"],
                "converged": measured["converged"],
                "loadavg_1m": round(load, 2),
            }
            counter["n"] += 1
            counter["wall"] = time.monotonic() - counter["start"]
            status = "ok" if intact else "MEMORY CHECK FAILED: row dropped"
            print(
                f"[{counter['n']:.0f}/{counter['total']:.0f} {counter['wall'] / 60:5.1f} min] {key} "
                f"mem={cell.mem_mib} ws={cell.ws_mib} rate={cell.rate_mibps} dirty={dirty:.1f} "
                f"bw={variant.bandwidth_mibps} dt={variant.max_downtime_ms} ac={variant.auto_converge:d} "
                f"xb={variant.xbzrle:d} -> {'conv' if measured['converged'] else 'ABORT'} "
                f"{measured['total_time_s']:.1f}s dt={measured['downtime_ms']}ms "
                f"{measured['transferred_mib']:.0f}MiB it={measured['iterations']} "
                f"({time.monotonic() - started:.0f}s) load={load:.1f} {status}",
                flush=True,
            )
            sweep.record(key, row if intact else None, status)
            if not intact:
                return  # a guest that lost pages is no base for the next variant
    finally:
        for letter in bed.hosts:
            bed.destroy_all(letter)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="CSV to write (bench/migrations.py columns)")
    parser.add_argument("--seed", type=int, default=1, help="draws the cells and variants")
    parser.add_argument("--cells", type=int, default=36, help="guests booted (one cell each)")
    parser.add_argument("--variants", type=int, default=5, help="migrations per cell")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 cells x 2 migrations")
    parser.add_argument("--append", action="store_true", help="continue an interrupted sweep into --out")
    parser.add_argument(
        "--bed", type=Path, default=Path("/tmp/advisor-migrations-bed"), help="bed scratch dir"
    )
    args = parser.parse_args(argv)
    cells, variants = (2, 2) if args.quick else (args.cells, args.variants)
    plan = sweep_plan(args.seed, cells, variants)
    sweep = Sweep(args.out, args.append)
    total = sum(len(v) for _, v in plan)
    remaining = sum(
        1
        for i, (_, vs) in enumerate(plan)
        for j in range(len(vs))
        if f"{args.seed}:{i}:{j}" not in sweep.done
    )
    print(
        f"{total} migrations planned ({remaining} to run) in {cells} cells, seed {args.seed} -> {args.out}",
        flush=True,
    )
    counter = {"n": 0.0, "total": float(remaining), "start": time.monotonic(), "wall": 0.0}
    finished = False
    try:
        with running_bed(args.bed / f"bed{args.seed}") as bed, connections(bed) as conns:
            for index, (cell, cell_variants) in enumerate(plan):
                run_cell(bed, conns, sweep, index, cell, cell_variants, args.seed, counter)
        finished = True
    finally:
        sweep.close(finished)
    wall = time.monotonic() - counter["start"]
    print(f"done: {counter['n']:.0f} migrations in {wall / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
