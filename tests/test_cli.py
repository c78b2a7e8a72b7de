"""The CLI end to end: each stage reads what the previous one wrote; user mistakes are one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from advisor.cli import app
from advisor.core import Cluster, Plan

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def stages_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic cluster taken through collect, forecast, plan, dry run and report."""
    out = tmp_path_factory.mktemp("out")
    uri = f"sqlite:///{out}/mlruns.db"
    assert (
        run("collect", "-o", str(out), "--hosts", "10", "--vms", "80", "--days", "8", "--seed", "3")[0] == 0
    )
    code, text = run("forecast", "-o", str(out), "--tracking-uri", uri)
    assert code == 0, text
    code, text = run("plan", "-o", str(out), "--time-limit-s", "5")
    assert code == 0, text
    return out


def test_stages_write_their_files(stages_dir: Path) -> None:
    for name in ("cluster.json", "metrics.parquet", "forecast.json", "plan.json"):
        assert (stages_dir / name).stat().st_size > 0
    plan = Plan.from_json((stages_dir / "plan.json").read_text())
    assert plan.status.value in ("optimal", "feasible")
    cluster = json.loads((stages_dir / "cluster.json").read_text())
    maintenance = {h["name"] for h in cluster["hosts"] if h["state"] == "maintenance"}
    assert maintenance and not maintenance & set(plan.placement.values())


def test_dry_run_and_report(stages_dir: Path) -> None:
    code, text = run("apply", "--dry-run", "-o", str(stages_dir))
    assert code == 0, text
    assert json.loads((stages_dir / "dryrun.json").read_text())["ok"] is True
    code, text = run("report", "-o", str(stages_dir))
    assert code == 0, text
    assert "<html" in (stages_dir / "report.html").read_text().lower()


def test_live_apply_without_libvirt_hosts_is_one_line_pointing_at_the_dry_run(stages_dir: Path) -> None:
    code, text = run("apply", "-o", str(stages_dir))
    assert code == 2 and "collect.libvirt.hosts" in text and "--dry-run" in text and "Traceback" not in text


def test_stale_plan_is_refused(stages_dir: Path, tmp_path: Path) -> None:
    for name in ("cluster.json", "forecast.json", "plan.json"):
        (tmp_path / name).write_text((stages_dir / name).read_text())
    cluster = json.loads((tmp_path / "cluster.json").read_text())
    cluster["vms"][0]["mem_mib"] += 1024  # the cluster changed since the plan was made
    (tmp_path / "cluster.json").write_text(json.dumps(cluster))
    code, text = run("apply", "--dry-run", "-o", str(tmp_path))
    assert code == 2 and "stale" in text.lower()


def test_missing_input_names_the_file(tmp_path: Path) -> None:
    code, text = run("plan", "-o", str(tmp_path))
    assert code == 2 and "cluster.json: no such file" in text and "Traceback" not in text


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "a.toml"
    cfg.write_text("[plan]\ncpu_headroom = 3\n")
    code, text = run("plan", "-c", str(cfg), "-o", str(tmp_path))
    assert code == 2 and "plan.cpu_headroom" in text and "Traceback" not in text


def test_bad_metrics_file_names_the_row(tmp_path: Path) -> None:
    csv = tmp_path / "m.csv"
    pd.DataFrame(
        {
            "vm": ["a", "a"],
            "ts": ["2026-01-01T00:00Z", "2026-01-01T00:05Z"],
            "cpu_cores": [1.0, None],
            "mem_mib": [1.0, 2.0],
        }
    ).to_csv(csv, index=False)
    code, text = run("collect", "--source", "csv", "-p", str(csv), "-o", str(tmp_path / "o"))
    assert code == 2 and "m.csv" in text and "row" in text and "Traceback" not in text


def test_contradictory_rules_make_an_infeasible_plan_naming_the_vms(stages_dir: Path, tmp_path: Path) -> None:
    for name in ("cluster.json", "metrics.parquet"):
        (tmp_path / name).write_bytes((stages_dir / name).read_bytes())
    cluster = json.loads((tmp_path / "cluster.json").read_text())
    a, b = cluster["vms"][0]["name"], cluster["vms"][1]["name"]
    cluster["rules"]["affinity"].append([a, b])
    cluster["rules"]["anti_affinity"].append([a, b])
    (tmp_path / "cluster.json").write_text(json.dumps(cluster))
    code, text = run(
        "forecast", "-o", str(tmp_path), "--model", "naive", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"
    )
    assert code == 0, text
    code, text = run("plan", "-o", str(tmp_path), "--time-limit-s", "5")
    assert code == 1, text
    assert "infeasible" in text and a in text and b in text
    plan = Plan.from_json((tmp_path / "plan.json").read_text())
    assert plan.status.value == "infeasible" and {a, b} <= set(plan.blocking_vms) and not plan.migrations


def test_help_explains_every_command() -> None:
    code, text = run("--help")
    assert code == 0
    for command in ("demo", "collect", "forecast", "plan", "apply", "report", "nightly"):
        assert command in text
    code, text = run("plan", "--help")
    assert "plan.cpu_headroom" in text


def test_nightly_runs_every_stage_from_a_config_file(tmp_path: Path) -> None:
    out = tmp_path / "night"
    cfg = tmp_path / "nightly.toml"
    cfg.write_text(
        f"""
[collect.synthetic]
hosts = 8
vms = 50
days = 3
seed = 11
[forecast]
tracking_uri = "sqlite:///{tmp_path}/mlruns.db"
[plan]
time_limit_s = 3
[output]
dir = "{out}"
"""
    )
    code, text = run("nightly", "-c", str(cfg))
    assert code == 0, text
    plan = Plan.from_json((out / "plan.json").read_text())
    cluster = json.loads((out / "cluster.json").read_text())
    assert plan.cluster_fingerprint == Cluster.from_dict(cluster).fingerprint()
    assert json.loads((out / "dryrun.json").read_text())["ok"] is True
    report = (out / "report.html").read_text()
    assert plan.cluster in report and f"{len(plan.migrations)} migrations" in text


def test_pareto_sweep_is_written_shown_and_cleared(stages_dir: Path, tmp_path: Path) -> None:
    for name in ("cluster.json", "forecast.json"):
        (tmp_path / name).write_text((stages_dir / name).read_text())
    code, text = run(
        "plan", "-o", str(tmp_path), "--time-limit-s", "2", "--pareto-cap", "0", "--pareto-cap", "0.2"
    )
    assert code == 0, text
    points = json.loads((tmp_path / "pareto.json").read_text())["points"]
    assert [p["migration_cap"] for p in points] == [0.0, 0.2, 0.5]  # the two caps and the plan itself
    assert run("report", "-o", str(tmp_path))[0] == 0
    assert 'id="plot-pareto"' in (tmp_path / "report.html").read_text()
    assert run("plan", "-o", str(tmp_path), "--time-limit-s", "2")[0] == 0
    assert not (tmp_path / "pareto.json").exists()  # an old sweep is never shown beside a new plan
    assert run("report", "-o", str(tmp_path))[0] == 0
    assert 'id="plot-pareto"' not in (tmp_path / "report.html").read_text()


def test_whatif_compares_scenarios_and_names_bad_keys(stages_dir: Path, tmp_path: Path) -> None:
    scenarios = tmp_path / "s.toml"
    scenarios.write_text(
        '[defaults]\ntime_limit_s = 2\nmonths = 3\n\n[[scenario]]\nname = "today"\nplan_month = 0\n\n'
        '[[scenario]]\nname = "double"\ngrowth_pct = 100\ngrowth_per = "horizon"\n'
    )
    code, text = run(
        "whatif", "-i", str(stages_dir), "-o", str(tmp_path / "w"), "--scenarios", str(scenarios)
    )
    assert code == 0, text
    summary = json.loads((tmp_path / "w" / "summary.json").read_text())
    today, double = summary["scenarios"]
    assert (today["scenario"], double["scenario"]) == ("today", "double")
    assert double["energy_kwh_per_day"] > today["energy_kwh_per_day"]  # twice the demand costs energy
    assert "double" in text and (tmp_path / "w" / "report.html").exists()
    scenarios.write_text('[[scenario]]\nname = "x"\ngrowth = 3\n')
    code, text = run(
        "whatif", "-i", str(stages_dir), "-o", str(tmp_path / "w2"), "--scenarios", str(scenarios)
    )
    assert code == 2 and "scenario 'x'" in text and "growth" in text and "Traceback" not in text
    code, text = run("whatif", "-i", str(stages_dir))
    assert code == 2 and "--scenarios" in text
