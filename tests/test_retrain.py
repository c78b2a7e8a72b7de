"""Retraining end to end: VM batches, training rows, the whole job against a real MLflow store, the
forecast stage using the exported champion, and `advisor train` on the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient
from typer.testing import CliRunner

from advisor import stages
from advisor.cli import app
from advisor.collect.synthetic import generate
from advisor.config import Config, ForecastSettings, PowerSettings, SyntheticSettings
from advisor.core import VM, Cluster, Host
from advisor.errors import InputError
from advisor.forecast.ahead import forecast_ahead
from advisor.forecast.features import FEATURES, TARGETS
from advisor.forecast.registry import CHAMPION, aliases, card_markdown, load_export, load_version
from advisor.forecast.retrain import History, in_batches, retrain, training_rows

START = pd.Timestamp("2024-01-01", tz="UTC")  # a Monday
runner = CliRunner()


def shared_store(factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the session (creating one costs MLflow seconds); tests keep apart by
    registered model name."""
    folder = factory.getbasetemp() / "mlflow-store"
    folder.mkdir(exist_ok=True)
    return f"sqlite:///{folder}/mlruns.db"


def fleet(n_vms: int = 16, days: float = 8.0, seed: int = 0) -> tuple[Cluster, pd.DataFrame]:
    """VMs with a daily CPU cycle (phases spread), noise, and memory following CPU; 1-4 vCPUs."""
    steps = round(days * 288)
    ts = START + pd.to_timedelta(np.arange(steps) * 300, unit="s")
    hours = np.arange(steps) / 12
    idx = np.arange(n_vms)
    noise = np.random.default_rng(seed).standard_normal((n_vms, steps))
    share = 0.5 + 0.35 * np.sin(2 * np.pi * (hours[None, :] - 24 * idx[:, None] / n_vms) / 24) + 0.05 * noise
    share = share.clip(0.0, 1.0)
    vcpus = 1 + idx % 4
    names = [f"vm{i:02d}" for i in idx]
    metrics = pd.DataFrame(
        {
            "vm": np.repeat(names, steps),
            "ts": np.tile(ts, n_vms),
            "cpu_cores": (share * vcpus[:, None]).ravel(),
            "mem_mib": ((0.3 + 0.5 * share) * 2048.0).ravel(),
        }
    )
    hosts = (Host("h0", 64.0, 1 << 20),)
    return Cluster(
        "t", hosts, tuple(VM(n, "h0", int(vcpus[i]), 2048.0) for i, n in enumerate(names))
    ), metrics


def fsettings(**kw: Any) -> ForecastSettings:
    """Small and fast; no short-term forecasters unless a test asks for them."""
    base: dict[str, Any] = {"horizon_h": 6.0, "season_h": 168.0, "origin_every_h": 3.0, "max_iter": 30}
    base |= {"ahead_horizons": [], "ahead_max_iter": 20}
    return ForecastSettings(**(base | kw))


# --- batches and rows ----------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(n_vms=st.integers(1, 9), batch=st.integers(1, 10), seed=st.integers(0, 100))
def test_batches_hold_whole_vms_and_every_row(n_vms: int, batch: int, seed: int) -> None:
    cluster, metrics = fleet(n_vms, days=0.1)
    shuffled = metrics.sample(frac=1.0, random_state=seed)
    parts = list(in_batches(cluster, shuffled, batch).batches)
    assert sum(map(len, parts)) == len(metrics)
    seen = [set(p["vm"]) for p in parts]
    assert all(1 <= len(s) <= batch for s in seen)
    assert sum(map(len, seen)) == n_vms  # no VM split across batches


def test_rows_do_not_depend_on_the_batch_size() -> None:
    cluster, metrics = fleet(7, days=3)
    s = fsettings()
    whole, facts = training_rows(in_batches(cluster, metrics, 100), s)
    split, _ = training_rows(in_batches(cluster, metrics, 2), s)
    key = ["vm", "origin"]
    pd.testing.assert_frame_equal(
        whole.sort_values(key).reset_index(drop=True), split.sort_values(key).reset_index(drop=True)
    )
    assert whole[list(TARGETS)].notna().any(axis=1).all()
    assert facts["vms"] == 7 and facts["samples"] == len(metrics) and facts["row_share"] == 1.0
    assert facts["step_s"] == "300 s" and facts["days"] == pytest.approx(3 - 1 / 288, abs=1e-3)


def test_rows_are_sampled_down_to_the_cap() -> None:
    cluster, metrics = fleet(80, days=4)
    every, _ = training_rows(in_batches(cluster, metrics, 10), fsettings())
    capped, facts = training_rows(in_batches(cluster, metrics, 10), fsettings(max_train_rows=1000))
    assert len(every) > 2000 and 850 < len(capped) < 1150
    assert facts["row_share"] == pytest.approx(len(capped) / len(every), abs=1e-3)


def test_bad_histories_are_named() -> None:
    cluster, metrics = fleet(3, days=2)
    with pytest.raises(InputError, match="no samples"):
        training_rows(in_batches(cluster, metrics.iloc[:0], 10), fsettings())
    with pytest.raises(InputError, match="too short for forecast.horizon_h = 6"):
        training_rows(
            in_batches(cluster, metrics[metrics["ts"] < START + pd.Timedelta(hours=2)], 10), fsettings()
        )
    stranger = Cluster("t", cluster.hosts, cluster.vms[:2])
    with pytest.raises(InputError, match="VM vm02 has metrics but is not in the inventory"):
        training_rows(History(stranger, [metrics]), fsettings())


# --- the whole job, three runs on one registry -----------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run 1: the naive forecaster (cannot beat naive): a challenger, no champion. Run 2: the learned
    one on the first 6 days, with short-term forecasters at 5 min (CPU, memory and the dirty rate):
    champion, exported. Run 3: naive again on all 8 days: stays challenger, compared with the champion
    on the origins after its data; the champion's file, deleted before, is exported again."""
    tmp = tmp_path_factory.mktemp("retrain")
    s = fsettings(
        tracking_uri=shared_store(tmp_path_factory),
        registry_model="retrain-runs",
        export_path=str(tmp / "models" / "champion.skops"),
        batch_vms=5,
    )
    cluster, metrics = fleet()
    metrics["dirty_mibps"] = 3.0 * metrics["cpu_cores"]  # MiB/s, as busy as the CPU
    early = metrics[metrics["ts"] < START + pd.Timedelta(days=6)]
    out: dict[str, Any] = {"settings": s, "cluster": cluster, "metrics": metrics, "tmp": tmp}
    out["naive"] = retrain(in_batches(cluster, early, 5), s.model_copy(update={"model": "naive"}))
    out["aliases_1"] = aliases(s)
    messages: list[str] = []
    learned = s.model_copy(update={"ahead_horizons": ["5min"]})
    out["learned"] = retrain(in_batches(cluster, early, 5), learned, messages.append)
    out["messages"] = messages
    out["aliases_2"] = aliases(s)
    Path(s.export_path).unlink()  # lost: the next run puts the standing champion back
    out["worse"] = retrain(in_batches(cluster, metrics, 5), s.model_copy(update={"model": "naive"}))
    out["aliases_3"] = aliases(s)
    return out


def test_a_model_that_cannot_beat_naive_is_only_a_challenger(runs: dict[str, Any]) -> None:
    first = runs["naive"]
    assert not first.decision.promote and "does not beat" in first.decision.reason
    assert runs["aliases_1"] == {"challenger": first.version} and first.exported is None


def test_the_learned_model_becomes_champion_and_is_exported(runs: dict[str, Any]) -> None:
    won, s = runs["learned"], runs["settings"]
    assert won.decision.promote and won.champion == won.version
    assert runs["aliases_2"] == {"champion": won.version}
    assert won.exported == s.export_path and Path(s.export_path).exists()
    assert any("features" in m for m in runs["messages"]) and any("MLflow" in m for m in runs["messages"])
    card = won.card
    assert card["data"]["vms"] == 16 and card["data"]["last_sample"] < str(START + pd.Timedelta(days=6))
    assert card["backtest"]["6h"]["holdout"]["score"]["model"] < 1.0
    assert set(card["decision"]["scores"]) == {"model", "naive", "seasonal naive"}
    record = MlflowClient(s.tracking_uri).get_run(won.run_id)
    assert record.data.metrics["promoted"] == 1.0
    assert record.data.metrics["backtest_score_model"] == pytest.approx(
        card["backtest"]["6h"]["holdout"]["score"]["model"]
    )


def test_short_term_forecasters_are_backtested_and_logged(runs: dict[str, Any]) -> None:
    """The sine fleet is predictable 5 min ahead beyond its noise: the model beats naive, and its P95
    covers about 95% of the held-out day."""
    card, s = runs["learned"].card, runs["settings"]
    assert set(card["ahead"]) == {"cpu_cores/5min", "mem_mib/5min", "dirty_mibps/5min"}
    assert runs["naive"].card["ahead"] == {}  # a run without ahead_horizons trains none
    metrics = MlflowClient(s.tracking_uri).get_run(runs["learned"].run_id).data.metrics
    for key, bt in card["ahead"].items():
        model, naive = bt["figures"]["model"], bt["figures"]["naive"]
        assert model["mae"] < 0.9 * naive["mae"], key
        assert 0.85 <= model["coverage_95"] <= 1.0, key
        # the last day of origins with a target: the training data ends at 23:55 on day 6
        assert bt["from"] == "2024-01-05T23:55:00+00:00" and bt["rows"] > 0
        metric, horizon = key.split("/")
        assert metrics[f"ahead_{metric}_{horizon}_mae_model"] == pytest.approx(model["mae"])
    table = [line for line in card_markdown(card).splitlines() if line.startswith("| cpu_cores/5min |")]
    assert len(table) == 1 and f"{card['ahead']['cpu_cores/5min']['ratio']:.3f}" in table[0]


def test_exported_champion_predicts_as_the_registered_model(runs: dict[str, Any]) -> None:
    s = runs["settings"]
    registered = load_version(s, CHAMPION)
    assert registered is not None and registered.model is not None
    exported, card = load_export(Path(s.export_path))
    assert card["version"] == registered.version == runs["learned"].version
    rows, _ = training_rows(in_batches(runs["cluster"], runs["metrics"], 16), s)
    X = rows[list(FEATURES)]
    np.testing.assert_array_equal(exported.predict(X), registered.model.predict(X))


def test_a_worse_challenger_stays_challenger(runs: dict[str, Any]) -> None:
    worse, champion = runs["worse"], runs["learned"].version
    assert not worse.decision.promote and worse.champion == champion
    assert worse.exported == runs["settings"].export_path
    assert load_export(Path(worse.exported))[1]["version"] == champion  # the champion, not run 3
    assert runs["aliases_3"] == {"champion": champion, "challenger": worse.version}
    assert f"champion v{champion}" in worse.decision.scores  # compared on the days the champion never saw
    duel = worse.card["backtest"]["6h"]["vs_champion"]
    assert duel["from"] >= runs["learned"].card["data"]["last_sample"]


def test_forecast_stage_uses_the_champion_and_says_so(runs: dict[str, Any]) -> None:
    s, tmp = runs["settings"], runs["tmp"]
    messages: list[str] = []
    cfg = Config(forecast=s)
    fc, summary = stages.forecast(cfg, tmp / "out", runs["cluster"], runs["metrics"], messages.append)
    label = f"champion retrain-runs v{runs['learned'].version}"
    assert summary["source"] == "champion" and fc.model == label
    assert any(label in m for m in messages)
    assert set(fc.vms) == {v.name for v in runs["cluster"].vms}
    assert (tmp / "out" / "forecast.json").exists()
    ahead = pd.read_csv(tmp / "out" / "forecast-ahead.csv")
    assert summary["ahead"]["keys"] == ["cpu_cores/5min", "dirty_mibps/5min", "mem_mib/5min"]
    assert len(ahead) == 3 * 16 and ahead.groupby("metric")["vm"].nunique().eq(16).all()
    assert (ahead["p95"] >= ahead["p50"]).all() and (ahead["p50"] >= 0).all()


def test_the_champions_short_term_forecast_beats_naive_after_its_data(runs: dict[str, Any]) -> None:
    """Forecasts of the exported champion from every hour of day 7 (after its training data), against
    what the next 5 minutes brought."""
    champion, _ = load_export(Path(runs["settings"].export_path))
    assert champion.ahead is not None
    metrics = runs["metrics"]
    errors = {"model": [], "naive": [], "covered": []}
    for hour in range(24):
        cut = START + pd.Timedelta(days=6, hours=hour)
        got = forecast_ahead(champion.ahead, metrics[metrics["ts"] <= cut])
        cpu = got[got["metric"] == "cpu_cores"].set_index("vm")
        now = metrics[metrics["ts"] == cut].set_index("vm")["cpu_cores"]
        then = metrics[metrics["ts"] == cut + pd.Timedelta(minutes=5)].set_index("vm")["cpu_cores"]
        errors["model"] += list((cpu["p50"] - then).abs())
        errors["naive"] += list((now - then).abs())
        errors["covered"] += list(then <= cpu["p95"])
    assert np.mean(errors["model"]) < 0.9 * np.mean(errors["naive"])
    assert np.mean(errors["covered"]) >= 0.85


# --- the command line --------------------------------------------------------------------------------


def run_cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    return result.exit_code, result.output


def test_advisor_train_registers_a_model(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    cluster, metrics = generate(SyntheticSettings(hosts=4, vms=20, days=4, seed=5), PowerSettings())
    trace = tmp_path / "trace.csv"
    metrics.to_csv(trace, index=False)
    uri = shared_store(tmp_path_factory)
    cfg = tmp_path / "advisor.toml"
    cfg.write_text(
        "[forecast]\nhorizon_h = 6.0\nseason_h = 24.0\norigin_every_h = 3.0\nmax_iter = 20\n"
        'ahead_horizons = ["1h"]\nahead_max_iter = 20\n'
    )
    code, text = run_cli(
        "train", "-c", str(cfg), "--source", "csv", "-p", str(trace), "--tracking-uri", uri,
        "--registry-model", "cli-train", "--export-path", str(tmp_path / "champion.skops"),
    )  # fmt: skip
    assert code == 0, text
    versions = MlflowClient(uri).search_model_versions("name = 'cli-train'")
    assert len(versions) == 1 and f"cli-train v{versions[0].version} is the" in text
    assert "backtest MAE, 6h ahead" in text
    assert "short-term forecasts, backtest" in text
    table = text[text.index("short-term forecasts, backtest") :]
    keys = [line.split()[1] for line in table.splitlines() if line.startswith("│")]
    assert keys == ["cpu_cores/1h", "mem_mib/1h"]


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), ("vm,ts,cpu_cores,mem_mib\n", "no data rows")],
    ids=["unknown-path", "empty-history"],
)
def test_advisor_train_bad_input_is_one_line(tmp_path: Path, content: str | None, message: str) -> None:
    trace = tmp_path / "trace.csv"
    if content is not None:
        trace.write_text(content)
    code, text = run_cli(
        "train", "--source", "csv", "-p", str(trace), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"
    )
    assert code == 2 and "Traceback" not in text
    said = [line for line in text.splitlines() if not line.startswith("train: ")]  # progress, as in a log
    assert len(said) == 1 and said[0].startswith("error: ") and message in said[0]
