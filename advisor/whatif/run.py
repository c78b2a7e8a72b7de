"""The what-if stage's shell: read what collect and forecast wrote, run every scenario, write the page and
the exports. Everything between the reads and the writes is the pure code of the sibling modules."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from advisor import files
from advisor.config import Config
from advisor.metrics import read_metrics
from advisor.whatif.html import render_whatif
from advisor.whatif.profile import hourly_profiles
from advisor.whatif.scenarios import load_scenarios
from advisor.whatif.score import ScenarioResult, run_scenario

SUMMARY_FILE = "summary.json"
SCENARIOS_CSV = "scenarios.csv"
HOSTS_NEEDED_CSV = "hosts_needed.csv"
HOST_UTIL_CSV = "host_utilisation.csv"
MIGRATIONS_CSV = "migrations.csv"
MIGRATION_FIELDS = (
    "scenario",
    "wave",
    "vm",
    "source",
    "destination",
    "reason",
    "new_vm",
    "predicted_time_s",
    "predicted_mib",
)


def run_whatif(
    cfg: Config, scenarios_path: Path, out_dir: Path, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run every scenario of `scenarios_path` on the cluster, metrics and forecast in `cfg.output.dir` and
    write report.html, summary.json and the CSV exports into `out_dir`. Returns the summary.json content.
    Raises AdvisorError (InputError for a missing or bad input file) with a one-line message."""
    say = progress or (lambda _: None)
    scenarios = load_scenarios(scenarios_path)  # a typo in the scenarios fails before any heavy read
    src = Path(cfg.output.dir)
    cluster = files.read_cluster(src / files.CLUSTER_FILE)
    forecast = files.read_forecast(src / files.FORECAST_FILE)
    forecast.check_covers(cluster)
    say("reading metrics")
    profiles = hourly_profiles(read_metrics(src / files.METRICS_FILE))
    results = []
    for i, scenario in enumerate(scenarios, 1):
        say(f"scenario {i}/{len(scenarios)}: {scenario.name}")
        started = time.perf_counter()
        result = run_scenario(cluster, forecast, profiles, scenario, cfg.plan, cfg.power)
        results.append(result)
        say(f"scenario {scenario.name}: {result.plan.status.value} in {time.perf_counter() - started:.1f} s")
    summary = {
        "cluster": cluster.name,
        "cluster_fingerprint": cluster.fingerprint(),
        "forecast_fingerprint": forecast.fingerprint(),
        "scenarios_file": str(scenarios_path),
        "scenarios": [r.summary() for r in results],
    }
    say("writing the report")
    files.write_text(out_dir / files.REPORT_FILE, render_whatif(cluster, forecast, results))
    files.write_json(out_dir / SUMMARY_FILE, summary)
    for name, rows in exports(results).items():
        files.write_text(out_dir / name, to_csv(rows, MIGRATION_FIELDS if name == MIGRATIONS_CSV else None))
    return summary


def exports(results: Sequence[ScenarioResult]) -> dict[str, list[dict[str, Any]]]:
    """The CSV files, by name: one row per scenario, per scenario and week, per scenario and host, per
    scenario and migration."""
    return {
        SCENARIOS_CSV: [{**r.summary(), "blocking_vms": " ".join(r.plan.blocking_vms)} for r in results],
        HOSTS_NEEDED_CSV: [
            {
                "scenario": r.scenario.name,
                "week": w.week,
                "day": w.day,
                "demand_factor": round(w.factor, 4),
                "hosts_needed_p50": w.hosts_p50,
                "hosts_needed_p95": w.hosts_p95,
                "usable_hosts": r.usable_hosts,
            }
            for r in results
            for w in r.weeks
        ],
        HOST_UTIL_CSV: [
            {
                "scenario": r.scenario.name,
                "host": h.host,
                "type": h.type,
                "state": h.state,
                "vms": h.vms,
                "cpu_util_p95": round(h.cpu_util, 4),
                "mem_util": round(h.mem_util, 4),
            }
            for r in results
            for h in r.hosts
        ],
        MIGRATIONS_CSV: [
            {
                "scenario": r.scenario.name,
                "wave": m.wave,
                "vm": m.vm,
                "source": m.source,
                "destination": m.destination,
                "reason": m.reason.value,
                "new_vm": m.vm in r.input.new_vms,
                "predicted_time_s": round(m.predicted_time_s, 2),
                "predicted_mib": round(m.predicted_mib, 1),
            }
            for r in results
            for m in r.plan.migrations
        ],
    }


def to_csv(rows: list[dict[str, Any]], fields: Sequence[str] | None = None) -> str:
    """Header from `fields`, else from the first row (so a table that may be empty needs `fields`)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields or (rows[0] if rows else ())), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return buf.getvalue()
