"""Pull time of the Prometheus collector (issue 8: 7 days at 5-minute steps for 1,000 VMs in at most 20 s).

Generates the synthetic cluster, writes it as libvirt-exporter / node_exporter series, backfills a private
Prometheus (Debian package) with promtool, then times `load_prometheus` (cold and warm). Prints figures.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from promtest import backfill, missing_binaries, prometheus  # noqa: E402

from advisor.collect.prom_backfill import write_openmetrics  # noqa: E402
from advisor.collect.prometheus import load_prometheus  # noqa: E402
from advisor.collect.synthetic import generate  # noqa: E402
from advisor.config import PowerSettings, PrometheusSettings, SyntheticSettings  # noqa: E402


def settle(data: Path, quiet_s: float = 75.0, limit_s: float = 600.0) -> None:
    """Wait until the server has compacted promtool's 2-hour blocks, as a long-running Prometheus would
    have (queries over dozens of small blocks are slower): the block count unchanged for `quiet_s`, longer
    than the server's one-minute compaction interval."""
    t0 = time.perf_counter()
    first = last = -1
    since = t0
    while time.perf_counter() - t0 < limit_s:
        blocks = sum(1 for d in data.iterdir() if (d / "meta.json").exists())
        first = blocks if first < 0 else first
        if blocks != last:
            last, since = blocks, time.perf_counter()
        elif time.perf_counter() - since >= quiet_s:
            break
        time.sleep(1)
    print(f"compaction: {first} -> {last} blocks, waited {time.perf_counter() - t0:.0f} s")


def build(work: Path, args: argparse.Namespace, power: PowerSettings) -> pd.DataFrame:
    """History in `work`/data (reused when present: promtool takes minutes at this size)."""
    t0 = time.perf_counter()
    syn = SyntheticSettings(hosts=args.hosts, vms=args.vms, days=args.days, step_s=args.step)
    cluster, metrics = generate(syn, power)
    stamp = work / "end"
    if stamp.exists():
        end = pd.Timestamp(stamp.read_text())
    else:
        end = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=3)).floor(f"{args.step}s")
    metrics["ts"] = metrics["ts"] + (end - metrics["ts"].max())
    steps = metrics["ts"].nunique()
    print(f"generated {len(cluster.vms)} VMs x {steps} steps: {time.perf_counter() - t0:.1f} s")
    if stamp.exists():
        print(f"reusing the backfilled {work / 'data'}")
        return metrics
    work.mkdir(parents=True, exist_ok=True)
    om = work / "history.om"
    t = time.perf_counter()
    samples = write_openmetrics(om, cluster, metrics, args.step)
    size = om.stat().st_size / 2**20
    print(f"openmetrics: {samples:,} samples, {size:.0f} MiB, {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    backfill(om, work / "data")
    print(f"promtool backfill: {time.perf_counter() - t:.1f} s")
    om.unlink()
    stamp.write_text(end.isoformat())
    return metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--step", type=int, default=300)
    ap.add_argument("--chunk-h", type=float, default=24.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--keep", type=Path, help="backfilled data directory to create or reuse (default: a temp dir)"
    )
    args = ap.parse_args()
    problem = missing_binaries()
    if problem:
        sys.exit(problem)
    power = PowerSettings()
    with tempfile.TemporaryDirectory(prefix="prom-bench-") as tmp:
        work = args.keep or Path(tmp)
        metrics = build(work, args, power)
        end = metrics["ts"].max()
        with prometheus(work / "data") as url:
            settle(work / "data")
            settings = PrometheusSettings(
                url=url, end=end.isoformat(), range_h=args.days * 24, step_s=args.step, chunk_h=args.chunk_h
            )
            times = []
            for run in range(args.runs):
                t = time.perf_counter()
                got_cluster, got = load_prometheus(settings, None, power)
                times.append(time.perf_counter() - t)
                print(f"pull {run + 1}: {times[-1]:.2f} s, {len(got):,} rows, {len(got_cluster.vms)} VMs")
            src = metrics.sort_values(["vm", "ts"]).reset_index(drop=True)
            err = np.abs(got["cpu_cores"].to_numpy() - src["cpu_cores"].to_numpy()).max()
            same = len(got) == len(src) and (got["mem_mib"].to_numpy() == src["mem_mib"].to_numpy()).all()
            print(f"max |cpu error| {err:.2e} cores; memory identical: {same}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"pull: first {times[0]:.2f} s, best {min(times):.2f} s (target <= 20 s); peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
