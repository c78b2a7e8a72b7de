"""The retraining job: collect the history the configuration names, then train, backtest, register and
export the forecaster (advisor.forecast.retrain).

Run it apart from the nightly job (after it, or weekly): the nightly forecast stage then uses the
exported champion instead of training a forecaster of its own each night.

Bitbrains, CSV and Parquet histories are read in chunks (`forecast.chunk_rows` rows at a time,
advisor.collect.chunks) so that memory holds one batch of VMs, not the whole file; the other sources,
or `forecast.chunk_rows = 0`, collect the whole history first. Both give the same batches.
"""

from __future__ import annotations

import time
from dataclasses import replace

from advisor import stages
from advisor.collect import collect
from advisor.collect.chunks import STREAMED, read_runs
from advisor.config import Config
from advisor.forecast.retrain import History, RetrainResult, in_batches, in_runs, retrain


def history(cfg: Config, progress: stages.Progress = stages.quiet) -> History:
    """The history of `cfg.collect`, in batches of `forecast.batch_vms` VMs."""
    batch_vms, chunk_rows = cfg.forecast.batch_vms, cfg.forecast.chunk_rows
    if chunk_rows and cfg.collect.source in STREAMED:
        progress(f"reading the inventory, {chunk_rows:,} rows at a time")
        cluster, runs = read_runs(cfg.collect, cfg.power, chunk_rows, progress)
        return in_runs(cluster, runs, batch_vms)
    progress("collecting the history")
    cluster, metrics = collect(cfg.collect, cfg.power, progress)
    return in_batches(cluster, metrics, batch_vms)


def run_retrain(cfg: Config, progress: stages.Progress = stages.quiet) -> RetrainResult:
    started = time.perf_counter()
    past = history(cfg, progress)
    collected = round(time.perf_counter() - started, 2)
    result = retrain(past, cfg.forecast, progress)
    return replace(result, timings_s={"collect": collected, **result.timings_s})
