"""The retraining job: collect the history the configuration names, then train, backtest, register and
export the forecaster (advisor.forecast.retrain).

Run it apart from the nightly job (after it, or weekly): the nightly forecast stage then uses the
exported champion instead of training a forecaster of its own each night.
"""

from __future__ import annotations

import time
from dataclasses import replace

from advisor import stages
from advisor.collect import collect
from advisor.config import Config
from advisor.forecast.retrain import RetrainResult, in_batches, retrain


def run_retrain(cfg: Config, progress: stages.Progress = stages.quiet) -> RetrainResult:
    progress("collecting the history")
    started = time.perf_counter()
    cluster, metrics = collect(cfg.collect, cfg.power, progress)
    collected = round(time.perf_counter() - started, 2)
    result = retrain(in_batches(cluster, metrics, cfg.forecast.batch_vms), cfg.forecast, progress)
    return replace(result, timings_s={"collect": collected, **result.timings_s})
