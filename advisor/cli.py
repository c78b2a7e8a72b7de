"""`advisor`: the command line. Each command is one stage; every flag overrides a config key.

Exit codes: 0 done; 1 the plan is infeasible or the dry run found a violation; 2 bad input or config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from advisor import files, stages
from advisor.config import Config, load_config, parse_config
from advisor.core import Plan, PlanStatus
from advisor.errors import AdvisorError

app = typer.Typer(
    help=(
        "Placement and rebalancing advisor for KVM/libvirt fleets: collect metrics, forecast demand, "
        "plan live migrations that save energy and relieve hot hosts, check them in a dry run, report."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show [config.key, default] literally
)
err = Console(stderr=True, soft_wrap=True)
out_console = Console(soft_wrap=True)
if not out_console.is_terminal:
    out_console.width = 120  # logs and pipes: tables as wide as their content, not 80 columns

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML configuration file (default: built-in defaults).")
]
OutOpt = Annotated[
    Path | None, typer.Option("--out", "-o", help="Directory the stages read and write [output.dir, 'out'].")
]
PathOpt = Annotated[
    list[str] | None, typer.Option("--path", "-p", help="Trace file; repeat for several [collect.paths].")
]

F = TypeVar("F", bound=Callable[..., Any])
DEMO_PARETO_CAPS = [0.0, 0.05, 0.1, 0.2, 0.3]  # the demo shows what each extra migration buys


def _user_errors(fn: F) -> F:
    """A user mistake ends in one line on stderr and exit code 2, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AdvisorError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _config(path: Path | None, out: Path | None, overrides: dict[str, Any]) -> tuple[Config, Path]:
    """The config file with the command line's flags on top, validated as one."""
    data = load_config(path).model_dump()
    if out is not None:
        overrides["output.dir"] = str(out)
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    cfg = parse_config(data, str(path) if path else "command line")
    return cfg, Path(cfg.output.dir)


@contextmanager
def _progress(title: str) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr naming the step in progress (quiet when stderr is not a terminal)."""
    with err.status(title) as status:

        def update(step: str) -> None:
            status.update(f"{title}: {step}")
            if not err.is_terminal:
                err.print(f"{title}: {step}", highlight=False)

        yield update


def _print_plan(plan: Plan, path: Path) -> None:
    out_console.print(
        f"plan for cluster {plan.cluster}: {plan.status.value} by {plan.solver} in {plan.solve_s:.1f} s",
        highlight=False,
    )
    table = Table()
    for col in ("", "before", "after", "lower bound"):
        table.add_column(col, justify="right" if col else "left")
    b, a, lb = plan.before, plan.after, plan.bounds
    table.add_row("active hosts", str(b.active_hosts), str(a.active_hosts), str(lb.hosts))
    table.add_row(
        "energy kWh/day",
        f"{b.energy_kwh_per_day:.1f}",
        f"{a.energy_kwh_per_day:.1f}",
        f"{lb.energy_kwh_per_day:.1f}",
    )
    table.add_row("peak CPU util (P95)", f"{b.peak_cpu_util:.0%}", f"{a.peak_cpu_util:.0%}", "")
    table.add_row("peak memory util", f"{b.peak_mem_util:.0%}", f"{a.peak_mem_util:.0%}", "")
    table.add_row("hosts over headroom", str(b.hosts_over_headroom), str(a.hosts_over_headroom), "")
    out_console.print(table)
    moved = sum(m.predicted_mib for m in plan.migrations) / 1024
    out_console.print(
        f"{len(plan.migrations)} migrations in {len(plan.waves)} waves, {moved:.0f} GiB to copy; "
        f"{len(plan.standby)} host(s) to standby -> {path}",
        highlight=False,
    )
    if plan.cannot_move_live:
        anyway = sum(bool(w["moved"]) for w in plan.cannot_move_live)
        out_console.print(
            f"{len(plan.cannot_move_live)} VM(s) cannot move live now (dirty rate too high): "
            f"{len(plan.cannot_move_live) - anyway} held, {anyway} moved anyway (host emptied or relieved); "
            "when they could: the report",
            highlight=False,
        )
    if plan.status == PlanStatus.INFEASIBLE:
        err.print(f"[bold red]infeasible:[/] {plan.message}", highlight=False)
        if plan.blocking_vms:
            err.print("blocking VMs: " + ", ".join(plan.blocking_vms), highlight=False)


def _plan_exit(plan: Plan) -> None:
    if plan.status == PlanStatus.INFEASIBLE:
        raise typer.Exit(1)


def _name_uri(flag: str) -> dict[str, str]:
    """`--libvirt-host NAME=URI` as a [collect.libvirt] hosts entry (the flag is not echoed: URIs may hold
    user names)."""
    name, sep, uri = flag.partition("=")
    if not (sep and name and uri):
        raise AdvisorError("--libvirt-host: expected NAME=URI, e.g. hv01=qemu+ssh://hv01/system")
    return {"name": name, "uri": uri}


@app.command()
@_user_errors
def collect(
    config: ConfigOpt = None,
    out: OutOpt = None,
    source: Annotated[
        str | None,
        typer.Option(
            help="synthetic | planetlab | bitbrains | csv | parquet | prometheus | libvirt "
            "[collect.source, 'synthetic']."
        ),
    ] = None,
    path: PathOpt = None,
    inventory: Annotated[
        str | None, typer.Option(help="Cluster JSON for csv/parquet metrics [collect.inventory].")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Synthetic: seed [collect.synthetic.seed].")] = None,
    hosts: Annotated[int | None, typer.Option(help="Synthetic: hosts [collect.synthetic.hosts].")] = None,
    vms: Annotated[int | None, typer.Option(help="Synthetic: VMs [collect.synthetic.vms].")] = None,
    days: Annotated[
        int | None, typer.Option(help="Synthetic: days of history [collect.synthetic.days].")
    ] = None,
    libvirt_host: Annotated[
        list[str] | None,
        typer.Option(
            help="Libvirt: a hypervisor as NAME=URI, e.g. hv01=qemu+ssh://hv01/system; repeat for several "
            "[collect.libvirt.hosts]."
        ),
    ] = None,
    samples: Annotated[
        int | None, typer.Option(help="Libvirt: CPU/memory samples per VM [collect.libvirt.samples, 5].")
    ] = None,
    interval_s: Annotated[
        float | None, typer.Option(help="Libvirt: seconds between samples [collect.libvirt.interval_s, 2].")
    ] = None,
    dirty_samples: Annotated[
        int | None,
        typer.Option(help="Libvirt: dirty-rate readings averaged per VM [collect.libvirt.dirty_samples, 3]."),
    ] = None,
) -> None:
    """Read hosts, VMs and utilisation history into OUT/cluster.json and OUT/metrics.parquet.

    Source libvirt reads the hypervisors live: inventory, a few seconds of CPU and memory samples and
    dirty rates, not days of history (that comes from Prometheus)."""
    cfg, out_dir = _config(
        config,
        out,
        {
            "collect.source": source,
            "collect.paths": path or None,
            "collect.inventory": inventory,
            "collect.synthetic.seed": seed,
            "collect.synthetic.hosts": hosts,
            "collect.synthetic.vms": vms,
            "collect.synthetic.days": days,
            "collect.libvirt.hosts": [_name_uri(h) for h in libvirt_host] if libvirt_host else None,
            "collect.libvirt.samples": samples,
            "collect.libvirt.interval_s": interval_s,
            "collect.libvirt.dirty_samples": dirty_samples,
        },
    )
    with _progress("collect") as progress:
        cluster, metrics = stages.collect(cfg, out_dir, progress)
    out_console.print(
        f"{len(cluster.hosts)} hosts, {len(cluster.vms)} VMs, {len(metrics):,} samples "
        f"from {metrics['ts'].min()} to {metrics['ts'].max()} -> {out_dir}",
        highlight=False,
    )


@app.command()
@_user_errors
def forecast(
    config: ConfigOpt = None,
    out: OutOpt = None,
    model: Annotated[
        str | None, typer.Option(help="quantile_gbm | naive | seasonal_naive [forecast.model].")
    ] = None,
    horizon_h: Annotated[
        float | None, typer.Option(help="Planning horizon, hours [forecast.horizon_h].")
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI [forecast.tracking_uri, sqlite:///mlruns.db].")
    ] = None,
) -> None:
    """Train the demand forecaster on OUT/metrics.parquet (logged to MLflow) and write OUT/forecast.json."""
    cfg, out_dir = _config(
        config,
        out,
        {"forecast.model": model, "forecast.horizon_h": horizon_h, "forecast.tracking_uri": tracking_uri},
    )
    with _progress("forecast") as progress:
        fc, summary = stages.forecast(cfg, out_dir, progress=progress)
    out_console.print(
        f"forecast for {len(fc.vms)} VMs over {fc.horizon_s / 3600:g} h by {fc.model} "
        f"(MLflow run {summary.get('run_id', '-')}) -> {out_dir / files.FORECAST_FILE}",
        highlight=False,
    )
    if "ahead" in summary:
        a = summary["ahead"]
        out_console.print(
            f"short-term forecasts ({', '.join(a['keys'])}) for {a['vms']} VMs -> {out_dir / a['file']}",
            highlight=False,
        )


@app.command()
@_user_errors
def backtest(
    config: ConfigOpt = None,
    out: OutOpt = None,
    folds: Annotated[
        int | None,
        typer.Option(help="Rolling-origin folds, the last ones of the history [forecast.backtest_folds, 3]."),
    ] = None,
    test_days: Annotated[
        float | None, typer.Option(help="Days of origins each fold scores [forecast.ahead_test_days, 1].")
    ] = None,
    horizon: Annotated[
        list[str] | None,
        typer.Option(help="5min | 1h | 24h_peak; repeat for several [forecast.ahead_horizons, all three]."),
    ] = None,
) -> None:
    """Rolling-origin backtest of the short-term forecasters on OUT/metrics.parquet (advisor collect): each
    fold fits on all history before its days and scores every VM there, against naive, seasonal naive and
    the best moving average. Figures per metric, horizon, fold and forecaster (MAE, MASE, pinball loss,
    P95 coverage) -> OUT/backtest.csv; the means over the folds are printed."""
    cfg, out_dir = _config(
        config,
        out,
        {
            "forecast.backtest_folds": folds,
            "forecast.ahead_test_days": test_days,
            "forecast.ahead_horizons": horizon or None,
        },
    )
    with _progress("backtest") as progress:
        tidy = stages.backtest(cfg, out_dir, progress=progress)
    _print_backtest(tidy)
    out_console.print(f"per fold -> {out_dir / files.BACKTEST_FILE}", highlight=False)


def _print_backtest(tidy: Any) -> None:
    from advisor.forecast.ahead import fold_means
    from advisor.forecast.backtest import FORECASTERS

    means = fold_means(tidy).set_index(["metric", "horizon", "forecaster"]).sort_index()
    folds = tidy["fold"].nunique()
    table = Table(title=f"backtest, mean of {folds} fold(s): MASE (MAE / in-sample naive MAE)")
    table.add_column("metric/horizon")
    for name in FORECASTERS:
        table.add_column(name.replace("_", " "), justify="right")
    table.add_column("model P95 coverage", justify="right")
    table.add_column("model MASE by fold", justify="right")
    for (metric, horizon), part in tidy.groupby(["metric", "horizon"], sort=False):
        row = means.loc[(metric, horizon)]
        by_fold = part[part["forecaster"] == "model"].sort_values("fold")["mase"]
        table.add_row(
            f"{metric}/{horizon}",
            *(f"{row.loc[name, 'mase']:.3f}" for name in FORECASTERS),
            f"{row.loc['model', 'coverage_95']:.3f}",
            " ".join(f"{v:.3f}" for v in by_fold),
        )
    out_console.print(table)


@app.command()
@_user_errors
def train(
    config: ConfigOpt = None,
    source: Annotated[
        str | None,
        typer.Option(
            help="synthetic | planetlab | bitbrains | csv | parquet | prometheus "
            "[collect.source, 'synthetic']."
        ),
    ] = None,
    path: PathOpt = None,
    inventory: Annotated[
        str | None, typer.Option(help="Cluster JSON for csv/parquet/prometheus [collect.inventory].")
    ] = None,
    horizon_h: Annotated[
        float | None, typer.Option(help="Planning horizon, hours [forecast.horizon_h, 24].")
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI [forecast.tracking_uri, sqlite:///mlruns.db].")
    ] = None,
    registry_model: Annotated[
        str | None, typer.Option(help="MLflow registered model [forecast.registry_model, advisor-forecast].")
    ] = None,
    export_path: Annotated[
        str | None,
        typer.Option(
            help="Champion file for the forecast stage; '' for none "
            "[forecast.export_path, models/forecast-champion.skops]."
        ),
    ] = None,
    promotion_margin: Annotated[
        float | None,
        typer.Option(
            help="Share by which a challenger must beat the others [forecast.promotion_margin, 0.01]."
        ),
    ] = None,
    chunk_rows: Annotated[
        int | None,
        typer.Option(
            help="Rows read from a bitbrains/csv/parquet file at a time, the file sorted by vm; 0 reads the "
            "whole history first [forecast.chunk_rows, 250000]."
        ),
    ] = None,
) -> None:
    """Retrain the forecaster on the history of --source: backtest it against the naive baselines and the
    champion, register it in MLflow (the champion if it wins, else the challenger), export the champion.
    A trace file is read in chunks, a batch of VMs at a time (forecast.batch_vms)."""
    from pipelines.retrain import run_retrain

    cfg, _ = _config(
        config,
        None,
        {
            "collect.source": source,
            "collect.paths": path or None,
            "collect.inventory": inventory,
            "forecast.horizon_h": horizon_h,
            "forecast.tracking_uri": tracking_uri,
            "forecast.registry_model": registry_model,
            "forecast.export_path": export_path,
            "forecast.promotion_margin": promotion_margin,
            "forecast.chunk_rows": chunk_rows,
        },
    )
    with _progress("train") as progress:
        result = run_retrain(cfg, progress)
    _print_training(result.card)
    name, version = cfg.forecast.registry_model, result.version
    champion = f"champion: v{result.champion}" if result.champion else "no champion yet"
    role = "champion" if result.decision.promote else f"challenger ({champion})"
    out_console.print(f"{name} v{version} is the {role}: {result.decision.reason}", highlight=False)
    if result.exported:
        out_console.print(f"champion v{result.champion} -> {result.exported}", highlight=False)
    seconds = ", ".join(f"{step} {s:g}" for step, s in result.timings_s.items())
    out_console.print(f"seconds: {seconds}", highlight=False)


def _print_training(card: dict[str, Any]) -> None:
    d = card["data"]
    out_console.print(
        f"trained on {d['vms']:,} VMs, {d['samples']:,} samples from {d['first_sample']} to "
        f"{d['last_sample']} (MLflow run {card['run_id']})",
        highlight=False,
    )
    for horizon, tests in card["backtest"].items():
        for name, figures in tests.items():
            where = "held-out origins" if name == "holdout" else "origins after the champion's data"
            table = Table(title=f"backtest MAE, {horizon} ahead, {figures['origins']} {where}")
            contenders = list(figures["score"])
            table.add_column("target")
            for c in contenders:
                table.add_column(c.replace("_", " "), justify="right")
            for target, by in figures["targets"].items():
                table.add_row(target, *(f"{by[c]['mae']:.4g}" for c in contenders))
            table.add_row("mean MASE", *(f"{figures['score'][c]:.3f}" for c in contenders))
            out_console.print(table)
    if card.get("ahead"):
        from advisor.forecast.ahead import SUMMARY_COLUMNS, summary_rows

        table = Table(title="short-term forecasts, backtest on the held-out last day(s)")
        for column in SUMMARY_COLUMNS:
            text = column in ("metric/horizon", "best baseline")
            table.add_column(column, justify="left" if text else "right")
        for cells in summary_rows(card["ahead"]):
            table.add_row(*cells)
        out_console.print(table)


@app.command()
@_user_errors
def plan(
    config: ConfigOpt = None,
    out: OutOpt = None,
    goal: Annotated[str | None, typer.Option(help="consolidate | balance [plan.goal].")] = None,
    cpu_headroom: Annotated[
        float | None, typer.Option(help="Max host CPU utilisation at forecast P95 [plan.cpu_headroom, 0.8].")
    ] = None,
    migration_cap: Annotated[
        float | None, typer.Option(help="Max share of VMs moved by one plan [plan.migration_cap, 0.5].")
    ] = None,
    time_limit_s: Annotated[
        float | None, typer.Option(help="CP-SAT time limit, seconds [plan.time_limit_s, 20].")
    ] = None,
    pareto_cap: Annotated[
        list[float] | None,
        typer.Option(
            help="Also plan under this migration cap, for the energy/migration trade-off in OUT/pareto.json "
            "and the report; repeat for several [plan.pareto_caps]."
        ),
    ] = None,
) -> None:
    """Choose a target placement and order its migrations into waves: OUT/plan.json."""
    cfg, out_dir = _config(
        config,
        out,
        {
            "plan.goal": goal,
            "plan.cpu_headroom": cpu_headroom,
            "plan.migration_cap": migration_cap,
            "plan.time_limit_s": time_limit_s,
            "plan.pareto_caps": pareto_cap or None,
        },
    )
    with _progress("plan") as progress:
        result = stages.plan(cfg, out_dir, progress=progress)
    _print_plan(result, out_dir / files.PLAN_FILE)
    _plan_exit(result)


@app.command()
@_user_errors
def apply(
    config: ConfigOpt = None,
    out: OutOpt = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Play the waves on an in-memory copy of the cluster and check every state."
        ),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Finish the interrupted run of OUT/plan.json in the journal: settle the migrations that "
            "were in flight with libvirt, never repeat a finished one, run the rest.",
        ),
    ] = False,
    journal: Annotated[
        Path | None,
        typer.Option(help="sqlite journal of every step [apply.journal, OUT/journal.sqlite]."),
    ] = None,
) -> None:
    """Carry out OUT/plan.json on the hosts of [collect.libvirt]: live (or, for VMs not live-migratable,
    cold) migrations wave by wave, every step journalled; exit 1 if a migration failed or was aborted (its
    VM still runs on its source). With --dry-run: check the waves on an in-memory copy of the cluster."""
    if dry_run:
        if resume:
            raise AdvisorError("--resume applies a plan for real; it does not go with --dry-run")
        cfg, out_dir = _config(config, out, {})
        result = stages.dry_run(cfg, out_dir)
        _print_dry_run(result, out_dir)
        return
    from advisor.execute.journal import journal_path
    from advisor.execute.live import APPLY_FILE, apply_live

    cfg, out_dir = _config(config, out, {"apply.journal": str(journal) if journal else None})
    plan_ = files.read_plan(out_dir / files.PLAN_FILE)

    def progress(line: str) -> None:
        err.print(f"apply: {line}", highlight=False)

    applied = apply_live(cfg, plan_, journal_path(cfg, out_dir), resume, progress)
    files.write_json(out_dir / APPLY_FILE, applied.to_dict())
    _print_apply(applied.to_dict(), out_dir / APPLY_FILE)
    if not applied.ok:
        raise typer.Exit(1)


def _print_apply(result: dict[str, Any], path: Path) -> None:
    table = Table()
    for col in ("wave", "VM", "from", "to", "mode", "state", "ladder", "time s", "downtime ms"):
        table.add_column(col, justify="right" if col in ("wave", "time s", "downtime ms") else "left")
    for m in result["migrations"]:
        stats = m["stats"]
        done = m["state"] == "done"
        elapsed = f"{stats['time_elapsed'] / 1000:.1f}" if done and "time_elapsed" in stats else ""
        downtime = str(stats.get("downtime", "")) if done else ""
        table.add_row(
            str(m["wave"]),
            m["vm"],
            m["source"],
            m["destination"],
            m["mode"],
            m["state"],
            m["rung"] or "",
            elapsed,
            downtime,
        )
    out_console.print(table)
    out_console.print(
        f"run {result['run']}: {result['status']} -> {path} (journal {result['journal']})", highlight=False
    )
    for problem in result["problems"]:
        err.print(f"[bold red]unsettled:[/] {problem}", highlight=False)


def _print_dry_run(result: dict[str, Any], out_dir: Path) -> None:
    if result["ok"]:
        out_console.print(
            f"dry run ok: {result['states_checked']} intermediate states checked "
            f"-> {out_dir / files.DRYRUN_FILE}",
            highlight=False,
        )
        return
    err.print(f"[bold red]dry run found {len(result['violations'])} violation(s):[/]")
    for v in result["violations"][:20]:
        err.print(f"  {v}", highlight=False)
    raise typer.Exit(1)


@app.command()
@_user_errors
def report(config: ConfigOpt = None, out: OutOpt = None) -> None:
    """Write OUT/report.html: utilisation before and after, migrations by wave, energy and bounds."""
    cfg, out_dir = _config(config, out, {})
    path = stages.report(cfg, out_dir)
    out_console.print(f"report -> {path}", highlight=False)


@app.command()
@_user_errors
def whatif(
    config: ConfigOpt = None,
    scenarios: Annotated[
        Path | None,
        typer.Option(help="Scenarios TOML file, e.g. examples/whatif.toml [whatif.scenarios]."),
    ] = None,
    inputs: Annotated[
        Path | None,
        typer.Option(
            "--in", "-i", help="Directory with cluster.json, metrics and forecast.json [output.dir, 'out']."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Directory of the report and exports [whatif.out, <in>/whatif]."),
    ] = None,
) -> None:
    """Capacity what-ifs on the collected cluster (growth, new VMs, hosts retired or added, maintenance,
    headroom, power): each scenario is forecast, planned and scored; writes OUT/report.html,
    OUT/summary.json and CSV exports."""
    from advisor.whatif import run_whatif

    cfg, in_dir = _config(
        config,
        inputs,
        {"whatif.scenarios": str(scenarios) if scenarios else None, "whatif.out": str(out) if out else None},
    )
    if not cfg.whatif.scenarios:
        raise AdvisorError("no scenarios: give --scenarios FILE (or whatif.scenarios in the config)")
    out_dir = Path(cfg.whatif.out) if cfg.whatif.out else in_dir / "whatif"
    with _progress("whatif") as progress:
        summary = run_whatif(cfg, Path(cfg.whatif.scenarios), out_dir, progress)
    table = Table()
    table.add_column("scenario", no_wrap=True)
    for col in ("hosts", "kWh/day", "CPU", "mem", "moves", "full in (days)"):
        table.add_column(col, justify="right")
    for s in summary["scenarios"]:
        full = "-" if s["days_until_full"] is None else str(s["days_until_full"])
        table.add_row(
            s["scenario"],
            str(s["active_hosts"]),
            f"{s['energy_kwh_per_day']:.1f}",
            f"{s['peak_cpu_util']:.0%}",
            f"{s['peak_mem_util']:.0%}",
            str(s["migrations"]),
            full,
        )
    out_console.print(table)
    out_console.print(f"report -> {out_dir / 'report.html'}", highlight=False)


@app.command()
@_user_errors
def simulate(
    config: ConfigOpt = None,
    trace: Annotated[str, typer.Option(help="Day to replay: planetlab:FILE (vm,step,cpu; 288 steps).")] = "",
    setup: Annotated[
        str | None, typer.Option(help="cloudsim | realistic [simulate.setup, 'cloudsim'].")
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option(help="thr-mmt | iqr-mmt | mad-mmt | lr-mmt | advisor [simulate.policy, 'advisor']."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run totals as one JSON object.")] = False,
    report_to: Annotated[
        Path | None,
        typer.Option(
            "--report", help="Also write an HTML page: active hosts, energy, overloaded hosts per step."
        ),
    ] = None,
) -> None:
    """Replay a trace day in 300 s steps under a consolidation policy: energy, SLATAH, PDM, SLAV, ESV."""
    import json

    from advisor.simulate.report import write_report
    from advisor.simulate.run import load_trace
    from advisor.simulate.run import simulate as run_simulation

    if not trace:
        raise AdvisorError("--trace is required, e.g. --trace planetlab:20110303.csv.gz")
    cfg, _ = _config(config, None, {"simulate.setup": setup, "simulate.policy": policy})
    day = load_trace(trace)
    with _progress("simulate") as progress:
        result = run_simulation(day, cfg.simulate, progress=progress)
    if report_to is not None:
        write_report([result], report_to)
    if as_json:
        print(json.dumps(result.summary()))
        return
    table = Table(
        title=f"{result.day}: {result.policy}, {result.setup} setup ({result.vms} VMs, {result.hosts} hosts)"
    )
    for col in ("energy kWh", "migrations", "SLATAH %", "PDM %", "SLAV x1e-5", "ESV x1e-3", "wall s"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{result.energy_kwh:.2f}",
        f"{result.migrations}",
        f"{100 * result.slatah:.2f}",
        f"{100 * result.pdm:.4f}",
        f"{1e5 * result.slav:.2f}",
        f"{1e3 * result.esv:.2f}",
        f"{result.wall_s:.1f}",
    )
    out_console.print(table)


@app.command()
@_user_errors
def nightly(config: ConfigOpt = None, out: OutOpt = None) -> None:
    """The nightly job: collect, forecast, plan, dry run and report, as the configuration says."""
    from pipelines.nightly import run_nightly

    cfg, _ = _config(config, out, {})
    _run_nightly(cfg, run_nightly)


@app.command()
@_user_errors
def demo(
    out: OutOpt = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the synthetic cluster.")] = None,
    hosts: Annotated[int | None, typer.Option(help="Hosts in the synthetic cluster [40].")] = None,
    vms: Annotated[int | None, typer.Option(help="VMs in the synthetic cluster [400].")] = None,
) -> None:
    """The nightly job on the embedded synthetic cluster: no servers needed. Writes OUT/plan.json and
    OUT/report.html, with an energy/migration sweep over a few migration caps."""
    from pipelines.nightly import run_nightly

    cfg, _ = _config(
        None,
        out,
        {
            "collect.source": "synthetic",
            "collect.synthetic.seed": seed,
            "collect.synthetic.hosts": hosts,
            "collect.synthetic.vms": vms,
            "plan.pareto_caps": DEMO_PARETO_CAPS,
            "plan.pareto_time_limit_s": 3.0,
        },
    )
    _run_nightly(cfg, run_nightly)


def _run_nightly(cfg: Config, run: Callable[..., Any]) -> None:
    with _progress("nightly") as progress:
        result = run(cfg, progress)
    _print_plan(result.plan, result.out / files.PLAN_FILE)
    _print_dry_run(result.dry_run, result.out)
    out_console.print(f"report -> {result.report}", highlight=False)
    _plan_exit(result.plan)
