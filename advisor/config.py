"""The one TOML configuration file, validated on load. Every key has a working default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from advisor.core import PowerModel
from advisor.errors import AdvisorError
from advisor.files import read_toml


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PowerSettings(_Section):
    """Default power model for hosts that do not carry their own."""

    idle_w: float = Field(150.0, ge=0, description="watts at 0% CPU")
    max_w: float = Field(350.0, ge=0, description="watts at 100% CPU")
    standby_w: float = Field(10.0, ge=0, description="watts in standby")
    curve_w: list[float] = Field(
        default_factory=list, description="piecewise-linear watts at evenly spaced utilisations"
    )

    @model_validator(mode="after")
    def _max_above_idle(self) -> PowerSettings:
        if not self.curve_w and self.max_w < self.idle_w:
            raise ValueError("max_w must be at least idle_w")
        return self

    def model(self) -> PowerModel:
        return PowerModel(self.idle_w, self.max_w, self.standby_w, tuple(self.curve_w))


class SyntheticSettings(_Section):
    """The embedded demo cluster: deterministic for a given seed."""

    seed: int = 7
    hosts: int = Field(40, ge=2, le=100_000)
    vms: int = Field(400, ge=1, le=1_000_000)
    days: int = Field(14, ge=1, le=90, description="days of history")
    step_s: int = Field(300, ge=60, le=3600)
    target_cpu_util: float = Field(0.35, gt=0, lt=1, description="mean host CPU utilisation")
    maintenance_hosts: int = Field(1, ge=0)
    affinity_groups: int = Field(2, ge=0)
    anti_affinity_groups: int = Field(3, ge=0)
    pinned_vms: int = Field(2, ge=0)


class TraceSettings(_Section):
    """Hosts synthesised for traces that have none (PlanetLab, Bitbrains, bare CSV)."""

    host_cpu_cores: float = Field(64.0, gt=0)
    host_mem_mib: float = Field(524_288.0, gt=0)
    hosts: int = Field(0, ge=0, description="0: as many as first-fit needs, plus 10%")


class PrometheusSettings(_Section):
    """Where and how to read VM and host history from Prometheus.

    Queries are PromQL templates; `$vm`, `$host`, `$window` (rate window), `$range` (the whole pulled span,
    for size and capacity queries) and `$step` are substituted, `$$` is a literal `$`. VM queries return
    cores and bytes per (`$vm`, `$host`) series; VM size and host capacity queries are instant queries at
    the end of the span.
    """

    url: str = Field("http://127.0.0.1:9090", description="Prometheus base URL")
    end: str = Field("", description="end of the pulled history, ISO 8601 UTC; empty: now")
    range_h: float = Field(168.0, gt=0, le=24 * 400, description="hours of history to pull")
    step_s: int = Field(300, ge=1, le=86_400, description="sample interval of the pulled history")
    rate_window_s: int = Field(0, ge=0, description="window of rate(); 0: one step")
    chunk_h: float = Field(24.0, gt=0, description="span of one range query (Prometheus caps its points)")
    timeout_s: float = Field(30.0, gt=0, description="per-request timeout")
    gzip: bool = Field(False, description="ask for compressed answers: slower to encode, for slow links")
    on_gaps: Literal["error", "report"] = Field(
        "error", description="gaps or stale series: fail, or keep the samples there are and report"
    )
    vm_label: str = Field("domain", description="label naming the VM")
    host_label: str = Field("host", description="label naming the host (added by relabelling)")
    vm_cpu: str = "sum by ($vm, $host) (rate(libvirt_domain_info_cpu_time_seconds_total[$window]))"
    vm_mem: str = "max by ($vm, $host) (libvirt_domain_info_memory_usage_bytes)"
    vm_vcpus: str = "max by ($vm) (max_over_time(libvirt_domain_info_virtual_cpus[$range]))"
    vm_mem_size: str = "max by ($vm) (max_over_time(libvirt_domain_info_maximum_memory_bytes[$range]))"
    host_cores: str = 'count by ($host) (last_over_time(node_cpu_seconds_total{mode="idle"}[$range]))'
    host_mem: str = "max by ($host) (max_over_time(node_memory_MemTotal_bytes[$range]))"
    username_env: str = Field("", description="env var holding the basic-auth user")
    password_env: str = Field("", description="env var holding the basic-auth password")
    token_env: str = Field("", description="env var holding a bearer token")
    ca_file: str = Field("", description="CA bundle for an https URL; empty: the system's")


class LibvirtHostSettings(_Section):
    """One hypervisor: its name in plans and the libvirt URI that reaches it (credentials never in the URI:
    ssh keys, TLS certificates or libvirt's auth.conf)."""

    name: str = Field(min_length=1, description="host name in plans and reports")
    uri: str = Field(min_length=1, description="libvirt URI: qemu+ssh://, qemu+tls://, qemu:///system")
    cluster: str = Field("default", min_length=1, description="migrations stay inside a cluster")
    state: Literal["up", "maintenance", "standby"] = "up"
    labels: dict[str, str] = Field(default_factory=dict)
    power: PowerSettings | None = Field(None, description="this host's power model; absent: [power]")


class LibvirtSettings(_Section):
    """The live inventory and a short sampled series read straight from the hypervisors."""

    hosts: list[LibvirtHostSettings] = Field(default_factory=list)
    cluster: str = Field("libvirt", min_length=1, description="name of the collected cluster")
    timeout_s: float = Field(10.0, gt=0, description="per-host connection timeout")
    cpu_reserve_cores: float = Field(0.0, ge=0, description="cores per host kept for the hypervisor")
    mem_reserve_mib: float = Field(0.0, ge=0, description="MiB per host kept for the hypervisor")
    samples: int = Field(5, ge=2, le=10_000, description="CPU and memory samples per VM (samples - 1 rows)")
    interval_s: float = Field(2.0, gt=0, le=3600, description="seconds between samples")
    dirty_samples: int = Field(3, ge=0, le=100, description="dirty-rate readings averaged per VM; 0: none")
    dirty_calc_s: int = Field(1, ge=1, le=60, description="seconds one dirty-rate reading samples")
    workers: int = Field(32, ge=1, le=1024, description="VMs whose dirty rate is measured at once")


class CollectSettings(_Section):
    source: Literal["synthetic", "planetlab", "bitbrains", "csv", "parquet", "prometheus", "libvirt"] = (
        "synthetic"
    )
    paths: list[str] = Field(default_factory=list, description="trace files for a trace source")
    inventory: str = Field(
        "", description="cluster JSON for csv/parquet/prometheus; empty: from the metrics or synthesised"
    )
    synthetic: SyntheticSettings = Field(default_factory=SyntheticSettings)
    trace: TraceSettings = Field(default_factory=TraceSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    libvirt: LibvirtSettings = Field(default_factory=LibvirtSettings)


AheadHorizon = Literal["5min", "1h", "24h_peak"]  # advisor.forecast.horizons.HORIZONS_S


class ForecastSettings(_Section):
    model: Literal["quantile_gbm", "naive", "seasonal_naive"] = "quantile_gbm"
    horizon_h: float = Field(24.0, gt=0, le=24 * 14, description="planning horizon")
    season_h: float = Field(168.0, gt=0, description="season of the seasonal-naive baseline")
    origin_every_h: float = Field(6.0, gt=0, description="spacing of training origins")
    max_iter: int = Field(150, ge=10, le=5000, description="boosting iterations")
    learning_rate: float = Field(0.1, gt=0, le=1)
    tracking_uri: str = Field("sqlite:///mlruns.db", description="MLflow tracking URI")
    experiment: str = "advisor-forecast"
    seed: int = 0
    registry_model: str = Field("advisor-forecast", min_length=1, description="MLflow registered model")
    export_path: str = Field(
        "models/forecast-champion.skops",
        description="champion file `advisor train` writes and the forecast stage uses; empty: neither",
    )
    promotion_margin: float = Field(
        0.01, ge=0, lt=1, description="share by which a challenger's backtest MASE must beat the others"
    )
    batch_vms: int = Field(100, ge=1, description="VMs whose history `advisor train` turns into rows at once")
    chunk_rows: int = Field(
        250_000,
        ge=0,
        description="rows `advisor train` reads from a bitbrains/csv/parquet file at a time (the file sorted "
        "by vm); 0: read the whole history into memory first",
    )
    max_train_rows: int = Field(
        500_000, ge=1000, description="training rows kept at most (a uniform sample beyond)"
    )
    ahead_horizons: list[AheadHorizon] = Field(
        default_factory=lambda: list(get_args(AheadHorizon)),
        description="short-term forecasts `advisor train` adds (CPU and memory; the dirty rate at 5min); "
        "empty: none",
    )
    ahead_train_rows: int = Field(
        150_000, ge=1000, description="short-term forecasts: training rows per metric and horizon at most"
    )
    ahead_test_rows: int = Field(
        50_000, ge=100, description="short-term forecasts: backtest rows per metric and horizon at most"
    )
    ahead_test_days: float = Field(
        1.0, gt=0, description="short-term forecasts: the last days of history held out to backtest"
    )
    ahead_max_iter: int = Field(200, ge=10, le=5000, description="short-term forecasts: boosting iterations")
    backtest_folds: int = Field(
        3, ge=1, le=60, description="advisor backtest: rolling-origin folds of ahead_test_days each"
    )
    ahead_jobs: int = Field(
        -1, description="short-term forecasts: processes fitting side by side (-1: one per core, 1: none)"
    )

    @model_validator(mode="after")
    def _jobs_not_zero(self) -> ForecastSettings:
        if self.ahead_jobs == 0 or self.ahead_jobs < -1:
            raise ValueError(f"ahead_jobs must be -1 (one per core) or at least 1, got {self.ahead_jobs}")
        return self


class PlanSettings(_Section):
    goal: Literal["consolidate", "balance"] = "consolidate"
    balance_w_per_pct: float = Field(
        10.0, ge=0, description="goal balance: watts-equivalent of one percentage point of peak CPU"
    )
    cpu_headroom: float = Field(0.8, gt=0, le=1, description="max host CPU utilisation at forecast P95")
    mem_headroom: float = Field(1.0, gt=0, le=1, description="max share of host memory VMs may reserve")
    migration_cap: float = Field(0.5, ge=0, le=1, description="max share of VMs moved by one plan")
    migration_cost_w: float = Field(2.0, ge=0, description="watts-equivalent charged per migration")
    migration_cost_w_per_gib: float = Field(
        0.5, ge=0, description="watts-equivalent per GiB a move is predicted to transfer"
    )
    time_limit_s: float = Field(20.0, gt=0, description="CP-SAT time limit per cluster")
    workers: int = Field(2, ge=1, le=64, description="CP-SAT search workers")
    candidate_hosts: int = Field(8, ge=1, description="destinations the CP-SAT model considers per VM")
    max_concurrent_per_host: int = Field(2, ge=1, description="migrations in flight per host and wave")
    bandwidth_mibps: float = Field(1000.0, gt=0, description="migration bandwidth for cost predictions")
    max_downtime_ms: float = Field(300.0, gt=0, description="downtime budget for cost predictions")
    parallel_clusters: int = Field(1, ge=1, le=256, description="clusters planned at once, a process each")
    pareto_caps: list[Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=list, description="migration caps of an energy/migration sweep; empty: none"
    )
    pareto_time_limit_s: float = Field(5.0, gt=0, description="CP-SAT time limit of each sweep point")
    payback_h: float = Field(
        0.0, ge=0, description="hours in which a move's saving must repay its cost; 0: the forecast horizon"
    )
    sticky_h: float = Field(
        24.0, ge=0, description="a VM moved fewer hours ago than this moves again only if it must"
    )
    peak_model: Literal["sum", "joint"] = Field(
        "sum", description="host CPU peak: sum of the VMs' P95s, or P95 of their summed history"
    )
    peak_history_h: float = Field(168.0, gt=0, description="peak_model joint: hours of history it reads")
    engine: Literal["processes", "ray"] = Field(
        "processes", description="where clusters are planned: local processes, or Ray (RAY_ADDRESS or local)"
    )


class WhatifSettings(_Section):
    scenarios: str = Field("", description="scenarios TOML file (see examples/whatif.toml)")
    out: str = Field("", description="what-if report and exports directory; empty: <output.dir>/whatif")


class SimulateSettings(_Section):
    """`advisor simulate`: replay a trace day under a consolidation policy (cloudsim or realistic setup)."""

    setup: Literal["cloudsim", "realistic"] = Field("cloudsim", description="data-centre behaviour")
    policy: Literal["thr-mmt", "iqr-mmt", "mad-mmt", "lr-mmt", "advisor"] = "advisor"
    standby_after_s: float = Field(300.0, ge=0, description="realistic: idle seconds before a host sleeps")
    standby_w: float = Field(5.0, ge=0, description="realistic: watts of a host in standby")
    bandwidth_mibps: float = Field(62.5, gt=0, description="migration bandwidth (CloudSim: half of 1 Gbit/s)")
    max_downtime_ms: float = Field(300.0, gt=0, description="realistic: pre-copy downtime budget")
    dirty_mibps_per_core: float = Field(20.0, ge=0, description="realistic: memory dirtied per busy core")
    forecast_every_steps: int = Field(
        12, ge=1, description="advisor policy: steps the 1-h forecast is held before it is made again"
    )
    headroom: float = Field(
        1.0, gt=0, le=1, description="advisor policy: host CPU share (demand now) that triggers relief"
    )
    cooldown_steps: int = Field(12, ge=0, description="advisor policy: steps a moved VM stays put")
    payback_h: float = Field(1.0, gt=0, description="advisor policy: hours an evacuation must pay back in")


class ApplySettings(_Section):
    """`advisor apply` on the hosts of [collect.libvirt]: live migration, its escalation ladder, journal."""

    bandwidth_mibps: float = Field(1000.0, gt=0, description="bandwidth cap of each migration, MiB/s")
    max_downtime_ms: float = Field(300.0, gt=0, description="downtime budget a migration starts with")
    max_downtime_limit_ms: float = Field(
        1000.0, gt=0, description="the ladder's downtime rung; a VM's label max_downtime_ms overrides"
    )
    concurrency: int = Field(2, ge=1, le=64, description="migrations in flight at once within a wave")
    deadline_factor: float = Field(1.5, ge=1, description="soft deadline: factor x predicted time + slack")
    deadline_slack_s: float = Field(10.0, ge=0, description="added to every soft deadline")
    escalate_after_s: float = Field(10.0, gt=0, description="seconds on one rung before the next")
    stall_passes: int = Field(
        3, ge=0, description="passes without progress that start the ladder early (no auto-converge); 0: off"
    )
    auto_converge: bool = Field(True, description="first rung: QEMU throttles a guest that outruns the link")
    auto_converge_initial_pct: int = Field(20, ge=1, le=99, description="auto-converge's first throttle")
    auto_converge_increment_pct: int = Field(10, ge=1, le=99, description="auto-converge's step per pass")
    allow_postcopy: bool = Field(
        False, description="post-copy rung for VMs without a postcopy label (irreversible once switched)"
    )
    postcopy_bandwidth_mibps: float = Field(0.0, ge=0, description="post-copy bandwidth; 0: unlimited")
    journal: str = Field("", description="sqlite journal of every step; empty: <output.dir>/journal.sqlite")
    poll_s: float = Field(0.5, gt=0, le=10, description="job statistics poll interval")
    abort_wait_s: float = Field(
        60.0, gt=0, description="wait for an aborted or interrupted job to end before calling it unknown"
    )
    cold_shutdown_timeout_s: float = Field(120.0, gt=0, description="cold migration: wait for a shutdown")
    cold_force_off: bool = Field(False, description="cold migration: power off a VM that ignores shutdown")
    peer_uris: dict[str, str] = Field(
        default_factory=dict, description="host -> URI its peers' libvirtd reach it by; absent: its uri"
    )
    migration_uris: dict[str, str] = Field(
        default_factory=dict, description="host -> QEMU migration stream address; absent: libvirt's choice"
    )

    @model_validator(mode="after")
    def _limit_above_budget(self) -> ApplySettings:
        if self.max_downtime_limit_ms < self.max_downtime_ms:
            raise ValueError("max_downtime_limit_ms must be at least max_downtime_ms")
        return self


class MigrationSettings(_Section):
    """The migration cost model the planner, the executor and the report share."""

    measurements: str = Field(
        "",
        description="bench/migrations.py CSV the learned correction is fitted on; empty: the analytic model",
    )


class OutputSettings(_Section):
    dir: str = "out"


class Config(_Section):
    collect: CollectSettings = Field(default_factory=CollectSettings)
    forecast: ForecastSettings = Field(default_factory=ForecastSettings)
    plan: PlanSettings = Field(default_factory=PlanSettings)
    power: PowerSettings = Field(default_factory=PowerSettings)
    whatif: WhatifSettings = Field(default_factory=WhatifSettings)
    simulate: SimulateSettings = Field(default_factory=SimulateSettings)
    apply: ApplySettings = Field(default_factory=ApplySettings)
    migration: MigrationSettings = Field(default_factory=MigrationSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)


def load_config(path: str | Path | None) -> Config:
    """Read and validate `path`; `None` gives the defaults. Errors name the file and the key."""
    if path is None:
        return Config()
    return parse_config(read_toml(Path(path), "configuration"), str(path))


def parse_config(data: dict, source: str = "config") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise AdvisorError(f"{source}: {key}: {msg}{more}") from None
