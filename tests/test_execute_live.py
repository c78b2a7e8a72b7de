"""The live executor: its pure parts (VM policy, the escalation ladder, preflight checks) and, on the real
two-host bed, a plan applied end to end: a live migration, a storage migration and a cold migration, two
of them in one wave at once, each guest intact where it lands and every step in the journal."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import libvirt
import pytest
from applybed import bed_config, bed_plan, bed_settings, host_of, intact, write_config
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from advisor import files
from advisor.cli import app
from advisor.config import ApplySettings
from advisor.core import (
    VM,
    Bounds,
    Cluster,
    Host,
    HostState,
    Migration,
    MigrationReason,
    Plan,
    PlanFigures,
    PlanStatus,
)
from advisor.errors import InputError
from advisor.execute.journal import Journal, MigrationRecord, MigrationState
from advisor.execute.ladder import Escalation, Ladder, Rung, ladder_for, vm_policy
from advisor.execute.preflight import capacity_problems, plan_problems, resume_problems, stale_reason
from advisor.migration import predict_migration
from advisor.virt.inventory import NAMESPACE
from testbed.bed import Bed
from testbed.guest import GuestSpec

runner = CliRunner()


# -- VM policy and the ladder --------------------------------------------------------------------------


def _vm(**labels: str) -> VM:
    return VM("v", "h1", 1, 1024, labels=labels)


def test_vm_labels_set_downtime_limit_and_postcopy() -> None:
    base = ApplySettings(max_downtime_ms=300, max_downtime_limit_ms=1000, allow_postcopy=False)
    plain = vm_policy(_vm(), base)
    assert (plain.downtime_ms, plain.downtime_limit_ms, plain.postcopy) == (300, 1000, False)
    strict = vm_policy(_vm(max_downtime_ms="100", postcopy="allow"), base)
    assert (strict.downtime_ms, strict.downtime_limit_ms, strict.postcopy) == (100, 100, True)
    assert not vm_policy(_vm(postcopy="deny"), base.model_copy(update={"allow_postcopy": True})).postcopy
    for bad in ({"max_downtime_ms": "soon"}, {"max_downtime_ms": "-5"}, {"postcopy": "maybe"}):
        with pytest.raises(InputError, match="VM v: label"):
            vm_policy(_vm(**bad), base)


def test_ladder_has_only_the_rungs_the_vm_allows() -> None:
    s = ApplySettings(max_downtime_ms=300, max_downtime_limit_ms=300, escalate_after_s=5)
    prediction = predict_migration(1024, 10, 100, 300, deadline_factor=1.5, deadline_slack_s=10)
    assert ladder_for(vm_policy(_vm(), s), prediction, 0, s).rungs == (Rung.ABORT,)
    both = ladder_for(vm_policy(_vm(max_downtime_ms="900", postcopy="allow"), s), prediction, 0, s)
    assert both.rungs == (Rung.DOWNTIME, Rung.POSTCOPY, Rung.ABORT)
    assert both.soft_s == pytest.approx(prediction.deadline_s)
    assert both.abort_s >= max(prediction.abort_s, both.soft_s + 2 * s.escalate_after_s)
    with_disk = ladder_for(vm_policy(_vm(), s), prediction, 2048, s)
    assert with_disk.soft_s > prediction.deadline_s and with_disk.abort_s > prediction.abort_s


rung_sets = st.sampled_from(
    [
        (Rung.ABORT,),
        (Rung.DOWNTIME, Rung.ABORT),
        (Rung.POSTCOPY, Rung.ABORT),
        (Rung.DOWNTIME, Rung.POSTCOPY, Rung.ABORT),
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    rungs=rung_sets,
    soft=st.floats(1, 100),
    extra=st.floats(0, 100),
    step=st.floats(0.5, 20),
    polls=st.lists(st.floats(0.01, 15), min_size=1, max_size=200),
)
def test_escalation_fires_rungs_in_order_once_and_never_early(
    rungs: tuple[Rung, ...], soft: float, extra: float, step: float, polls: list[float]
) -> None:
    ladder = Ladder(soft, step, soft + extra, rungs, stall_passes=0)
    esc = Escalation(ladder)
    t = 0.0
    for dt in polls:
        t += dt
        esc.observe(t)
    fired = esc.fired
    assert [r for _, r in fired] == list(rungs[: len(fired)])
    times = [at for at, _ in fired]
    assert all(b - a >= step - 1e-9 for a, b in zip(times, times[1:], strict=False))
    if fired:
        assert times[0] >= soft
    for at, rung in fired:
        if rung == Rung.ABORT:
            assert at >= ladder.abort_s
    if Rung.POSTCOPY in [r for _, r in fired]:
        assert Rung.ABORT not in [r for _, r in fired], "an abort after post-copy"
    # a poll past every due time has climbed the whole ladder (or stopped at post-copy)
    if t >= ladder.abort_s + len(rungs) * (step + 15):
        assert fired and fired[-1][1] in (Rung.ABORT, Rung.POSTCOPY)


def test_passes_without_progress_start_the_ladder_before_the_soft_deadline() -> None:
    ladder = Ladder(soft_s=100, step_s=5, abort_s=200, rungs=(Rung.DOWNTIME, Rung.ABORT), stall_passes=2)
    esc = Escalation(ladder)
    assert esc.observe(4, iteration=1, remaining_mib=256) is None
    assert esc.observe(8, iteration=2, remaining_mib=128) is None
    assert esc.observe(12, iteration=3, remaining_mib=127) is None  # one pass without progress
    assert esc.observe(16, iteration=4, remaining_mib=126) == Rung.DOWNTIME  # two: climb now
    assert esc.observe(20) is None
    assert esc.observe(21) == Rung.ABORT  # stalled: one step later, not at the hard deadline
    progressing = Escalation(ladder)
    for i, (t, mib) in enumerate([(4, 256), (8, 128), (12, 60), (16, 30)], start=1):
        assert progressing.observe(t, iteration=i, remaining_mib=mib) is None


def test_a_postcopy_switch_libvirt_refuses_leaves_the_abort_rung() -> None:
    ladder = Ladder(soft_s=10, step_s=5, abort_s=10, rungs=(Rung.POSTCOPY, Rung.ABORT), stall_passes=0)
    switched = Escalation(ladder)
    assert switched.observe(10) == Rung.POSTCOPY
    assert switched.done and switched.observe(100) is None  # post-copy cannot be aborted
    refused = Escalation(ladder)
    assert refused.observe(10) == Rung.POSTCOPY
    refused.refuse(Rung.POSTCOPY)
    assert not refused.done and refused.observe(14) is None
    assert refused.observe(15) == Rung.ABORT and refused.done


# -- preflight ------------------------------------------------------------------------------------------


def _cluster() -> Cluster:
    hosts = (Host("h1", 8, 4096), Host("h2", 8, 2048), Host("h3", 8, 4096, state=HostState.MAINTENANCE))
    vms = (VM("a", "h1", 1, 1024), VM("b", "h1", 1, 1024), VM("c", "h2", 1, 1024, movable=False))
    return Cluster("c1", hosts, vms)


def _plan(cluster: Cluster, moves: list[tuple[str, str, str, int]]) -> Plan:
    fig = PlanFigures(1, 1.0, 0.1, 0.1, 0)
    migrations = tuple(
        Migration(vm, s, d, MigrationReason.BALANCE, w, 1, 1, 1, True) for vm, s, d, w in moves
    )
    return Plan(
        cluster.name,
        cluster.fingerprint(),
        "f",
        datetime.now(UTC),
        "balance",
        PlanStatus.FEASIBLE,
        "t",
        {},
        migrations,
        (),
        fig,
        fig,
        Bounds(1, 1, 1.0),
    )


def test_preflight_refuses_moves_the_live_cluster_forbids() -> None:
    cluster = _cluster()
    running = {"a": True, "b": False, "c": True}
    plan = _plan(
        cluster,
        [
            ("a", "h1", "h3", 0),
            ("b", "h1", "h2", 0),
            ("c", "h2", "h1", 0),
            ("a", "h2", "h1", 1),
            ("ghost", "h1", "h2", 0),
        ],
    )
    problems = "\n".join(plan_problems(plan, cluster, running))
    assert "destination h3 is in maintenance" in problems
    assert "VM b is not running" in problems
    assert "VM c is marked not movable" in problems
    assert "wave 1 moves it h2 -> h1, but it will be on h3" in problems
    assert "VM ghost is not running on any host" in problems
    fine = _plan(cluster, [("a", "h1", "h2", 0)])
    assert plan_problems(fine, cluster, {"a": True}) == [] and stale_reason(fine, cluster) == ""
    resized = replace(cluster, vms=(replace(cluster.vms[0], mem_mib=2048), *cluster.vms[1:]))
    assert "stale plan" in stale_reason(fine, resized)


def test_capacity_counts_a_moving_vm_on_both_hosts() -> None:
    cluster = _cluster()  # h2 (2048 MiB) runs c (1024)
    one = _plan(cluster, [("a", "h1", "h2", 0)])
    assert capacity_problems(one, cluster) == []
    two = _plan(cluster, [("a", "h1", "h2", 0), ("b", "h1", "h2", 0)])
    assert capacity_problems(two, cluster) == ["wave 0: destination h2 needs 3072 MiB, it has 2048 MiB"]
    assert capacity_problems(two, cluster, done=[1]) == []  # resume: b arrived already, only a comes
    later = _plan(cluster, [("a", "h1", "h2", 0), ("b", "h1", "h2", 1)])
    assert capacity_problems(later, cluster) == ["wave 1: destination h2 needs 3072 MiB, it has 2048 MiB"]


def _record(idx: int, vm: str, source: str, destination: str, state: MigrationState) -> MigrationRecord:
    return MigrationRecord(idx, vm, source, destination, 0, "live", state, 1, None, None, "", {})


def test_resume_checks_vms_are_where_the_journal_says_and_nothing_else_changed() -> None:
    stored = _cluster()
    done = [
        _record(0, "a", "h1", "h2", MigrationState.DONE),
        _record(1, "b", "h1", "h2", MigrationState.PENDING),
    ]
    live = stored.with_placement({"a": "h2"})
    assert resume_problems(stored, live, done) == []
    assert resume_problems(stored, stored, done) == ["VM a runs on h1, the journal has it on h2"]
    gone = replace(live, vms=live.vms[:2])
    assert "no longer running anywhere: c" in resume_problems(stored, gone, done)[0]
    resized = replace(live, vms=(replace(live.vms[0], vcpus=4), *live.vms[1:]))
    assert "the cluster changed" in resume_problems(stored, resized, done)[0]


# -- CLI without hosts ----------------------------------------------------------------------------------


def _plan_dir(tmp_path: Path) -> Path:
    cluster = _cluster()
    files.write_plan(tmp_path / files.PLAN_FILE, _plan(cluster, [("a", "h1", "h2", 0)]))
    return tmp_path


def test_apply_errors_are_one_line_and_never_show_a_password(tmp_path: Path) -> None:
    out = _plan_dir(tmp_path)
    result = runner.invoke(app, ["apply", "--dry-run", "--resume", "-o", str(out)])
    assert result.exit_code == 2 and "--resume" in result.output
    result = runner.invoke(app, ["apply", "-o", str(out)])
    assert result.exit_code == 2 and "collect.libvirt.hosts is empty" in result.output
    cfg = write_config(
        tmp_path / "advisor.toml",
        {
            "collect": {
                "libvirt": {
                    "hosts": [{"name": "h1", "uri": "qemu+tcp://ops:s3cret@127.0.0.1:1/system"}],
                    "timeout_s": 0.5,
                }
            }
        },
    )
    result = runner.invoke(app, ["apply", "-c", str(cfg), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "unreachable" in result.output and "s3cret" not in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 2
    assert b"s3cret" not in (out / "journal.sqlite").read_bytes()


# -- on the bed ----------------------------------------------------------------------------------------


@pytest.mark.bed
@pytest.mark.slow
def test_plan_applied_live_end_to_end(clean_bed: Bed, tmp_path: Path) -> None:
    """Wave 0: `mem` (memory only) and `disk` (a local qcow2 disk: storage migration) A -> B at once;
    wave 1: `cold` (marked not live-migratable, with a local disk) B -> A by shutdown, copy and start."""
    bed = clean_bed
    specs = {
        "mem": ("a", GuestSpec("mem", mem_mib=256, ws_mib=64, rate_mibps=5)),
        "disk": ("a", GuestSpec("disk", mem_mib=256, ws_mib=64, rate_mibps=5, disk_mib=32)),
        "cold": ("b", GuestSpec("cold", mem_mib=256, ws_mib=64, rate_mibps=5, disk_mib=16)),
    }
    for letter, spec in specs.values():
        bed.start_guest(letter, spec)
    cold = bed.connect("b").lookupByName("cold")
    flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
    cold.setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT,
        '<placement live_migratable="false"/>',
        "advisor",
        NAMESPACE,
        flags,
    )
    for letter, spec in specs.values():
        bed.wait_heartbeats(letter, spec.name, count=2)

    apply = {"bandwidth_mibps": 64, "concurrency": 2, "cold_shutdown_timeout_s": 2, "cold_force_off": True}
    plan = bed_plan(
        bed_config(bed, **apply), [("mem", "hostb", 0), ("disk", "hostb", 0), ("cold", "hosta", 1)]
    )
    files.write_plan(tmp_path / files.PLAN_FILE, plan)
    cfg_file = write_config(tmp_path / "advisor.toml", bed_settings(bed, **apply))
    result = runner.invoke(app, ["apply", "-c", str(cfg_file), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output

    report = json.loads((tmp_path / "apply.json").read_text())
    assert report["status"] == "done"
    moves = {m["vm"]: m for m in report["migrations"]}
    assert {vm: (m["mode"], m["state"]) for vm, m in moves.items()} == {
        "mem": ("live", "done"),
        "disk": ("storage", "done"),
        "cold": ("cold", "done"),
    }
    for vm in ("mem", "disk"):
        assert moves[vm]["stats"]["time_elapsed"] > 0 and moves[vm]["stats"]["memory_iteration"] >= 1
    assert moves["disk"]["stats"]["disk_total"] == 32 * 2**20

    for vm, landing in (("mem", "b"), ("disk", "b"), ("cold", "a")):
        assert intact(bed, vm) == landing
    for vm, src, dst in (("disk", "a", "b"), ("cold", "b", "a")):
        compare = subprocess.run(
            [
                "qemu-img",
                "compare",
                "-U",
                str(bed.hosts[src].image_path(vm)),
                str(bed.hosts[dst].image_path(vm)),
            ],
            capture_output=True,
            text=True,
        )
        assert compare.returncode == 0, compare.stdout + compare.stderr

    journal = Journal(tmp_path / "journal.sqlite")
    steps = journal.steps(1)
    for idx in range(3):
        phases = [s.phase for s in steps if s.idx == idx and s.step == "migrate"]
        assert phases == ["begin", "end"], f"migration {idx}: {phases}"
    calls = [(s.idx, s.phase) for s in steps if s.step == "migrate-to-uri"]
    assert calls[:2] in ([(0, "begin"), (1, "begin")], [(1, "begin"), (0, "begin")]), (
        "wave 0 ran one at a time"
    )
    assert [s.step for s in steps if s.idx == 2 and s.phase == "begin"] == [
        "migrate",
        "shutdown",
        "power-off",
        "copy-disk",
        "move-definition",
        "start",
    ]
    text = b"".join(p.read_bytes() for p in tmp_path.glob("journal.sqlite*"))
    assert b"qemu+" not in text and str(bed.root).encode() not in text, "a libvirt URI in the journal"
    assert host_of(bed, "mem") == "b"


# -- resume's reconciliation, on libvirt's test driver ----------------------------------------------------

NODE = """<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>8</cores><threads>1</threads><mhz>2000</mhz></cpu>
  <memory>8388608</memory>
  {domains}
</node>"""
DOMAIN = (
    "<domain type='test'><name>{}</name><memory>524288</memory><vcpu>1</vcpu>"
    "<os><type>hvm</type></os></domain>"
)


def test_resume_settles_each_interrupted_migration_by_where_libvirt_has_the_vm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The advisor died with four migrations in flight. libvirt's test driver plays the hosts (a real
    libvirt driver, minus migration: each VM is simply placed where that migration would have left it);
    only the connection helper is swapped, because the test driver has no keepalive."""
    from advisor.execute import hosts as hosts_module
    from advisor.execute.hosts import HostPool
    from advisor.execute.resume import reconcile
    from advisor.virt import inventory
    from advisor.virt.connection import start_event_loop
    from advisor.virt.inventory import HostConnection

    start_event_loop()
    for module in (hosts_module, inventory):
        monkeypatch.setattr(module, "connect", lambda uri, timeout_s: libvirt.open(uri))
    placed = {"h1": ["stayed", "twice"], "h2": ["moved", "twice"]}  # "cold": defined, shut off, on h2
    uris = {}
    for host, names in placed.items():
        node = tmp_path / f"{host}.xml"
        node.write_text(NODE.format(domains="".join(DOMAIN.format(n) for n in names)))
        uris[host] = f"test://{node}"
    pool = HostPool([HostConnection(h, u) for h, u in uris.items()], {}, {}, timeout_s=1)
    pool.open_all()
    pool.conn("h2").defineXML(DOMAIN.format("cold"))

    cluster = Cluster(
        "c",
        (Host("h1", 8, 8192), Host("h2", 8, 8192)),
        tuple(VM(n, "h1", 1, 512, live_migratable=n != "cold") for n in ("cold", "moved", "stayed", "twice")),
    )
    plan = _plan(cluster, [(n, "h1", "h2", 0) for n in ("stayed", "moved", "cold", "twice")])
    journal = Journal(tmp_path / "journal.sqlite")
    run = journal.begin_run(plan, cluster, {0: "live", 1: "live", 2: "cold", 3: "live"})
    for idx in range(4):
        journal.migration_started(run, idx, datetime.now(UTC), {})

    problems = reconcile(journal, run, pool, ApplySettings(), lambda _: None)
    states = {r.vm: r.state for r in journal.migrations(run)}
    assert states == {
        "stayed": MigrationState.PENDING,  # runs again with the rest of the plan
        "moved": MigrationState.DONE,  # never repeated
        "cold": MigrationState.DONE,  # its definition had moved: started where it now lives
        "twice": MigrationState.UNKNOWN,  # running on both: left for a person
    }
    assert pool.conn("h2").lookupByName("cold").isActive()
    assert len(problems) == 1 and "twice" in problems[0] and "not running on exactly one" in problems[0]
    pool.close()
