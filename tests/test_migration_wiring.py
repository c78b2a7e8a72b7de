"""The migration cost model wired into the planner, the executor and the report: `[migration]
measurements` loads the learned correction; the sequencer's figures and the optimizer's move cost come
from the model at each VM's forecast dirty rate; a VM that cannot move live now is held (unless it must
move) and listed with when it could."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optimize_instances import host, instance, vm
from typer.testing import CliRunner

from advisor import stages
from advisor.cli import app
from advisor.config import Config, PlanSettings, parse_config
from advisor.core import Cluster, Forecast, MigrationReason, Plan
from advisor.errors import AdvisorError, InputError
from advisor.migration import (
    MigrationCorrection,
    MigrationPrediction,
    fit_correction,
    max_live_dirty_mibps,
    predict_migrations,
    predict_moves,
)
from advisor.migration.live_window import (
    LiveWindow,
    cannot_move_live,
    hourly_median_dirty,
    live_windows,
    next_live_hour,
)
from advisor.optimize.demand import demand_of
from advisor.optimize.problem import build_problem
from advisor.optimize.sequencer import sequence
from advisor.report import render_report

DATA = Path(__file__).parent.parent / "data" / "migrations.csv"
BW, DOWNTIME = 1000.0, 300.0
runner = CliRunner()


@pytest.fixture(scope="module")
def correction() -> MigrationCorrection:
    return fit_correction(DATA)


def moves_of(
    fc: Forecast, cluster: Cluster, correction: MigrationCorrection | None = None
) -> dict[str, MigrationPrediction]:
    return predict_moves(
        {v.name: v.mem_mib for v in cluster.vms},
        {n: f.dirty_mibps for n, f in fc.vms.items()},
        BW,
        DOWNTIME,
        correction,
    )


def inputs(mem_mib: list[float], dirty: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "mem_mib": mem_mib,
            "working_set_mib": np.nan,
            "dirty_mibps": dirty,
            "bandwidth_mibps": BW,
            "max_downtime_ms": DOWNTIME,
            "auto_converge": False,
            "xbzrle": False,
        }
    )


def cfg_with(tmp_path: Path, **migration: str) -> Config:
    """Every move allowed (the default cap is half the VMs: one of these tiny clusters' three)."""
    return parse_config(
        {"output": {"dir": str(tmp_path)}, "plan": {"migration_cap": 1.0}, "migration": migration}
    )


# -- configuration -------------------------------------------------------------------------------------


def test_migration_section_defaults_to_the_analytic_model_and_rejects_unknown_keys() -> None:
    assert Config().migration.measurements == ""
    with pytest.raises(AdvisorError, match="migration.measurments: unknown key"):
        parse_config({"migration": {"measurments": "x.csv"}})


def test_a_missing_or_malformed_measurements_file_is_one_line_naming_it(tmp_path: Path) -> None:
    cluster, fc = instance([host("h1"), host("h2")], [vm("a", "h1")], {"a": 1.0})
    missing = tmp_path / "nope.csv"
    with pytest.raises(InputError, match=f"{missing}: no such migrations file"):
        stages.plan(cfg_with(tmp_path, measurements=str(missing)), tmp_path, cluster, fc, moved_at={})
    bad = tmp_path / "bad.csv"
    bad.write_text(DATA.read_text().splitlines()[0] + "\n1,2,three,4,5,false,false,1,1,1,1,true\n")
    with pytest.raises(InputError, match=rf"{bad}: line 2: column dirty_mibps: 'three' is not valid"):
        stages.plan(cfg_with(tmp_path, measurements=str(bad)), tmp_path, cluster, fc, moved_at={})


def test_apply_refuses_a_bad_measurements_file_before_connecting(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cluster, fc = instance([host("h1"), host("h2")], [vm("a", "h1")], {"a": 1.0})
    stages.plan(cfg_with(out), out, cluster, fc, moved_at={})
    config = tmp_path / "advisor.toml"
    config.write_text(
        '[collect.libvirt]\nhosts = [{name = "h1", uri = "qemu+tcp://127.0.0.1:1/system"}]\n'
        f'[migration]\nmeasurements = "{tmp_path / "gone.csv"}"\n'
    )
    result = runner.invoke(app, ["apply", "-c", str(config), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "gone.csv: no such migrations file" in result.output and "unreachable" not in result.output
    assert "Traceback" not in result.output


# -- the sequencer's figures ---------------------------------------------------------------------------


def test_sequencer_without_predictions_batches_the_analytic_model() -> None:
    cluster, fc = instance(
        [host("h1"), host("h2")],
        [vm("a", "h1", 8), vm("b", "h1", 16)],
        {"a": 1.0, "b": 1.0},
        dirty={"b": 300},
    )
    result = sequence(
        cluster, demand_of(cluster, fc), cluster.placement, {"a": "h2", "b": "h2"}, PlanSettings()
    )
    expected = predict_migrations(inputs([8192.0, 16384.0], [20.0, 300.0]))
    got = {m.vm: m for m in result.migrations}
    for i, name in enumerate(("a", "b")):
        assert got[name].predicted_time_s == pytest.approx(expected["total_time_s"][i])
        assert got[name].predicted_mib == pytest.approx(expected["transferred_mib"][i])
        assert got[name].converges == expected["converges"][i]


def test_sequencer_uses_the_learned_model_when_configured(
    tmp_path: Path, correction: MigrationCorrection
) -> None:
    hosts = [host("h1"), host("h2", state="maintenance")]
    vms = [vm("a", "h2", 4), vm("b", "h2", 16), vm("c", "h2", 2)]
    cluster, fc = instance(hosts, vms, {"a": 1.0, "b": 2.0, "c": 0.5}, dirty={"a": 5, "b": 120, "c": 40})
    learned = stages.plan(cfg_with(tmp_path, measurements=str(DATA)), tmp_path, cluster, fc, moved_at={})
    analytic = stages.plan(cfg_with(tmp_path), tmp_path, cluster, fc, moved_at={})
    assert len(learned.migrations) == 3  # the maintenance host is emptied
    frame = inputs([4096.0, 16384.0, 2048.0], [5.0, 120.0, 40.0])
    want = predict_migrations(frame, correction).set_axis(["a", "b", "c"])
    plain = predict_migrations(frame).set_axis(["a", "b", "c"])
    for m in learned.migrations:
        assert m.predicted_time_s == pytest.approx(want.loc[m.vm, "total_time_s"])
        assert m.predicted_downtime_ms == pytest.approx(want.loc[m.vm, "downtime_ms"])
        assert m.predicted_mib == pytest.approx(want.loc[m.vm, "transferred_mib"])
        assert m.converges == want.loc[m.vm, "converges"]
        assert m.predicted_time_s != pytest.approx(plain.loc[m.vm, "total_time_s"], rel=0.01)
    for m in analytic.migrations:
        assert m.predicted_time_s == pytest.approx(plain.loc[m.vm, "total_time_s"])


# -- the move cost --------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    mem_gib=st.sampled_from([1, 4, 16]),
    low=st.floats(0, 600),
    more=st.floats(1, 400),
)
def test_a_converging_move_transfers_more_the_faster_its_guest_dirties(
    mem_gib: int, low: float, more: float
) -> None:
    moves = predict_moves(
        {"lo": mem_gib * 1024.0, "hi": mem_gib * 1024.0}, {"lo": low, "hi": low + more}, BW, DOWNTIME
    )
    if moves["hi"].converges:
        assert moves["hi"].transferred_mib >= moves["lo"].transferred_mib >= mem_gib * 1024.0


def test_move_cost_charges_the_predicted_transfer() -> None:
    cluster, fc = instance(
        [host("h1"), host("h2")],
        [vm("a", "h1"), vm("b", "h2")],
        {"a": 1.0, "b": 1.0},
        dirty={"a": 0, "b": 400},
    )
    plain = build_problem(cluster, fc, PlanSettings())
    priced = build_problem(cluster, fc, PlanSettings(), moves=moves_of(fc, cluster))
    cost = {item.vms[0]: item.vm_cost[0] for item in priced.items}
    assert {item.vms[0]: item.vm_cost[0] for item in plain.items} == {
        "a": pytest.approx(6.0),
        "b": pytest.approx(6.0),
    }
    assert cost["a"] == pytest.approx(6.0)  # an idle guest sends its memory once
    assert cost["b"] > 8.0  # 400 MiB/s dirtied meanwhile: about 13 GiB instead of 8


@pytest.mark.parametrize("busy", ["a", "z"])
def test_of_two_equal_vms_the_plan_moves_the_one_that_dirties_less(tmp_path: Path, busy: str) -> None:
    cluster, fc = instance(
        [host("h1"), host("h2")], [vm("a", "h1"), vm("z", "h2")], {"a": 1.0, "z": 1.0}, dirty={busy: 400}
    )
    plan = stages.plan(cfg_with(tmp_path), tmp_path, cluster, fc, moved_at={})
    assert [m.vm for m in plan.migrations] == ["z" if busy == "a" else "a"]
    assert plan.cannot_move_live == ()  # 400 MiB/s still converges at 1000 MiB/s


# -- VMs that cannot move live now ---------------------------------------------------------------------


def test_a_vm_that_cannot_move_live_stays_unless_its_host_must_be_emptied(tmp_path: Path) -> None:
    hosts = [host("h1"), host("h2"), host("h3", state="maintenance")]
    vms = [vm("a", "h1"), vm("hot", "h2"), vm("evac", "h3")]
    dirty = {"a": 1.0, "hot": 1500.0, "evac": 1500.0}
    cluster, fc = instance(hosts, vms, {"a": 1.0, "hot": 1.0, "evac": 1.0}, dirty=dirty)
    plan = stages.plan(cfg_with(tmp_path), tmp_path, cluster, fc, moved_at={})
    moved = {m.vm: m for m in plan.migrations}
    assert "hot" not in moved and moved["a"].destination == "h2"  # consolidated around the held VM
    assert moved["evac"].reason == MigrationReason.MAINTENANCE and not moved["evac"].converges
    listed = {w["vm"]: w for w in plan.cannot_move_live}
    assert set(listed) == {"evac", "hot"}
    assert listed["hot"]["moved"] == "" and listed["evac"]["moved"] == "maintenance"
    assert listed["hot"]["max_live_dirty_mibps"] == pytest.approx(max_live_dirty_mibps(8192, BW, DOWNTIME))
    assert Plan.from_json(plan.to_json()) == plan


def _history(now: datetime, per_hour: dict[int, list[float]], default: float) -> pd.DataFrame:
    rows = []
    for day in range(1, 4):
        for hour in range(24):
            base = (now - timedelta(days=day)).replace(hour=hour, minute=0, second=0)
            for k, rate in enumerate(per_hour.get(hour, [default] * 3)):
                rows.append({"vm": "v", "ts": base + timedelta(minutes=5 * k), "dirty_mibps": rate})
    return pd.DataFrame(rows).assign(cpu_cores=1.0, mem_mib=1024.0)


def test_the_window_is_the_next_hour_whose_median_dirty_rate_is_below_the_limit() -> None:
    now = datetime(2026, 3, 1, 22, 30, tzinfo=UTC)
    # hour 1: mean far above 100, median 10 (the median is what counts); hour 4: all low
    history = _history(now, {1: [10, 10, 50_000], 4: [5, 5, 5]}, default=900)
    medians = hourly_median_dirty(history, ["v"])["v"]
    assert medians[1] == 10 and medians[4] == 5 and medians[12] == 900
    assert next_live_hour(medians, 100.0, now) == (1, 3)  # 23:00, 00:00, then 01:00
    assert next_live_hour(medians, 8.0, now) == (4, 6)
    assert next_live_hour(medians, 4.0, now) is None
    assert next_live_hour(np.full(24, np.nan), 1e9, now) is None  # no history: no window
    assert next_live_hour(medians, 1000.0, now) == (23, 1)


def test_live_windows_of_a_cluster_from_its_history() -> None:
    cluster, fc = instance([host("h1"), host("h2")], [vm("v", "h1"), vm("w", "h2")], {"v": 1.0, "w": 1.0})
    fc = replace(
        fc,
        made_at=datetime(2026, 3, 1, 22, 30, tzinfo=UTC),
        vms={**fc.vms, "v": replace(fc.vms["v"], dirty_mibps=1500.0)},
    )
    moves = predict_moves({"v": 8192.0, "w": 8192.0}, {"v": 1500.0, "w": 20.0}, BW, DOWNTIME)
    held = cannot_move_live(cluster, moves)
    assert held == ["v"]
    history = _history(fc.made_at, {3: [50, 60, 70]}, default=1500)
    (window,) = live_windows(cluster, fc, held, history, BW, DOWNTIME)
    assert (window.vm, window.host, window.dirty_mibps) == ("v", "h1", 1500.0)
    assert (window.next_hour_utc, window.wait_h) == (3, 5) and window.when == "from 03:00 UTC (in 5 h)"
    assert window.hours_seen == 24
    (never,) = live_windows(cluster, fc, held, _history(fc.made_at, {}, default=1500), BW, DOWNTIME)
    assert never.when == "not within a day"
    (none,) = live_windows(cluster, fc, held, None, BW, DOWNTIME)
    assert none.when == "no dirty-rate history" and none.hours_seen == 0
    assert LiveWindow.from_dict(window.to_dict()) == window
    with pytest.raises(InputError, match="cannot_move_live entry"):
        LiveWindow.from_dict({"vm": "v"})


def test_report_lists_the_vms_that_cannot_move_live(tmp_path: Path) -> None:
    hosts = [host("h1"), host("h2")]
    cluster, fc = instance(
        hosts, [vm("a", "h1"), vm("hot", "h2")], {"a": 1.0, "hot": 1.0}, dirty={"hot": 1500}
    )
    plan = stages.plan(cfg_with(tmp_path), tmp_path, cluster, fc, moved_at={})
    page = render_report(cluster, fc, plan)
    assert 'id="cannot-move-live-table"' in page and "hot" in page and "no dirty-rate history" in page
    quiet = render_report(cluster, fc, replace(plan, cannot_move_live=()))
    assert 'id="all-move-live"' in quiet and 'id="cannot-move-live-table"' not in quiet
