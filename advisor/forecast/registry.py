"""The forecaster's MLflow registry: versions, the `champion` and `challenger` aliases, the promotion
rule, the model card, and the champion's export to a file.

One registered model (`forecast.registry_model`) whose versions are whole forecasters: the four target
estimators of one training run in a `ForecastBundle`, so that an alias moves all four at once. The
forecast stage uses the champion; every other new version is the challenger until one beats the
champion. The export (`forecast.export_path`, a skops file and a JSON card beside it) lets the forecast
stage load the champion without reaching the MLflow store.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow.sklearn
import numpy as np
import pandas as pd
import skops.io as sio
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.base import BaseEstimator

from advisor import files
from advisor.config import ForecastSettings
from advisor.errors import InputError
from advisor.forecast.ahead import SUMMARY_COLUMNS, AheadForecaster, summary_rows
from advisor.forecast.features import FEATURES, TARGETS
from advisor.forecast.tracking import CARD_JSON, TRUSTED_TYPES, store

CHAMPION = "champion"
CHALLENGER = "challenger"
# Contenders of a backtest: the new model, the baselines it must beat, and the champion when it can be
# scored on the same rows.
MODEL, NAIVE, SEASONAL, CHAMPION_RUN = "model", "naive", "seasonal_naive", "champion"


class ForecastBundle(BaseEstimator):
    """The estimator of every target of one training run, as one model: what a registry version holds
    and the forecast stage loads. `predict` gives one column per TARGETS (shares of the VM's size).
    `ahead` holds the run's short-term forecasters (advisor.forecast.ahead), None when it trained none.

    It remembers the settings its features depend on, so that a champion trained for another horizon
    or season is not used to answer a different question, and the last sample it learnt from
    (`trained_until`, ISO 8601), so that it is compared with a challenger only on later data."""

    def __init__(
        self,
        models: Mapping[str, BaseEstimator] | None = None,
        horizon_h: float = 24.0,
        season_h: float = 168.0,
        features: Sequence[str] = (),
        trained_until: str = "",
        ahead: AheadForecaster | None = None,
    ) -> None:
        self.models = models
        self.horizon_h = horizon_h
        self.season_h = season_h
        self.features = features
        self.trained_until = trained_until
        self.ahead = ahead

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        models = self.models or {}
        return np.column_stack([models[t].predict(X) for t in TARGETS])

    def unfit_for(self, settings: ForecastSettings) -> str | None:
        """Why this forecaster cannot serve `settings` (None when it can)."""
        if self.horizon_h != settings.horizon_h:
            return f"it forecasts {self.horizon_h:g} h ahead, forecast.horizon_h = {settings.horizon_h:g} h"
        if self.season_h != settings.season_h:
            return f"its season is {self.season_h:g} h, forecast.season_h = {settings.season_h:g} h"
        if tuple(self.features) != FEATURES:
            return "it reads other features than this version of advisor builds"
        if set(self.models or {}) != set(TARGETS):
            return f"it lacks a model for one of {', '.join(TARGETS)}"
        return None


def bundle(
    models: Mapping[str, BaseEstimator],
    settings: ForecastSettings,
    trained_until: str,
    ahead: AheadForecaster | None = None,
) -> ForecastBundle:
    return ForecastBundle(dict(models), settings.horizon_h, settings.season_h, FEATURES, trained_until, ahead)


# --- backtest figures and the promotion rule ------------------------------------------------------------


@dataclass(frozen=True)
class Backtest:
    """Errors of the contenders on the same held-out rows.

    `mae[contender][target]` in cores or MiB; `covered[contender][target]` is the share of rows whose
    actual value is at or below the forecast. Contenders: MODEL, NAIVE, SEASONAL and, when the champion
    could be scored on these rows, CHAMPION_RUN."""

    origins: int
    first_origin: str
    last_origin: str
    rows: dict[str, int]
    mae: dict[str, dict[str, float]]
    covered: dict[str, dict[str, float]]

    def mase(self, contender: str) -> dict[str, float]:
        """MAE over the naive MAE on the same rows, per target (1 = as good as the last window)."""
        return {t: _ratio(self.mae[contender][t], self.mae[NAIVE][t]) for t in TARGETS}

    def score(self, contender: str) -> float:
        """The promotion score: the mean MASE over the targets, so that cores and MiB weigh alike."""
        return float(np.mean(list(self.mase(contender).values())))


def _ratio(a: float, b: float) -> float:
    if b > 0:
        return a / b
    return 1.0 if a == 0 else math.inf  # the naive forecast is exact: only an exact one ties it


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    # contender -> mean MASE; "model vs champion" and the champion's are on the duel's rows
    scores: dict[str, float]


def decide(
    holdout: Backtest | None,
    duel: Backtest | None,
    margin: float,
    champion: str | None = None,
    champion_note: str = "",
) -> Decision:
    """Promote the new model only when its backtest score is below (1 - margin) times the naive
    baselines' on the held-out rows and, when there is a champion (`champion` names its version),
    below (1 - margin) times the champion's on the `duel`: the held-out rows after the champion's
    last training sample. A champion that could not be scored (`champion_note` says why) is not a bar."""
    if holdout is None:
        return Decision(False, "no backtest: the history is too short to hold out a test period", {})
    bars = {"naive": holdout.score(NAIVE), "seasonal naive": holdout.score(SEASONAL)}
    scores = {"model": holdout.score(MODEL), **bars}
    checks = [("", holdout.score(MODEL), bars)]
    if champion and duel is not None:
        vs = {f"champion {champion}": duel.score(CHAMPION_RUN)}
        scores |= {"model vs champion": duel.score(MODEL), **vs}
        where = f" on the {duel.origins} origin(s) after the champion's training data"
        checks.append((where, duel.score(MODEL), vs))
    pct = f"{100 * margin:g}%"
    fails, wins = [], []
    for where, score, against in checks:
        best = min(against, key=lambda n: against[n])
        if score < (1 - margin) * against[best]:
            wins.append(
                f"mean MASE {score:.3f}{where} beats " + ", ".join(f"{n} {v:.3f}" for n, v in against.items())
            )
        else:
            fails.append(f"mean MASE {score:.3f}{where} does not beat {best}'s {against[best]:.3f} by {pct}")
    reason = "; ".join(fails) if fails else "; ".join(wins) + f", each by more than {pct}"
    if champion and duel is None:
        reason += f"; champion {champion} not compared: {champion_note}"
    return Decision(not fails, reason, scores)


# --- the model card ---------------------------------------------------------------------------------------


def model_card(
    settings: ForecastSettings,
    facts: Mapping[str, Any],
    chosen: Mapping[str, str],
    note: str,
    holdout: Backtest | None,
    duel: Backtest | None,
    decision: Decision,
    version: str,
    run_id: str,
    ahead: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """What the forecaster is, what it learnt from and how it did: logged with its run and exported with
    the champion. JSON-able. `ahead`: the short-term forecasters' backtests (ahead.fit_ahead)."""
    tests = {name: _figures(bt) for name, bt in (("holdout", holdout), ("vs_champion", duel)) if bt}
    return {
        "registered_model": settings.registry_model,
        "version": version,
        "run_id": run_id,
        "tracking_uri": settings.tracking_uri,
        "data": dict(facts),
        "model": {
            "horizon_h": settings.horizon_h,
            "season_h": settings.season_h,
            "chosen": dict(chosen),
            "note": note,
            "features": list(FEATURES),
        },
        "backtest": {f"{settings.horizon_h:g}h": tests} if tests else {},
        "ahead": {k: dict(v) for k, v in (ahead or {}).items()},
        "decision": {**asdict(decision), "alias": CHAMPION if decision.promote else CHALLENGER},
    }


def _figures(bt: Backtest) -> dict[str, Any]:
    return {
        "origins": bt.origins,
        "from": bt.first_origin,
        "to": bt.last_origin,
        "rows": bt.rows,
        "targets": {
            t: {c: {"mae": bt.mae[c][t], "mase": bt.mase(c)[t], "covered": bt.covered[c][t]} for c in bt.mae}
            for t in TARGETS
        },
        "score": {c: bt.score(c) for c in bt.mae},
    }


def card_markdown(card: Mapping[str, Any]) -> str:
    """The card for people: the MLflow UI shows it beside the run, and it sits next to the export."""
    d, m, dec = card["data"], card["model"], card["decision"]
    lines = [
        f"# Forecaster {card['registered_model']} v{card['version']}",
        "",
        f"MLflow run `{card['run_id']}` in `{card['tracking_uri']}`.",
        "",
        f"**{'Champion' if dec['promote'] else 'Challenger'}**: {dec['reason']}.",
        "",
        "## Data",
        f"- span: {d['first_sample']} to {d['last_sample']} ({d['days']:.1f} days), step {d['step_s']}",
        f"- {d['vms']:,} VMs, {d['samples']:,} samples; {d['rows']:,} training rows"
        + (f" (a {d['row_share']:.0%} sample)" if d["row_share"] < 1 else ""),
        "",
        "## Model",
        f"- P50 and P95 of CPU and memory over the next {m['horizon_h']:g} h, as shares of the VM's size; "
        f"seasonal baseline {m['season_h']:g} h back",
        "- per target: "
        + ", ".join(f"{t} {n}" for t, n in m["chosen"].items())
        + (f" ({m['note']})" if m["note"] else ""),
        f"- {len(m['features'])} features: " + ", ".join(m["features"]),
        "",
    ]
    titles = {"holdout": "held-out origins", "vs_champion": "origins after the champion's training data"}
    for horizon, tests in card["backtest"].items():
        for name, f in tests.items():
            lines += [
                f"## Backtest, {horizon} horizon, {titles[name]}",
                f"{f['origins']} origins from {f['from']} to {f['to']}; the model was fitted on the rows "
                "whose targets end before them. MAE in cores (cpu) or MiB (mem); MASE = MAE / naive MAE; "
                "covered = share of rows at or below the forecast.",
                "",
                "| target | contender | MAE | MASE | covered |",
                "|---|---|---:|---:|---:|",
            ]
            for target, by in f["targets"].items():
                for contender, v in by.items():
                    lines.append(
                        f"| {target} | {contender} | {v['mae']:.4g} | {v['mase']:.3f} | {v['covered']:.2f} |"
                    )
            lines += ["", "Mean MASE: " + ", ".join(f"{c} {v:.3f}" for c, v in f["score"].items()), ""]
    if card.get("ahead"):
        lines += [
            "## Short-term forecasts, backtest on the held-out last day(s)",
            "P50 and calibrated P95 per metric and horizon (advisor.forecast.ahead). MAE in cores, MiB or "
            "MiB/s; ratio = model MAE / the best baseline's; coverage = share of rows at or below the P95.",
            "",
            "| " + " | ".join(SUMMARY_COLUMNS) + " |",
            "|---|---:|---:|---|---:|---:|---:|",
        ]
        lines += ["| " + " | ".join(cells) + " |" for cells in summary_rows(card["ahead"])]
        lines.append("")
    return "\n".join(lines) + "\n"


# --- the registry -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    """A registered version and, when it could be loaded, its forecaster (`note` says why not)."""

    version: str
    run_id: str
    model: ForecastBundle | None
    note: str = ""


def aliases(settings: ForecastSettings) -> dict[str, str]:
    """Alias -> version of the registered model ({} before its first version)."""
    with store(settings):
        try:
            found = MlflowClient(settings.tracking_uri).get_registered_model(settings.registry_model)
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise
        return {a: str(v) for a, v in found.aliases.items()}


def load_version(settings: ForecastSettings, alias: str) -> Version | None:
    """The version `alias` points at, with its forecaster loaded back (None when no version has it)."""
    version = aliases(settings).get(alias)
    if version is None:
        return None
    with store(settings):
        mv = MlflowClient(settings.tracking_uri).get_model_version(settings.registry_model, version)
        try:
            model = mlflow.sklearn.load_model(f"models:/{settings.registry_model}/{version}")
        except Exception as e:  # an old version's code or types may be gone: report, do not crash
            return Version(version, mv.run_id or "", None, f"cannot be loaded ({type(e).__name__}: {e})")
    if not isinstance(model, ForecastBundle):
        return Version(version, mv.run_id or "", None, f"holds a {type(model).__name__}, not a forecaster")
    return Version(version, mv.run_id or "", model)


def register(
    settings: ForecastSettings, model_uri: str, run_id: str, decision: Decision, model_id: str | None = None
) -> str:
    """Register the run's forecaster as a new version and move the aliases as `decision` says: a winner
    becomes champion (and the challenger alias, if any, is dropped); otherwise it is the challenger and
    the champion stays where it is. Returns the version."""
    name = settings.registry_model
    tags = {"promotion": "champion" if decision.promote else "challenger", "reason": decision.reason}
    with store(settings):
        client = MlflowClient(settings.tracking_uri)
        try:
            client.create_registered_model(name, description="advisor demand forecaster (advisor train)")
        except MlflowException as e:
            if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        mv = client.create_model_version(name, model_uri, run_id=run_id, tags=tags, model_id=model_id)
        version = str(mv.version)
        if decision.promote:
            client.set_registered_model_alias(name, CHAMPION, version)
            client.delete_registered_model_alias(name, CHALLENGER)
        else:
            client.set_registered_model_alias(name, CHALLENGER, version)
    return version


def run_card(settings: ForecastSettings, run_id: str) -> dict[str, Any]:
    """The model card logged with a run ({} if it has none)."""
    with store(settings):
        try:
            card: dict[str, Any] = mlflow.artifacts.load_dict(f"runs:/{run_id}/{CARD_JSON}")
        except (MlflowException, OSError):
            return {}
    return card


# --- the export -----------------------------------------------------------------------------------------


def card_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def export(model: ForecastBundle, card: Mapping[str, Any], path: Path) -> None:
    """Write the forecaster (skops) and its card (JSON) through temporary files, so that the forecast
    stage never reads half a model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    sio.dump(model, tmp)
    tmp.replace(path)
    files.write_json(card_path(path), card)


def exported_version(path: Path, settings: ForecastSettings) -> str | None:
    """The version of this registry that the file at `path` holds (None if none or another registry's)."""
    if not path.exists() or not card_path(path).exists():
        return None
    card = files.read_json(card_path(path), "written by advisor train")
    same = card.get("registered_model") == settings.registry_model
    same = same and card.get("tracking_uri") == settings.tracking_uri
    return str(card.get("version")) if same else None


def load_export(path: Path) -> tuple[ForecastBundle, dict[str, Any]]:
    """The exported forecaster and its card; InputError naming the file when it is not one."""
    try:
        model = sio.load(path, trusted=TRUSTED_TYPES)
    except FileNotFoundError:
        raise InputError(f"{path}: no such forecaster file (run `advisor train`)") from None
    except Exception as e:  # skops raises many types for foreign or damaged files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"{path}: not a forecaster exported by advisor train ({first})") from None
    if not isinstance(model, ForecastBundle):
        raise InputError(f"{path}: holds a {type(model).__name__}, not a forecaster")
    card = files.read_json(card_path(path), "written by advisor train with the forecaster")
    return model, card


@dataclass(frozen=True)
class StageModel:
    """What the forecast stage should use: the exported champion, or None and why not."""

    model: ForecastBundle | None
    label: str
    card: dict[str, Any]


def champion_for_stage(settings: ForecastSettings) -> StageModel:
    """The exported champion when there is one that fits `settings`; otherwise the reason, so the
    stage can say why it trains a forecaster itself. A damaged file is a reason, not a crash: the
    nightly job still runs."""
    if not settings.export_path:
        return StageModel(None, "no champion configured (forecast.export_path is empty)", {})
    path = Path(settings.export_path)
    if not path.exists():
        return StageModel(None, f"no champion at {path} (forecast.export_path; run `advisor train`)", {})
    try:
        model, card = load_export(path)
    except InputError as e:
        return StageModel(None, str(e), {})
    unfit = model.unfit_for(settings)
    if unfit:
        return StageModel(None, f"the champion at {path} does not fit: {unfit}", card)
    label = f"champion {card.get('registered_model', '?')} v{card.get('version', '?')}"
    return StageModel(model, label, card)
