"""Collectors: every source becomes the same (Cluster, metrics frame) pair, the metrics already checked by
advisor.metrics.validate_metrics."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from advisor.collect.libvirt import collect_libvirt
from advisor.collect.prometheus import load_prometheus
from advisor.collect.synthetic import generate
from advisor.collect.traces import Progress, load_bitbrains, load_planetlab, load_table
from advisor.config import CollectSettings, PowerSettings
from advisor.core import Cluster
from advisor.files import read_cluster

__all__ = ["collect", "generate", "load_bitbrains", "load_planetlab", "load_prometheus", "load_table"]


def collect(
    settings: CollectSettings, power: PowerSettings, progress: Progress | None = None
) -> tuple[Cluster, pd.DataFrame]:
    """The cluster and metrics history of `settings.source`."""
    say = progress or (lambda _: None)
    source, paths, trace = settings.source, settings.paths, settings.trace
    if source == "synthetic":
        s = settings.synthetic
        say(f"generating {s.hosts} hosts, {s.vms} VMs, {s.days} days (seed {s.seed})")
        return generate(s, power)
    if source == "planetlab":
        return load_planetlab(paths, trace, power, progress=say)
    if source == "bitbrains":
        return load_bitbrains(paths, trace, power, progress=say)
    if source == "libvirt":
        return collect_libvirt(settings.libvirt, power, progress=say)
    inventory = read_cluster(Path(settings.inventory)) if settings.inventory else None
    if source == "prometheus":
        return load_prometheus(settings.prometheus, inventory, power, progress=say)
    return load_table(paths, inventory, trace, power, fmt=source, progress=say)
