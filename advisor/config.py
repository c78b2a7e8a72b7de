"""The one TOML configuration file, validated on load. Every key has a working default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

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


class CollectSettings(_Section):
    source: Literal["synthetic", "planetlab", "bitbrains", "csv", "parquet", "prometheus"] = "synthetic"
    paths: list[str] = Field(default_factory=list, description="trace files for a trace source")
    inventory: str = Field(
        "", description="cluster JSON for csv/parquet/prometheus; empty: from the metrics or synthesised"
    )
    synthetic: SyntheticSettings = Field(default_factory=SyntheticSettings)
    trace: TraceSettings = Field(default_factory=TraceSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)


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


class PlanSettings(_Section):
    goal: Literal["consolidate", "balance"] = "consolidate"
    balance_w_per_pct: float = Field(
        10.0, ge=0, description="goal balance: watts-equivalent of one percentage point of peak CPU"
    )
    cpu_headroom: float = Field(0.8, gt=0, le=1, description="max host CPU utilisation at forecast P95")
    mem_headroom: float = Field(1.0, gt=0, le=1, description="max share of host memory VMs may reserve")
    migration_cap: float = Field(0.5, ge=0, le=1, description="max share of VMs moved by one plan")
    migration_cost_w: float = Field(2.0, ge=0, description="watts-equivalent charged per migration")
    migration_cost_w_per_gib: float = Field(0.5, ge=0, description="watts-equivalent per GiB moved")
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
    quantile: float = Field(0.95, gt=0, lt=1, description="advisor policy: demand quantile it plans for")
    window_steps: int = Field(12, ge=1, le=288, description="advisor policy: past steps the quantile reads")
    headroom: float = Field(
        1.0, gt=0, le=1, description="advisor policy: host CPU share (demand now) that triggers relief"
    )
    cooldown_steps: int = Field(12, ge=0, description="advisor policy: steps a moved VM stays put")
    payback_h: float = Field(1.0, gt=0, description="advisor policy: hours an evacuation must pay back in")


class OutputSettings(_Section):
    dir: str = "out"


class Config(_Section):
    collect: CollectSettings = Field(default_factory=CollectSettings)
    forecast: ForecastSettings = Field(default_factory=ForecastSettings)
    plan: PlanSettings = Field(default_factory=PlanSettings)
    power: PowerSettings = Field(default_factory=PowerSettings)
    whatif: WhatifSettings = Field(default_factory=WhatifSettings)
    simulate: SimulateSettings = Field(default_factory=SimulateSettings)
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
