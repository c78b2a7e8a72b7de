"""The shell around the pure stages: each reads what the previous stage wrote and writes its own file.

A stage given its inputs in memory (as the nightly job does) skips the read but still writes, so every
intermediate file is there to inspect or to rerun one stage from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from advisor import files
from advisor.config import Config
from advisor.core import Cluster, Forecast, MigrationReason, Plan
from advisor.metrics import read_metrics, validate_metrics, write_metrics

if TYPE_CHECKING:
    from advisor.migration import MigrationPrediction
    from advisor.migration.live_window import LiveWindow
    from advisor.optimize.demand import JointHistory

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    pass


def collect(cfg: Config, out: Path, progress: Progress = quiet) -> tuple[Cluster, pd.DataFrame]:
    from advisor.collect import collect as collect_source

    cluster, metrics = collect_source(cfg.collect, cfg.power, progress)
    out.mkdir(parents=True, exist_ok=True)
    progress("writing cluster and metrics")
    files.write_cluster(out / files.CLUSTER_FILE, cluster)
    write_metrics(metrics, out / files.METRICS_FILE)
    return cluster, metrics


def forecast(
    cfg: Config,
    out: Path,
    cluster: Cluster | None = None,
    metrics: pd.DataFrame | None = None,
    progress: Progress = quiet,
) -> tuple[Forecast, dict[str, Any]]:
    from advisor.forecast import train_and_forecast
    from advisor.forecast.ahead import forecast_ahead
    from advisor.forecast.features import to_grid
    from advisor.forecast.predict import forecast_on
    from advisor.forecast.registry import champion_for_stage

    cluster = cluster or files.read_cluster(out / files.CLUSTER_FILE)
    metrics = metrics if metrics is not None else read_metrics(out / files.METRICS_FILE)
    champion = champion_for_stage(cfg.forecast)  # the one `advisor train` exported, if it fits
    if champion.model is not None:
        progress(f"forecasting with the {champion.label} ({cfg.forecast.export_path})")
        checked = validate_metrics(metrics, "metrics")
        grid = to_grid(checked, [v.name for v in cluster.vms])
        result, short = forecast_on(grid, cluster, champion.model.models or {}, cfg.forecast, champion.label)
        summary = {"source": "champion", "model": champion.label, "run_id": champion.card.get("run_id")}
        summary |= {"card": champion.card, "naive_fallback_vms": short}
        ahead = getattr(champion.model, "ahead", None)  # None in champions exported before it existed
        if ahead is not None:
            progress("short-term forecasts with the champion")
            frame = forecast_ahead(ahead, checked[checked["vm"].isin(set(grid.vms))])
            files.write_text(out / files.FORECAST_AHEAD_FILE, frame.to_csv(index=False))
            summary["ahead"] = {
                "file": files.FORECAST_AHEAD_FILE,
                "keys": sorted(set(frame["metric"] + "/" + frame["horizon"])),
                "vms": int(frame["vm"].nunique()),
            }
    else:
        progress(f"{champion.label}: training a forecaster now")
        result, summary = train_and_forecast(cluster, metrics, cfg.forecast, progress)
        summary |= {"source": "trained now", "no_champion": champion.label}
    files.write_forecast(out / files.FORECAST_FILE, result)
    files.write_json(out / files.FORECAST_SUMMARY_FILE, summary)
    return result, summary


def backtest(
    cfg: Config, out: Path, metrics: pd.DataFrame | None = None, progress: Progress = quiet
) -> pd.DataFrame:
    """Rolling-origin backtest of the short-term forecasters on the collected metrics: OUT/backtest.csv."""
    from advisor.forecast.ahead import rolling_backtest

    metrics = metrics if metrics is not None else read_metrics(out / files.METRICS_FILE)
    tidy = rolling_backtest(validate_metrics(metrics, "metrics"), cfg.forecast, progress)
    files.write_text(out / files.BACKTEST_FILE, tidy.to_csv(index=False))
    return tidy


def plan(
    cfg: Config,
    out: Path,
    cluster: Cluster | None = None,
    fc: Forecast | None = None,
    progress: Progress = quiet,
    metrics: pd.DataFrame | None = None,
    moved_at: dict[str, Any] | None = None,
) -> Plan:
    """`moved_at`: VM -> when it last moved (a UTC datetime), for anti-ping-pong; by default read from the
    apply journal. The joint peak model reads the metrics history (`metrics`, else the collected file),
    and so do the live windows of VMs that cannot move live now.

    Every VM's move is predicted once, at its forecast dirty rate (with the learned correction when
    `[migration] measurements` names one): the planner charges it by the MiB it transfers and holds a VM
    predicted not to converge live unless it must move; the sequencer reports it; the plan lists the
    VMs that cannot move live with their live windows."""
    from advisor.execute.journal import journal_path, last_moves
    from advisor.optimize import plan_fleet
    from advisor.optimize.pareto import pareto_sweep

    cluster = cluster or files.read_cluster(out / files.CLUSTER_FILE)
    fc = fc or files.read_forecast(out / files.FORECAST_FILE)
    fc.check_covers(cluster)
    if moved_at is None:
        moved_at = dict(last_moves(journal_path(cfg, out)))
        if moved_at:
            progress(f"{len(moved_at)} VM(s) moved before, per the apply journal (plan.sticky_h)")
    if cfg.plan.peak_model == "joint" and metrics is None:
        metrics = read_metrics(out / files.METRICS_FILE)
    history = _joint_history(cfg, cluster, fc, metrics)
    moves, windows = _moves(cfg, out, cluster, fc, metrics, progress)
    result = plan_fleet(cluster, fc, cfg.plan, progress, moved_at, history, moves)
    reason = {m.vm: m.reason.value for m in result.migrations if m.reason != MigrationReason.PARK}
    result = replace(
        result, cannot_move_live=tuple(replace(w, moved=reason.get(w.vm, "")).to_dict() for w in windows)
    )
    files.write_plan(out / files.PLAN_FILE, result)
    pareto = out / files.PARETO_FILE
    if cfg.plan.pareto_caps:
        points = pareto_sweep(cluster, fc, cfg.plan, result, progress, moved_at, history, moves)
        files.write_json(
            pareto,
            {
                "cluster_fingerprint": result.cluster_fingerprint,
                "forecast_fingerprint": result.forecast_fingerprint,
                "points": [p.to_dict() for p in points],
            },
        )
    else:
        pareto.unlink(missing_ok=True)  # a sweep of an earlier plan would be shown beside this one
    return result


def _joint_history(
    cfg: Config, cluster: Cluster, fc: Forecast, metrics: pd.DataFrame | None
) -> JointHistory | None:
    """The VMs' joint CPU history when `plan.peak_model = "joint"` (the caller reads `metrics`)."""
    from advisor.optimize.demand import joint_history

    if cfg.plan.peak_model != "joint" or metrics is None:
        return None
    return joint_history(cluster, fc, metrics, cfg.plan.peak_history_h)


def _moves(
    cfg: Config,
    out: Path,
    cluster: Cluster,
    fc: Forecast,
    metrics: pd.DataFrame | None,
    progress: Progress,
) -> tuple[dict[str, MigrationPrediction], list[LiveWindow]]:
    """Every VM's move at its forecast dirty rate, and the live windows of those that cannot move live
    (read from `metrics`, else the collected file if there is one)."""
    from advisor.migration import configured_correction, predict_moves
    from advisor.migration.live_window import cannot_move_live, live_windows

    correction = configured_correction(cfg.migration.measurements)
    if correction is not None:
        progress(f"migration model: learned correction fitted on {cfg.migration.measurements}")
    bandwidth, downtime = cfg.plan.bandwidth_mibps, cfg.plan.max_downtime_ms
    moves = predict_moves(
        {v.name: v.mem_mib for v in cluster.vms},
        {v.name: fc.vms[v.name].dirty_mibps for v in cluster.vms},
        bandwidth,
        downtime,
        correction,
    )
    held = cannot_move_live(cluster, moves)
    if not held:
        return moves, []
    progress(f"{len(held)} VM(s) predicted not to move live now: held unless they must move")
    if metrics is None and (out / files.METRICS_FILE).exists():
        metrics = read_metrics(out / files.METRICS_FILE)
    return moves, live_windows(cluster, fc, held, metrics, bandwidth, downtime, correction)


def dry_run(
    cfg: Config,
    out: Path,
    cluster: Cluster | None = None,
    fc: Forecast | None = None,
    the_plan: Plan | None = None,
    metrics: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The plan played wave by wave against the forecast (the joint peak model reads the metrics
    history: `metrics`, else the collected file)."""
    from advisor.execute import dry_run as play

    cluster = cluster or files.read_cluster(out / files.CLUSTER_FILE)
    fc = fc or files.read_forecast(out / files.FORECAST_FILE)
    the_plan = the_plan or files.read_plan(out / files.PLAN_FILE)
    if cfg.plan.peak_model == "joint" and metrics is None:
        metrics = read_metrics(out / files.METRICS_FILE)
    result = play(cluster, fc, the_plan, cfg.plan, _joint_history(cfg, cluster, fc, metrics)).to_dict()
    files.write_json(out / files.DRYRUN_FILE, result)
    return result


def report(
    cfg: Config,
    out: Path,
    cluster: Cluster | None = None,
    fc: Forecast | None = None,
    the_plan: Plan | None = None,
    dry: dict[str, Any] | None = None,
) -> Path:
    from advisor.report import write_report

    cluster = cluster or files.read_cluster(out / files.CLUSTER_FILE)
    fc = fc or files.read_forecast(out / files.FORECAST_FILE)
    the_plan = the_plan or files.read_plan(out / files.PLAN_FILE)
    if dry is None and (out / files.DRYRUN_FILE).exists():
        dry = files.read_json(out / files.DRYRUN_FILE, "run `advisor apply --dry-run`")
    pareto = None
    if (out / files.PARETO_FILE).exists():
        sweep = files.read_json(out / files.PARETO_FILE, "run `advisor plan`")
        if sweep.get("cluster_fingerprint") == the_plan.cluster_fingerprint:
            pareto = sweep["points"]
    path = out / files.REPORT_FILE
    write_report(
        path,
        cluster,
        fc,
        the_plan,
        dry,
        headroom=cfg.plan.cpu_headroom,
        mem_headroom=cfg.plan.mem_headroom,
        pareto=pareto,
    )
    return path
