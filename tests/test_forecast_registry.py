"""The forecaster registry: the promotion rule, aliases in a real MLflow store, the model card, and the
exported champion the forecast stage loads without MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from advisor.config import ForecastSettings
from advisor.core import VM, Cluster, Host
from advisor.forecast.features import FEATURES, TARGETS, build_table, to_grid
from advisor.forecast.registry import (
    CHAMPION,
    CHAMPION_RUN,
    MODEL,
    NAIVE,
    SEASONAL,
    Backtest,
    Decision,
    ForecastBundle,
    aliases,
    bundle,
    card_markdown,
    champion_for_stage,
    decide,
    export,
    exported_version,
    load_export,
    load_version,
    model_card,
    register,
)
from advisor.forecast.tracking import log_forecaster, store
from advisor.forecast.train import fit_and_select

START = pd.Timestamp("2024-01-01", tz="UTC")


def shared_store(factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the session (creating one costs MLflow seconds); tests keep apart by
    registered model name."""
    folder = factory.getbasetemp() / "mlflow-store"
    folder.mkdir(exist_ok=True)
    return f"sqlite:///{folder}/mlruns.db"


def backtest(scores: dict[str, float], naive_mae: float = 2.0) -> Backtest:
    """Contenders whose MAE is `scores[c]` times the naive MAE on every target."""
    mae = {c: {t: s * naive_mae for t in TARGETS} for c, s in ({NAIVE: 1.0} | scores).items()}
    return Backtest(
        4,
        "2024-01-05T00:00:00+00:00",
        "2024-01-06T00:00:00+00:00",
        dict.fromkeys(TARGETS, 10),
        mae,
        mae,
    )


# --- the promotion rule ----------------------------------------------------------------------------


@given(
    model=st.floats(0.0, 3.0),
    seasonal=st.floats(0.0, 3.0),
    champion=st.none() | st.floats(0.0, 3.0),
    margin=st.sampled_from([0.0, 0.01, 0.1]),
)
def test_promoted_only_when_beating_every_bar_by_the_margin(
    model: float, seasonal: float, champion: float | None, margin: float
) -> None:
    holdout = backtest({MODEL: model, SEASONAL: seasonal})
    duel = None if champion is None else backtest({MODEL: model, CHAMPION_RUN: champion})
    got = decide(holdout, duel, margin, None if champion is None else "v1")
    bars = [1.0, seasonal] + ([] if champion is None else [champion])
    assert got.promote == all(model < (1 - margin) * b for b in bars)
    assert got.scores["model"] == pytest.approx(model)


def test_a_worse_challenger_is_told_why() -> None:
    got = decide(backtest({MODEL: 0.8, SEASONAL: 1.2}), backtest({MODEL: 0.8, CHAMPION_RUN: 0.7}), 0.01, "v4")
    assert not got.promote and "champion v4's 0.700" in got.reason


def test_an_incomparable_champion_is_no_bar_and_is_named() -> None:
    got = decide(backtest({MODEL: 0.8, SEASONAL: 1.2}), None, 0.01, "v4", "it forecasts 12 h ahead")
    assert got.promote and "champion v4 not compared: it forecasts 12 h ahead" in got.reason


def test_no_backtest_no_promotion() -> None:
    got = decide(None, None, 0.01)
    assert not got.promote and "too short" in got.reason


def test_mase_is_relative_to_naive_and_an_exact_naive_is_only_tied() -> None:
    bt = backtest({MODEL: 0.5, SEASONAL: 2.0})
    assert bt.mase(MODEL) == dict.fromkeys(TARGETS, 0.5) and bt.score(SEASONAL) == 2.0
    exact = backtest({MODEL: 0.0, SEASONAL: 1.0}, naive_mae=0.0)
    assert exact.score(MODEL) == 1.0 and not decide(exact, None, 0.0).promote


# --- a small real forecaster -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted() -> dict[str, Any]:
    """A forecaster trained on 12 VMs with a daily CPU cycle; its rows to predict on."""
    n, steps = 12, 6 * 288
    ts = START + pd.to_timedelta(np.arange(steps) * 300, unit="s")
    hours = np.arange(steps) / 12
    phase = np.arange(n)[:, None] * 2.0
    share = 0.5 + 0.4 * np.sin(2 * np.pi * (hours[None, :] - phase) / 24)
    names = [f"vm{i}" for i in range(n)]
    metrics = pd.DataFrame(
        {
            "vm": np.repeat(names, steps),
            "ts": np.tile(ts, n),
            "cpu_cores": (share * 4).ravel(),
            "mem_mib": (1024 + 512 * share).ravel(),
        }
    )
    cluster = Cluster("t", (Host("h", 64.0, 1 << 20),), tuple(VM(v, "h", 4, 2048.0) for v in names))
    settings = ForecastSettings(horizon_h=6.0, season_h=24.0, origin_every_h=3.0, max_iter=20)
    table = build_table(to_grid(metrics, names), cluster, settings)
    trained = fit_and_select(table, settings, pd.Timedelta(hours=6))
    rows = table[table[list(TARGETS)].notna().all(axis=1)]
    return {"settings": settings, "trained": trained, "rows": rows, "last": str(ts[-1].isoformat())}


def settings_for(fitted: dict[str, Any], uri: str, name: str, tmp_path: Path) -> ForecastSettings:
    return fitted["settings"].model_copy(
        update={
            "tracking_uri": uri,
            "registry_model": name,
            "experiment": "registry-tests",
            "export_path": str(tmp_path / "models" / "champion.skops"),
        }
    )


def log_version(
    fitted: dict[str, Any], s: ForecastSettings, decision: Decision
) -> tuple[str, ForecastBundle]:
    model = bundle(fitted["trained"].models, s, fitted["last"])
    logged = log_forecaster(
        model, fitted["trained"], s, {"vms": 12}, {"promoted": 0.0}, fitted["rows"].tail(5)
    )
    return register(s, logged["model_uri"], logged["run_id"], decision, logged["model_id"]), model


def test_bundle_predicts_every_target_as_its_estimators_do(fitted: dict[str, Any]) -> None:
    model = bundle(fitted["trained"].models, fitted["settings"], fitted["last"])
    X = fitted["rows"][list(FEATURES)]
    got = model.predict(X)
    assert got.shape == (len(X), len(TARGETS))
    for i, t in enumerate(TARGETS):
        np.testing.assert_array_equal(got[:, i], fitted["trained"].models[t].predict(X))


def test_bundle_refuses_other_settings(fitted: dict[str, Any]) -> None:
    model = bundle(fitted["trained"].models, fitted["settings"], fitted["last"])
    assert model.unfit_for(fitted["settings"]) is None
    assert "12 h" in (model.unfit_for(fitted["settings"].model_copy(update={"horizon_h": 12.0})) or "")
    assert "season" in (model.unfit_for(fitted["settings"].model_copy(update={"season_h": 168.0})) or "")
    assert "features" in (ForecastBundle(model.models, 6.0, 24.0, ("x",)).unfit_for(fitted["settings"]) or "")


# --- the registry, with a real MLflow store ----------------------------------------------------------


def test_aliases_move_only_when_the_challenger_wins(
    fitted: dict[str, Any], tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    s = settings_for(fitted, shared_store(tmp_path_factory), "aliases", tmp_path)
    assert aliases(s) == {} and load_version(s, CHAMPION) is None
    win, lose = Decision(True, "better", {}), Decision(False, "worse", {})
    v1, _ = log_version(fitted, s, win)
    assert aliases(s) == {"champion": v1}
    v2, _ = log_version(fitted, s, lose)
    assert aliases(s) == {"champion": v1, "challenger": v2}  # a worse challenger stays challenger
    v3, _ = log_version(fitted, s, lose)
    assert aliases(s) == {"champion": v1, "challenger": v3}
    v4, _ = log_version(fitted, s, win)
    assert aliases(s) == {"champion": v4}  # the winner leaves no challenger behind
    assert len({v1, v2, v3, v4}) == 4


def test_exported_champion_predicts_as_the_registered_one(
    fitted: dict[str, Any], tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    s = settings_for(fitted, shared_store(tmp_path_factory), "export", tmp_path)
    version, model = log_version(fitted, s, Decision(True, "better", {}))
    with store(s):
        registered = mlflow.sklearn.load_model(f"models:/{s.registry_model}@champion")
    loaded = load_version(s, CHAMPION)
    assert loaded is not None and loaded.version == version and isinstance(loaded.model, ForecastBundle)
    path = Path(s.export_path)
    export(
        loaded.model,
        {"registered_model": s.registry_model, "tracking_uri": s.tracking_uri, "version": version},
        path,
    )
    assert exported_version(path, s) == version
    assert exported_version(path, s.model_copy(update={"registry_model": "other"})) is None
    from_file, card = load_export(path)
    X = fitted["rows"][list(FEATURES)]
    np.testing.assert_array_equal(from_file.predict(X), registered.predict(X))
    np.testing.assert_array_equal(from_file.predict(X), model.predict(X))
    assert card["version"] == version and from_file.trained_until == fitted["last"]


# --- what the forecast stage is given ----------------------------------------------------------------


def test_stage_gets_the_champion_only_when_it_fits(fitted: dict[str, Any], tmp_path: Path) -> None:
    s = fitted["settings"].model_copy(update={"export_path": str(tmp_path / "c.skops")})
    assert champion_for_stage(s).model is None and "run `advisor train`" in champion_for_stage(s).label
    assert "empty" in champion_for_stage(s.model_copy(update={"export_path": ""})).label
    model = bundle(fitted["trained"].models, s, fitted["last"])
    export(model, {"registered_model": "m", "version": "7", "run_id": "r"}, Path(s.export_path))
    got = champion_for_stage(s)
    assert got.model is not None and got.label == "champion m v7"
    other = champion_for_stage(s.model_copy(update={"horizon_h": 12.0}))
    assert other.model is None and "does not fit" in other.label and "12" in other.label
    Path(s.export_path).write_bytes(b"not a model")
    damaged = champion_for_stage(s)
    assert damaged.model is None and "not a forecaster" in damaged.label


def test_model_card_tells_data_backtest_and_decision(fitted: dict[str, Any]) -> None:
    facts = {
        "first_sample": "2024-01-01T00:00:00+00:00",
        "last_sample": fitted["last"],
        "days": 6.0,
        "vms": 12,
        "inventory_vms": 12,
        "samples": 20736,
        "step_s": "300 s",
        "rows": 500,
        "row_share": 0.5,
    }
    holdout = backtest({MODEL: 0.5, SEASONAL: 0.9})
    duel = backtest({MODEL: 0.5, CHAMPION_RUN: 0.7})
    decision = decide(holdout, duel, 0.01, "v1")
    card = model_card(
        fitted["settings"],
        facts,
        {t: "quantile_gbm" for t in TARGETS},
        "",
        holdout,
        duel,
        decision,
        "2",
        "run",
    )
    json.dumps(card)
    figures = card["backtest"]["6h"]
    assert set(figures) == {"holdout", "vs_champion"}
    assert figures["vs_champion"]["targets"]["cpu_p95"][CHAMPION_RUN]["mase"] == pytest.approx(0.7)
    assert card["decision"]["alias"] == "champion" and card["model"]["features"] == list(FEATURES)
    text = card_markdown(card)
    assert "v2" in text and decision.reason in text and "a 50% sample" in text
    assert "| cpu_p95 | champion | 1.4 | 0.700 |" in text
