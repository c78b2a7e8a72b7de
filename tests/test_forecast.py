"""Forecasting: grid, features without leakage, baselines as defined, model choice, MLflow record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from mlflow.tracking import MlflowClient
from sklearn.base import clone

from advisor.config import ForecastSettings
from advisor.core import VM, Cluster, Forecast, Host
from advisor.errors import AdvisorError, InputError
from advisor.forecast import forecast_with, train_and_forecast
from advisor.forecast.features import (
    FEATURES,
    TARGETS,
    build_table,
    origin_indices,
    seasonal_lag,
    to_grid,
    window_stats,
)
from advisor.forecast.models import NaiveForecaster, QuantileGBMForecaster, SeasonalNaiveForecaster
from advisor.forecast.predict import forecast_on
from advisor.forecast.train import CANDIDATES, fit_and_select, labelled, time_split

START = pd.Timestamp("2024-01-01", tz="UTC")  # a Monday
STEP_S = 300


def fleet(
    n_vms: int = 30, days: float = 10.0, pattern: str = "seasonal", seed: int = 0
) -> tuple[Cluster, pd.DataFrame]:
    """Deterministic VMs: a daily sine of CPU share (phase spread across VMs) with a little noise, or
    constant shares; memory follows CPU. Sizes cycle through 1-8 vCPUs and 1-4 GiB."""
    n_t = round(days * 86400 / STEP_S)
    ts = START + pd.to_timedelta(np.arange(n_t) * STEP_S, unit="s")
    hours = np.arange(n_t) * STEP_S / 3600
    idx = np.arange(n_vms)
    vcpus = 1 + idx % 8
    size_mib = 1024.0 * (1 + idx % 4)
    if pattern == "seasonal":
        noise = np.random.default_rng(seed).standard_normal((n_vms, n_t))
        phase = 24.0 * idx / n_vms
        share = 0.5 + 0.4 * np.sin(2 * np.pi * (hours[None, :] - phase[:, None]) / 24) + 0.02 * noise
    else:
        share = np.repeat(np.linspace(0.1, 0.9, n_vms)[:, None], n_t, axis=1)
    share = share.clip(0.0, 1.0)
    names = [f"vm{i:02d}" for i in idx]
    metrics = pd.DataFrame(
        {
            "vm": np.repeat(names, n_t),
            "ts": np.tile(ts, n_vms),
            "cpu_cores": (share * vcpus[:, None]).ravel(),
            "mem_mib": ((0.3 + 0.5 * share) * size_mib[:, None]).ravel(),
            "dirty_mibps": (10 * share).ravel(),
        }
    )
    return _cluster([(n, int(vcpus[i]), float(size_mib[i])) for i, n in enumerate(names)]), metrics


def _cluster(vms: list[tuple[str, int, float]]) -> Cluster:
    hosts = (Host("h0", 256.0, 1 << 20), Host("h1", 256.0, 1 << 20))
    return Cluster("test", hosts, tuple(VM(n, "h0", c, m) for n, c, m in vms))


def fsettings(**kw: Any) -> ForecastSettings:
    base: dict[str, Any] = {"horizon_h": 6.0, "season_h": 24.0, "origin_every_h": 3.0, "max_iter": 40}
    return ForecastSettings(**(base | kw))


def horizon_of(s: ForecastSettings) -> pd.Timedelta:
    return pd.Timedelta(hours=s.horizon_h)


# --- grid ---------------------------------------------------------------------------------------


def test_grid_keeps_regular_samples() -> None:
    cluster, metrics = fleet(3, days=1)
    grid = to_grid(metrics, [v.name for v in cluster.vms])
    assert grid.step_s == STEP_S
    assert grid.times[-1] == metrics["ts"].max()
    assert grid.times[0] == metrics["ts"].min()
    expected = metrics.pivot(index="vm", columns="ts", values="cpu_cores").to_numpy()
    np.testing.assert_allclose(grid.cpu, expected)


def test_grid_snaps_irregular_samples_to_the_median_step() -> None:
    cluster, metrics = fleet(4, days=1)
    rng = np.random.default_rng(1)
    kept = metrics[rng.random(len(metrics)) > 0.1].copy()
    kept["ts"] = kept["ts"] + pd.to_timedelta(rng.uniform(-60, 60, len(kept)), unit="s")
    grid = to_grid(kept.sample(frac=1.0, random_state=2), [v.name for v in cluster.vms])
    assert grid.step_s == STEP_S
    assert np.count_nonzero(~np.isnan(grid.cpu)) == len(kept)  # one sample per step, none lost
    assert sorted(grid.cpu[~np.isnan(grid.cpu)]) == sorted(kept["cpu_cores"])


def test_grid_averages_samples_that_share_a_step() -> None:
    metrics = pd.DataFrame(
        {
            "vm": ["a"] * 6,
            "ts": START + pd.to_timedelta([0, 300, 600, 640, 900, 1200], unit="s"),
            "cpu_cores": [0.1, 0.2, 0.3, 0.5, 0.6, 0.7],
            "mem_mib": [10.0] * 6,
        }
    )
    grid = to_grid(metrics, ["a"])
    assert grid.step_s == STEP_S
    np.testing.assert_allclose(grid.cpu[0], [0.1, 0.2, 0.4, 0.6, 0.7])


def test_grid_leaves_long_gaps_missing() -> None:
    cluster, metrics = fleet(2, days=3)
    t = metrics["ts"]
    gap = (
        (metrics["vm"] == "vm01")
        & (t > START + pd.Timedelta(hours=30))
        & (t <= START + pd.Timedelta(hours=36))
    )
    grid = to_grid(metrics[~gap], [v.name for v in cluster.vms])
    assert np.isnan(grid.cpu[1]).sum() == 72 and not np.isnan(grid.cpu[0]).any()
    s = fsettings()
    table = build_table(
        grid, cluster, s, origins=np.array([grid.times.get_loc(START + pd.Timedelta(hours=35))])
    )
    row = table.set_index("vm").loc["vm01"]
    assert np.isnan(row["cpu_mean_1h"]) and np.isnan(row["cpu_last"])  # not filled in
    assert not np.isnan(table.set_index("vm").loc["vm00", "cpu_mean_1h"])


def test_grid_names_a_vm_without_metrics_and_ignores_strangers() -> None:
    cluster, metrics = fleet(2, days=1)
    with pytest.raises(InputError, match="ghost"):
        to_grid(metrics, ["vm00", "ghost"])
    grid = to_grid(metrics, ["vm01"])
    assert grid.vms == ("vm01",) and grid.cpu.shape[0] == 1


# --- window statistics and features -------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    values=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 3), st.integers(1, 30)),
        elements=st.one_of(st.floats(0, 100), st.just(np.nan)),
    ),
    width=st.integers(1, 10),
    data=st.data(),
)
def test_window_stats_match_numpy(values: np.ndarray, width: int, data: st.DataObject) -> None:
    n_t = values.shape[1]
    ends = np.array(data.draw(st.lists(st.integers(-3, n_t + 3), min_size=1, max_size=5)))
    got = window_stats(values, ends, width, ("mean", "std", "max", "p50", "p95"))
    for r in range(values.shape[0]):
        for j, e in enumerate(ends):
            window = values[r, max(0, e - width + 1) : max(0, min(e + 1, n_t))]
            seen = window[~np.isnan(window)]
            if len(seen) < 0.5 * width:
                assert all(np.isnan(got[s][r, j]) for s in ("mean", "std", "max", "p50", "p95"))
                continue
            np.testing.assert_allclose(got["mean"][r, j], seen.mean(), rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(got["std"][r, j], seen.std(), rtol=1e-9, atol=1e-7)
            assert got["max"][r, j] == seen.max()
            np.testing.assert_allclose(got["p50"][r, j], np.quantile(seen, 0.5), rtol=1e-12)
            np.testing.assert_allclose(got["p95"][r, j], np.quantile(seen, 0.95), rtol=1e-12)


def test_targets_and_naive_match_a_hand_computation() -> None:
    cluster = _cluster([("a", 1, 1000.0)])
    ts = START + pd.to_timedelta(np.arange(24) * STEP_S, unit="s")
    metrics = pd.DataFrame(
        {"vm": "a", "ts": ts, "cpu_cores": np.arange(24) * 0.1, "mem_mib": np.arange(24) * 10.0}
    )
    s = fsettings(horizon_h=1.0, origin_every_h=1.0, season_h=1.0)
    table = build_table(to_grid(metrics, ["a"]), cluster, s)
    assert list(table["origin"]) == [ts[11], ts[23]]
    first = table.iloc[0]
    # future window (origin, origin + 1 h] holds samples 12..23, i.e. 1.2 .. 2.3 cores
    assert first["cpu_p50"] == pytest.approx(1.75)
    assert first["cpu_p95"] == pytest.approx(1.2 + 0.95 * 1.1)
    assert first["mem_p50"] == pytest.approx(175.0 / 1000.0)  # a share of the VM's 1000 MiB
    # the last hour up to and including the origin: samples 0..11
    assert first["naive_cpu_p50"] == pytest.approx(0.55)
    assert first["naive_cpu_p95"] == pytest.approx(0.95 * 1.1)
    assert first["cpu_last"] == pytest.approx(1.1)
    assert table.iloc[1][list(TARGETS)].isna().all()  # nothing after the last sample


@pytest.mark.parametrize("cut", [3, 20, 60])
def test_features_never_use_data_after_the_origin(cut: int) -> None:
    """Change every sample after origin number `cut`: no feature at that origin or before moves."""
    cluster, metrics = fleet(6, days=10)
    s = fsettings(season_h=48.0)
    names = [v.name for v in cluster.vms]
    a = build_table(to_grid(metrics, names), cluster, s)
    at = np.sort(a["origin"].unique())[cut]
    later = metrics["ts"] > at
    perturbed = metrics.copy()
    perturbed.loc[later, "cpu_cores"] = perturbed.loc[later, "cpu_cores"] * 3 + 1
    perturbed.loc[later, "mem_mib"] = perturbed.loc[later, "mem_mib"] / 2
    b = build_table(to_grid(perturbed, names), cluster, s)
    before = (a["origin"] <= at).to_numpy()
    np.testing.assert_array_equal(a.loc[before, list(FEATURES)], b.loc[before, list(FEATURES)])
    assert not np.allclose(a.loc[before, "cpu_p95"], b.loc[before, "cpu_p95"], equal_nan=True)
    assert not np.allclose(a.loc[~before, "cpu_mean_1h"], b.loc[~before, "cpu_mean_1h"])


def test_calendar_features_describe_the_origin() -> None:
    cluster, metrics = fleet(1, days=2.25 + 1 / 288)  # last sample: Wednesday 06:00 UTC
    table = build_table(to_grid(metrics, ["vm00"]), cluster, fsettings())
    row = table.iloc[-1]
    assert row["origin"] == pd.Timestamp("2024-01-03T06:00Z")
    assert row["hour_sin"] == pytest.approx(1.0) and row["hour_cos"] == pytest.approx(0.0, abs=1e-12)
    assert row["dow_sin"] == pytest.approx(np.sin(2 * np.pi * 2.25 / 7))
    assert row["vm_vcpus"] == 1 and row["vm_mem_mib"] == 1024


def test_origins_end_at_the_last_sample() -> None:
    cluster, metrics = fleet(1, days=2)
    grid = to_grid(metrics, ["vm00"])
    origins = origin_indices(grid, fsettings(origin_every_h=5.0))
    assert origins[-1] == len(grid.times) - 1
    assert set(np.diff(origins)) == {60}


# --- baselines and estimators -------------------------------------------------------------------


def test_naive_and_seasonal_naive_are_as_defined() -> None:
    cluster, metrics = fleet(3, days=4)
    s = fsettings(horizon_h=6.0, season_h=24.0)
    grid = to_grid(metrics, [v.name for v in cluster.vms])
    table = build_table(grid, cluster, s)
    X = table[list(FEATURES)]
    naive = NaiveForecaster("cpu_p95").fit(X).predict(X)
    seasonal = SeasonalNaiveForecaster("cpu_p95").fit(X).predict(X)
    share = grid.cpu[1] / cluster.vms[1].vcpus
    origins = origin_indices(grid, s)
    rows = np.flatnonzero(table["vm"] == "vm01")
    h, season = 72, 288
    for o, r in zip(origins, rows, strict=True):
        if o + 1 >= h:
            assert naive[r] == pytest.approx(np.quantile(share[o - h + 1 : o + 1], 0.95))
        end = o - season + h  # the seasonal window is (o - season, o - season + horizon]
        if end + 1 >= h:
            assert seasonal[r] == pytest.approx(np.quantile(share[end - h + 1 : end + 1], 0.95))
        elif end + 1 < h / 2:  # too early for a season back: the naive value
            np.testing.assert_equal(seasonal[r], naive[r])
    assert np.isnan(table["snaive_cpu_p95"]).any()


def test_seasonal_lag_keeps_the_window_in_the_past() -> None:
    cluster, metrics = fleet(1, days=1)
    grid = to_grid(metrics, ["vm00"])
    assert seasonal_lag(grid, fsettings(horizon_h=6.0, season_h=24.0)) == 288
    assert seasonal_lag(grid, fsettings(horizon_h=6.0, season_h=4.0)) == 96  # two seasons of 4 h
    assert seasonal_lag(grid, fsettings(horizon_h=6.0, season_h=6.0)) == 72


@pytest.mark.parametrize(
    "estimator",
    [
        NaiveForecaster("mem_p50"),
        SeasonalNaiveForecaster("cpu_p50"),
        QuantileGBMForecaster(quantile=0.7, max_iter=20, learning_rate=0.2, random_state=3),
    ],
)
def test_estimators_survive_clone(estimator: Any) -> None:
    copy = clone(estimator)
    assert copy.get_params() == estimator.get_params()
    cluster, metrics = fleet(3, days=3)
    table = labelled(
        build_table(to_grid(metrics, [v.name for v in cluster.vms]), cluster, fsettings()), "cpu_p50"
    )
    fitted = estimator.fit(table[list(FEATURES)], table["cpu_p50"])
    again = clone(fitted)
    assert again.get_params() == fitted.get_params() and not hasattr(again, "n_features_in_")
    np.testing.assert_allclose(
        again.fit(table[list(FEATURES)], table["cpu_p50"]).predict(table), fitted.predict(table)
    )


def test_predictions_are_never_negative() -> None:
    cluster, metrics = fleet(3, days=3)
    table = build_table(to_grid(metrics, [v.name for v in cluster.vms]), cluster, fsettings())
    table["naive_cpu_p50"] = -1.0
    assert (NaiveForecaster("cpu_p50").fit(table).predict(table) == 0).all()
    gbm = QuantileGBMForecaster(max_iter=20).fit(table, -1.0 - np.arange(len(table)) % 3)
    assert (gbm.predict(table) == 0).all()


# --- training and choice ------------------------------------------------------------------------


def test_time_split_hides_validation_targets_from_training() -> None:
    cluster, metrics = fleet(5, days=6)
    s = fsettings()
    rows = labelled(build_table(to_grid(metrics, [v.name for v in cluster.vms]), cluster, s), "cpu_p95")
    train, valid = time_split(rows, horizon_of(s))
    assert len(train) and len(valid)
    assert train["origin"].max() + horizon_of(s) <= valid["origin"].min()
    n = rows["origin"].nunique()
    assert valid["origin"].nunique() == round(0.2 * n)


def test_learned_model_beats_naive_on_a_seasonal_fleet() -> None:
    cluster, metrics = fleet(30, days=10)
    s = fsettings()
    table = build_table(to_grid(metrics, [v.name for v in cluster.vms]), cluster, s)
    trained = fit_and_select(table, s, horizon_of(s))
    for target in TARGETS:
        scores = trained.val_mae[target]
        assert set(scores) == set(CANDIDATES)
        assert scores["quantile_gbm"] < 0.5 * scores["naive"], target
        assert scores[trained.chosen[target]] <= scores["naive"]


def test_baseline_is_kept_when_the_model_is_worse() -> None:
    cluster, metrics = fleet(30, days=6, pattern="constant")
    s = fsettings()
    table = build_table(to_grid(metrics, [v.name for v in cluster.vms]), cluster, s)
    trained = fit_and_select(table, s, horizon_of(s))
    for target in TARGETS:
        scores = trained.val_mae[target]
        assert scores["naive"] == 0.0 and scores["quantile_gbm"] > 0.0
        assert trained.chosen[target] in ("naive", "seasonal_naive")
        assert not isinstance(trained.models[target], QuantileGBMForecaster)


def test_requested_baseline_is_used_and_scored() -> None:
    cluster, metrics = fleet(5, days=4)
    s = fsettings(model="seasonal_naive")
    table = build_table(to_grid(metrics, [v.name for v in cluster.vms]), cluster, s)
    trained = fit_and_select(table, s, horizon_of(s))
    assert set(trained.chosen.values()) == {"seasonal_naive"}
    assert all(set(v) == {"seasonal_naive", "naive"} for v in trained.val_mae.values())


def test_short_history_falls_back_to_naive_for_every_vm() -> None:
    cluster, metrics = fleet(4, days=1.2, pattern="constant")
    metrics = metrics.drop(columns="dirty_mibps")
    s = fsettings(horizon_h=24.0)
    grid = to_grid(metrics, [v.name for v in cluster.vms])
    trained = fit_and_select(build_table(grid, cluster, s), s, horizon_of(s))
    assert "too little history" in trained.note and "quantile_gbm" not in trained.chosen.values()
    fc, short = forecast_on(grid, cluster, trained.models, s, "baseline")
    assert set(fc.vms) == {v.name for v in cluster.vms} and short == []
    assert fc.vms["vm00"].cpu_p95 == pytest.approx(0.1) and fc.vms["vm00"].dirty_mibps == 0.0


# --- the whole stage, with MLflow ---------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One train_and_forecast on a fleet plus a newcomer VM with two hours of history (the features
    need three: half the horizon)."""
    tmp = tmp_path_factory.mktemp("mlflow")
    cluster, metrics = fleet(20, days=6)
    last = metrics["ts"].max()
    newcomer = metrics[(metrics["vm"] == "vm03") & (metrics["ts"] > last - pd.Timedelta(hours=2))].assign(
        vm="new"
    )
    cluster = _cluster([(v.name, v.vcpus, v.mem_mib) for v in cluster.vms] + [("new", 4, 4096.0)])
    metrics = pd.concat([metrics, newcomer], ignore_index=True)
    s = fsettings(tracking_uri=f"sqlite:///{tmp}/mlruns.db", experiment="test-forecast")
    messages: list[str] = []
    fc, summary = train_and_forecast(cluster, metrics, s, messages.append)
    return {
        "tmp": tmp,
        "cluster": cluster,
        "metrics": metrics,
        "settings": s,
        "forecast": fc,
        "summary": summary,
        "messages": messages,
    }


def test_forecast_covers_every_vm(run: dict[str, Any]) -> None:
    fc: Forecast = run["forecast"]
    cluster: Cluster = run["cluster"]
    metrics: pd.DataFrame = run["metrics"]
    assert set(fc.vms) == {v.name for v in cluster.vms}
    assert fc.made_at == metrics["ts"].max()
    assert fc.horizon_s == 6 * 3600
    assert fc.cluster_fingerprint == cluster.fingerprint()
    assert fc.model == run["summary"]["model"]
    fc.check_covers(cluster)
    for f in fc.vms.values():
        assert f.cpu_p95 >= f.cpu_p50 and f.mem_p95 >= f.mem_p50
    recent = metrics[(metrics["vm"] == "vm05") & (metrics["ts"] > fc.made_at - pd.Timedelta(hours=6))]
    assert fc.vms["vm05"].dirty_mibps == pytest.approx(recent["dirty_mibps"].mean())
    assert run["messages"]
    json.dumps(run["summary"])  # stages.forecast writes it as JSON


def test_newcomer_gets_naive_from_its_own_samples(run: dict[str, Any]) -> None:
    assert run["summary"]["naive_fallback_vms"] == ["new"]
    own = run["metrics"][run["metrics"]["vm"] == "new"]
    got = run["forecast"].vms["new"]
    assert got.cpu_p50 == pytest.approx(np.quantile(own["cpu_cores"], 0.5))
    assert got.cpu_p95 == pytest.approx(np.quantile(own["cpu_cores"], 0.95))
    assert got.mem_p95 == pytest.approx(np.quantile(own["mem_mib"], 0.95))


def test_run_is_recorded_in_mlflow(run: dict[str, Any]) -> None:
    summary, s, tmp = run["summary"], run["settings"], run["tmp"]
    client = MlflowClient(s.tracking_uri)
    record = client.get_run(summary["run_id"])
    assert record.data.params["horizon_h"] == "6.0" and record.data.params["vms"] == "21"
    for target in TARGETS:
        assert record.data.tags[f"chosen_{target}"] == summary["chosen"][target]
        for name in CANDIDATES:
            assert record.data.metrics[f"val_mae_{target}_{name}"] == pytest.approx(
                summary["val_mae"][target][name]
            )
    experiment = client.get_experiment(summary["experiment_id"])
    assert experiment.name == "test-forecast"
    assert Path(experiment.artifact_location.removeprefix("file://")).is_relative_to(tmp)
    logged = client.search_logged_models(experiment_ids=[summary["experiment_id"]])
    assert sorted(m.name for m in logged if m.source_run_id == summary["run_id"]) == sorted(TARGETS)


def test_logged_models_reproduce_the_forecast(run: dict[str, Any]) -> None:
    client = MlflowClient(run["settings"].tracking_uri)
    logged = client.search_logged_models(experiment_ids=[run["summary"]["experiment_id"]])
    models = {m.name: mlflow.sklearn.load_model(m.artifact_location) for m in logged}
    again = forecast_with(run["cluster"], run["metrics"], models, run["settings"])
    for name, f in run["forecast"].vms.items():
        assert again.vms[name] == f


def test_vm_without_metrics_is_named(tmp_path: Path) -> None:
    cluster, metrics = fleet(2, days=1)
    cluster = _cluster([(v.name, v.vcpus, v.mem_mib) for v in cluster.vms] + [("ghost", 1, 512.0)])
    s = fsettings(tracking_uri=f"sqlite:///{tmp_path}/mlruns.db")
    with pytest.raises(InputError, match="ghost"):
        train_and_forecast(cluster, metrics, s)


def test_unusable_tracking_store_is_a_one_line_error() -> None:
    cluster, metrics = fleet(2, days=0.5)
    with pytest.raises(AdvisorError, match=r"forecast\.tracking_uri"):
        train_and_forecast(cluster, metrics, fsettings(tracking_uri="bogus://nowhere"))


def test_learned_model_copes_with_a_feature_that_is_never_known() -> None:
    cluster, metrics = fleet(4, days=2)  # no day of history a season (7 days) back
    s = fsettings(season_h=168.0)
    table = labelled(build_table(to_grid(metrics, [v.name for v in cluster.vms]), cluster, s), "cpu_p95")
    assert table["cpu_mean_1h_1s"].isna().all()
    gbm = QuantileGBMForecaster(max_iter=10).fit(table, table["cpu_p95"])
    assert "cpu_mean_1h_1s" not in gbm.columns_ and np.isfinite(gbm.predict(table)).all()
