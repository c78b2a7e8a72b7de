"""The nightly consolidation job: collect, forecast, plan, dry run, report.

Runs the stages in memory, one after the other, and writes every stage's file into the output
directory, so a failed night can be inspected and any stage rerun alone with the `advisor` CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor import stages
from advisor.config import Config
from advisor.core import Forecast, Plan


@dataclass(frozen=True)
class NightlyResult:
    out: Path
    forecast: Forecast
    plan: Plan
    dry_run: dict[str, Any]
    report: Path


def run_nightly(cfg: Config, progress: stages.Progress = stages.quiet) -> NightlyResult:
    out = Path(cfg.output.dir)
    progress("collecting metrics")
    cluster, metrics = stages.collect(cfg, out, progress)
    progress("training the forecaster")
    fc, _ = stages.forecast(cfg, out, cluster, metrics, progress)
    progress("planning")
    plan = stages.plan(cfg, out, cluster, fc, progress, metrics)
    progress("dry run")
    dry = stages.dry_run(cfg, out, cluster, fc, plan, metrics)
    progress("report")
    report = stages.report(cfg, out, cluster, fc, plan, dry)
    return NightlyResult(out=out, forecast=fc, plan=plan, dry_run=dry, report=report)
