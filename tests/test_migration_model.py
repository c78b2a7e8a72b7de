"""The migration-cost model: the analytic pre-copy model's mechanics (working set, auto-converge, xbzrle),
the measured-data reader, the learned correction against the analytic model on held-out measured
migrations, its MLflow record, and the figures the planner and executor read."""

from __future__ import annotations

from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from benchscript import bench_script
from hypothesis import given, settings
from hypothesis import strategies as st

from advisor.errors import InputError
from advisor.migration import (
    MEASURED_COLUMNS,
    MigrationCorrection,
    abort_deadline_s,
    fit_correction,
    max_live_dirty_mibps,
    predict_migration,
    predict_migrations,
    predict_precopy,
    read_measured,
)
from advisor.migration.measured import INPUT_COLUMNS
from advisor.migration.precopy import Calibration, analytic_frame, predict_precopy_batch
from advisor.migration.tracking import log_correction

DATA = Path(__file__).resolve().parents[1] / "data" / "migrations.csv"

# -- analytic model -------------------------------------------------------------------------------------

sizes = st.sampled_from([256.0, 1024.0, 8192.0])
shares = st.floats(0.05, 1.0)
dirties = st.floats(0, 300)  # MiB/s
links = st.floats(16, 2000)  # MiB/s
budgets = st.floats(10, 1000)  # ms
MIGRATIONS = {"mem": sizes, "share": shares, "dirty": dirties, "bw": links, "budget": budgets}


@settings(max_examples=60, deadline=None)
@given(**MIGRATIONS, more=dirties, xbzrle=st.booleans())
def test_more_dirtying_never_makes_a_migration_shorter_or_likelier(
    mem: float, share: float, dirty: float, more: float, bw: float, budget: float, xbzrle: bool
) -> None:
    kw = {"working_set_mib": share * mem, "xbzrle": xbzrle, "max_iterations": 200}
    est = predict_precopy(mem, dirty, bw, budget, **kw)  # type: ignore[arg-type]
    worse = predict_precopy(mem, dirty + more, bw, budget, **kw)  # type: ignore[arg-type]
    assert worse.total_time_s >= est.total_time_s - 1e-9
    assert worse.transferred_mib >= est.transferred_mib - 1e-9
    assert est.converges or not worse.converges


@settings(max_examples=60, deadline=None)
@given(**MIGRATIONS, faster=st.floats(1, 4))
def test_a_faster_link_never_makes_a_converging_migration_slower_or_fail(
    mem: float, share: float, dirty: float, bw: float, faster: float, budget: float
) -> None:
    est = predict_precopy(mem, dirty, bw, budget, 200, working_set_mib=share * mem)
    quick = predict_precopy(mem, dirty, bw * faster, budget, 200, working_set_mib=share * mem)
    if est.converges:
        assert quick.converges
        assert quick.total_time_s <= est.total_time_s + 1e-9


@pytest.mark.parametrize(("dirty", "bw"), [(32.0, 32.0), (60.0, 32.0), (1500.0, 1000.0)])
def test_without_auto_converge_a_guest_outrunning_the_link_never_converges(dirty: float, bw: float) -> None:
    # working set larger than what the downtime budget can carry
    est = predict_precopy(4096, dirty, bw, 300, 500, working_set_mib=2048)
    assert not est.converges and est.iterations == 500
    assert est.downtime_ms > 300


def test_a_deadline_stops_the_rounds_and_the_migration_does_not_converge() -> None:
    est = predict_precopy(4096, 60, 32, 300, 1000, working_set_mib=2048, deadline_s=200)
    assert not est.converges
    assert 200 <= est.total_time_s - est.downtime_ms / 1000 < 200 + 2048 / 32 + 1e-9


def test_auto_converge_throttles_a_guest_outrunning_the_link_until_it_converges() -> None:
    plain = predict_precopy(2048, 60, 32, 300, 200, working_set_mib=1024)
    throttled = predict_precopy(2048, 60, 32, 300, 200, working_set_mib=1024, auto_converge=True)
    assert not plain.converges and plain.throttle_pct == 0
    assert throttled.converges and throttled.downtime_ms <= 300
    assert 60 * (1 - throttled.throttle_pct / 100) < 32  # it converged only once throttled below the link
    # steps of 10 % after the initial 20 %, every second high round
    assert throttled.throttle_pct in {20.0 + 10.0 * k for k in range(9)} | {99.0}


def test_a_round_that_dirties_little_does_not_throttle() -> None:
    est = predict_precopy(2048, 5, 1000, 300, auto_converge=True)
    assert est.converges and est.throttle_pct == 0


@pytest.mark.parametrize("cache", [None, 64.0, 1024.0])
def test_xbzrle_sends_fewer_bytes_and_never_takes_longer(cache: float | None) -> None:
    plain = predict_precopy(1024, 20, 64, 100, working_set_mib=512)
    delta = predict_precopy(1024, 20, 64, 100, working_set_mib=512, xbzrle=True, xbzrle_cache_mib=cache)
    assert delta.transferred_mib < plain.transferred_mib
    assert delta.total_time_s <= plain.total_time_s
    assert delta.iterations <= plain.iterations


def test_a_bigger_xbzrle_cache_sends_fewer_bytes() -> None:
    small = predict_precopy(1024, 20, 64, 100, working_set_mib=512, xbzrle=True, xbzrle_cache_mib=64)
    big = predict_precopy(1024, 20, 64, 100, working_set_mib=512, xbzrle=True, xbzrle_cache_mib=512)
    assert big.transferred_mib < small.transferred_mib


@settings(max_examples=60, deadline=None)
@given(**MIGRATIONS, xbzrle=st.booleans(), midround=st.booleans())
def test_a_cold_xbzrle_cache_never_helps_and_touches_nothing_else(
    mem: float, share: float, dirty: float, bw: float, budget: float, xbzrle: bool, midround: bool
) -> None:
    kw = {"working_set_mib": share * mem, "xbzrle": xbzrle, "midround": midround, "max_iterations": 200}
    warm = predict_precopy(mem, dirty, bw, budget, **kw)  # type: ignore[arg-type]
    cold = predict_precopy(mem, dirty, bw, budget, xbzrle_cold_round=True, **kw)  # type: ignore[arg-type]
    assert cold.transferred_mib >= warm.transferred_mib - 1e-6
    if not xbzrle:
        assert cold == warm


def test_with_a_cold_cache_round_2_goes_whole_and_deltas_start_in_round_3() -> None:
    # 1 GiB, working set 128 MiB inside the 256 MiB cache, dirtied faster than the budget carries;
    # one live round, so the stop-and-copy is round 2: the cold cache sends it as the plain model does
    kw = {"working_set_mib": 128.0, "xbzrle": True, "xbzrle_ratio": 0.1}
    plain = predict_precopy(1024, 40, 64, 50, 1, working_set_mib=128.0)
    warm = predict_precopy(1024, 40, 64, 50, 1, **kw)  # type: ignore[arg-type]
    cold = predict_precopy(1024, 40, 64, 50, 1, xbzrle_cold_round=True, **kw)  # type: ignore[arg-type]
    assert cold.transferred_mib == pytest.approx(plain.transferred_mib)
    assert warm.transferred_mib < cold.transferred_mib - 100
    # two live rounds: the stop-and-copy is round 3, sent as deltas
    plain = predict_precopy(1024, 40, 64, 50, 2, working_set_mib=128.0)
    cold = predict_precopy(1024, 40, 64, 50, 2, xbzrle_cold_round=True, **kw)  # type: ignore[arg-type]
    assert cold.downtime_ms == pytest.approx(0.1 * plain.downtime_ms)


def test_untouched_memory_shortens_only_the_first_round() -> None:
    full = predict_precopy(1024, 10, 64, 300, working_set_mib=128)
    touched = predict_precopy(1024, 10, 64, 300, working_set_mib=128, resident_mib=256)
    # round 1 sends 768 MiB less, so the guest dirties less meanwhile and round 2 shrinks too
    assert 256 < touched.transferred_mib < full.transferred_mib - (1024 - 256)
    assert touched.total_time_s < full.total_time_s and touched.iterations <= full.iterations


@settings(max_examples=80, deadline=None)
@given(
    **MIGRATIONS,
    resident=st.floats(0, 1),
    rounds=st.integers(1, 300),
    deadline=st.one_of(st.none(), st.floats(1, 100)),
    auto_converge=st.booleans(),
    cpu_share=st.floats(0.01, 1),
    xbzrle=st.booleans(),
    encode=st.floats(10, 1e4),
    cold=st.booleans(),
    midround=st.booleans(),
    switchover=st.one_of(st.none(), st.floats(10, 1000)),
)
def test_a_prediction_does_not_depend_on_the_other_rows_of_its_batch(
    mem: float,
    share: float,
    resident: float,
    dirty: float,
    bw: float,
    budget: float,
    rounds: int,
    deadline: float | None,
    auto_converge: bool,
    cpu_share: float,
    xbzrle: bool,
    encode: float,
    cold: bool,
    midround: bool,
    switchover: float | None,
) -> None:
    kw = {
        "working_set_mib": share * mem,
        "resident_mib": resident * mem,
        "deadline_s": deadline,
        "auto_converge": auto_converge,
        "dirty_cpu_share": cpu_share,
        "xbzrle": xbzrle,
        "xbzrle_mibps": encode,
        "xbzrle_cold_round": cold,
        "midround": midround,
        "switchover_mibps": switchover,
    }
    one = predict_precopy(mem, dirty, bw, budget, rounds, **kw)  # type: ignore[arg-type]
    many = predict_precopy_batch([mem, 2 * mem], dirty, bw, budget, rounds, **kw)  # type: ignore[arg-type]
    assert many["converges"][0] == one.converges and many["iterations"][0] == one.iterations
    assert many["total_time_s"][0] == pytest.approx(one.total_time_s, rel=1e-9)
    assert many["transferred_mib"][0] == pytest.approx(one.transferred_mib, rel=1e-9)
    assert many["downtime_ms"][0] == pytest.approx(one.downtime_ms, rel=1e-9)
    assert many["throttle_pct"][0] == one.throttle_pct


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [({"working_set_mib": -1.0}, "working set"), ({"xbzrle_ratio": 0.0}, "xbzrle")],
)
def test_bad_model_options_are_named(kwargs: dict, what: str) -> None:
    with pytest.raises(InputError, match=what):
        predict_precopy(1024, 10, 64, 300, **kwargs)


# -- measured data ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def measured() -> pd.DataFrame:
    return read_measured(DATA)


def test_the_committed_sweep_has_enough_converging_and_aborted_migrations(measured: pd.DataFrame) -> None:
    assert list(measured.columns) == list(MEASURED_COLUMNS)
    assert len(measured) >= 150
    assert 0.1 <= measured["converged"].mean() <= 0.95
    assert measured["auto_converge"].any() and measured["xbzrle"].any()
    aborted = measured[~measured["converged"]]
    assert aborted["downtime_ms"].isna().all()
    # aborted at (not before) the deadline of their memory and bandwidth, give or take a poll
    deadline = [
        abort_deadline_s(m, b) for m, b in zip(aborted["mem_mib"], aborted["bandwidth_mibps"], strict=True)
    ]
    assert (aborted["total_time_s"] >= np.array(deadline) - 1.0).all()


def test_a_bad_measured_row_is_named(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    header = ",".join(MEASURED_COLUMNS)
    path.write_text(
        f"{header}\n512,256,20,32,300,False,False,25.6,14,833,14,True\n"
        "512,256,20,32,300,maybe,False,25.6,14,833,14,True\n"
    )
    with pytest.raises(InputError, match=r"m.csv: line 3: column auto_converge"):
        read_measured(path)
    path.write_text(f"{header}\n512,256,20,32,300,False,False,25.6,,833,14,True\n")
    with pytest.raises(InputError, match="line 2: a converged migration needs its downtime_ms"):
        read_measured(path)
    path.write_text("mem_mib,dirty_mibps\n1,2\n")
    with pytest.raises(InputError, match="missing column"):
        read_measured(path)


# -- learned correction ----------------------------------------------------------------------------------


def split_by_guest(data: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every third (memory, working set) pair held out: no guest of the test rows was seen in training."""
    groups = sorted(set(zip(data["mem_mib"], data["working_set_mib"], strict=True)))
    held = set(groups[1::3])
    test = np.array([g in held for g in zip(data["mem_mib"], data["working_set_mib"], strict=True)])
    return data[~test].reset_index(drop=True), data[test].reset_index(drop=True)


@pytest.fixture(scope="module")
def fitted(measured: pd.DataFrame) -> tuple[MigrationCorrection, pd.DataFrame, pd.DataFrame]:
    train, test = split_by_guest(measured)
    return MigrationCorrection().fit(train[list(INPUT_COLUMNS)], train), train, test


def test_the_correction_beats_the_analytic_model_on_unseen_guests(
    fitted: tuple[MigrationCorrection, pd.DataFrame, pd.DataFrame],
) -> None:
    model, _, test = fitted
    done = test["converged"].to_numpy(bool)
    assert done.sum() >= 20
    measured_time = test["total_time_s"].to_numpy(float)[done]
    analytic = predict_migrations(test[list(INPUT_COLUMNS)])
    learned = predict_migrations(test[list(INPUT_COLUMNS)], model)
    a_ape = np.abs(analytic["total_time_s"].to_numpy(float)[done] - measured_time) / measured_time
    m_ape = np.abs(learned["total_time_s"].to_numpy(float)[done] - measured_time) / measured_time
    assert np.quantile(m_ape, 0.9) < np.quantile(a_ape, 0.9)
    assert np.median(m_ape) < np.median(a_ape)
    assert np.median(m_ape) < 0.25
    # convergence: the analytic model with the abort deadline is already good; the learned one keeps up
    a_conv = np.mean(analytic["converges"].to_numpy(bool) == done)
    m_conv = np.mean(learned["converges"].to_numpy(bool) == done)
    assert m_conv >= 0.95 and m_conv >= a_conv - 0.03
    # downtime within its limit: the analytic model knows no switch-over cost, the learned one does
    inside = (test["converged"] & (test["downtime_ms"] <= test["max_downtime_ms"])).to_numpy(bool)
    a_win = np.mean(analytic["downtime_within_limit"].to_numpy(bool) == inside)
    m_win = np.mean(learned["downtime_within_limit"].to_numpy(bool) == inside)
    assert m_win > a_win


def test_calibration_recovers_the_constants_of_a_known_machine() -> None:
    rng = np.random.default_rng(3)
    n = 100
    mem = rng.choice([256.0, 512.0, 1024.0, 2048.0], n)
    option = rng.random(n)
    X = pd.DataFrame(
        {
            "mem_mib": mem,
            "working_set_mib": mem * rng.choice([0.0625, 0.25, 0.5], n),
            "dirty_mibps": rng.uniform(0, 80, n),
            "bandwidth_mibps": rng.choice([32.0, 64.0, 128.0], n),
            "max_downtime_ms": rng.choice([50.0, 300.0, 1000.0], n),
            "auto_converge": option < 0.3,
            "xbzrle": option > 0.7,
        }
    )
    machine = Calibration(
        overhead_s=0.8,
        base_mib=50.0,
        base_share=0.1,
        dirty_cpu_share=0.2,
        xbzrle_ratio=0.1,
        xbzrle_cold_round=True,
        midround=True,
        switchover_mibps=400.0,
        downtime_overhead_ms=30.0,
    )
    y = analytic_frame(X, machine)
    y["converged"] = y["converges"]
    model = MigrationCorrection().fit(X, y)
    found = model.calibration_
    assert found.overhead_s == pytest.approx(0.8, abs=0.1)
    assert found.base_mib == pytest.approx(50, abs=10)
    assert found.base_share == pytest.approx(0.1, abs=0.02)
    assert found.dirty_cpu_share == pytest.approx(0.2, rel=0.3)
    assert found.xbzrle_ratio == pytest.approx(0.1, rel=0.3)
    assert found.switchover_mibps == pytest.approx(400, rel=0.2)
    assert found.downtime_overhead_ms == pytest.approx(30, abs=5)
    out = model.predict(X)
    done = y["converged"].to_numpy(bool)
    ape = (
        np.abs(out["total_time_s"] - y["total_time_s"]).to_numpy()[done] / y["total_time_s"].to_numpy()[done]
    )
    assert np.quantile(ape, 0.9) < 0.05
    assert (out["converges"] == y["converged"]).mean() > 0.95


def test_predictions_are_positive_and_probabilities_are_probabilities(
    fitted: tuple[MigrationCorrection, pd.DataFrame, pd.DataFrame],
) -> None:
    model, _, test = fitted
    out = model.predict(test[list(INPUT_COLUMNS)])
    assert (out["total_time_s"] > 0).all() and (out["transferred_mib"] > 0).all()
    assert (out["downtime_ms"] >= 0).all()
    assert out["converge_probability"].between(0, 1).all()
    assert (out["converges"] == (out["converge_probability"] >= 0.5)).all()
    assert not (out["downtime_within_limit"] & ~out["converges"]).any()


def test_the_correction_is_recorded_in_mlflow_and_loads_back(
    tmp_path: Path, fitted: tuple[MigrationCorrection, pd.DataFrame, pd.DataFrame]
) -> None:
    model, train, test = fitted
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    run_id = log_correction(model, uri, train.head(3), {"model_p90_ape": 0.12}, {"train_file": "x.csv"})
    mlflow.set_tracking_uri(uri)
    run = mlflow.get_run(run_id)
    assert run.data.metrics["model_p90_ape"] == pytest.approx(0.12)
    assert run.data.params["train_file"] == "x.csv" and int(run.data.params["n_train"]) == len(train)
    assert run.data.params["max_depth"] == str(model.max_depth)
    loaded = mlflow.sklearn.load_model(f"runs:/{run_id}/migration_correction")
    X = test[list(INPUT_COLUMNS)].head(5)
    pd.testing.assert_frame_equal(loaded.predict(X), model.predict(X))


# -- what the planner, executor and report call ----------------------------------------------------------


def test_a_prediction_carries_deadlines_the_executor_can_use() -> None:
    ok = predict_migration(512, 5, 32, 300, working_set_mib=256)
    assert ok.converges and not ok.learned
    assert ok.deadline_s == pytest.approx(1.5 * ok.total_time_s + 10)
    assert ok.abort_s >= ok.deadline_s and ok.abort_s >= abort_deadline_s(512, 32)
    hopeless = predict_migration(512, 60, 32, 300, working_set_mib=256)
    assert not hopeless.converges and not hopeless.downtime_within_limit
    assert hopeless.deadline_s <= hopeless.abort_s == pytest.approx(abort_deadline_s(512, 32))


def test_the_learned_prediction_agrees_with_the_batch_one(
    fitted: tuple[MigrationCorrection, pd.DataFrame, pd.DataFrame],
) -> None:
    model, _, test = fitted
    row = test.iloc[0]
    one = predict_migration(
        row["mem_mib"],
        row["dirty_mibps"],
        row["bandwidth_mibps"],
        row["max_downtime_ms"],
        working_set_mib=row["working_set_mib"],
        auto_converge=bool(row["auto_converge"]),
        xbzrle=bool(row["xbzrle"]),
        correction=model,
    )
    batch = predict_migrations(test[list(INPUT_COLUMNS)].head(1), model).iloc[0]
    assert one.learned and one.total_time_s == pytest.approx(batch["total_time_s"])
    assert one.converges == bool(batch["converges"])


def test_the_fastest_live_dirty_rate_grows_with_the_link() -> None:
    slow = max_live_dirty_mibps(1024, 32, 300, working_set_mib=512)
    fast = max_live_dirty_mibps(1024, 128, 300, working_set_mib=512)
    assert 0 < slow < 32 and slow < fast < 128
    assert predict_migration(1024, slow, 32, 300, working_set_mib=512).converges
    assert not predict_migration(1024, slow * 1.3, 32, 300, working_set_mib=512).converges


def test_fit_correction_fits_a_file_once_and_again_when_it_changes(
    tmp_path: Path, measured: pd.DataFrame
) -> None:
    path = tmp_path / "m.csv"
    measured.head(60).to_csv(path, index=False)
    first = fit_correction(path)
    assert fit_correction(path) is first and first.n_train_ == 60
    measured.head(70).to_csv(path, index=False)
    assert fit_correction(path).n_train_ == 70
    with pytest.raises(InputError, match="no such migrations file"):
        fit_correction(tmp_path / "nope.csv")


# -- bench/migration_model.py ----------------------------------------------------------------------------


def test_cross_validation_folds_keep_each_guest_whole(measured: pd.DataFrame) -> None:
    bench = bench_script("migration_model")
    guests = bench.guest_runs(measured)
    # the committed sweep: 40 guests of 5 migrations; two neighbours share memory and working set
    assert len(set(guests)) == 39 and np.all(np.diff(guests) >= 0)
    frame = pd.DataFrame({"mem_mib": [256, 256, 512, 512, 256], "working_set_mib": [16, 16, 16, 16, 16]})
    assert list(bench.guest_runs(frame)) == [1, 1, 2, 2, 3]


def test_the_bench_scores_a_perfect_prediction_as_perfect(measured: pd.DataFrame) -> None:
    test = measured.head(20).reset_index(drop=True)
    exact = pd.DataFrame(
        {
            "total_time_s": test["total_time_s"],
            "converges": test["converged"],
            "downtime_ms": test["downtime_ms"],
            "downtime_within_limit": test["converged"] & (test["downtime_ms"] <= test["max_downtime_ms"]),
        }
    )
    figures, extra = bench_script("migration_model").score(test, exact, exact)
    assert figures["model_p90_ape"] == 0 and figures["converge_accuracy"] == 1
    assert figures["downtime_within_limit_accuracy"] == 1
    assert extra["n_test_over_3s"] + int((test["total_time_s"][test["converged"]] <= 3).sum()) == int(
        test["converged"].sum()
    )
