"""The scenarios file: one TOML file of `[[scenario]]` tables (and optional `[defaults]`), validated on load.

Growth is a percentage of today's demand. `growth_per = "month"` compounds `growth_pct` every month;
`growth_per = "horizon"` means `growth_pct` in total over the `months` of the projection, compounded
evenly (so both reach the same kind of curve, and 0% is no growth either way). Growth scales every VM's
CPU and memory forecast and its memory reservation: the fluid picture of more VMs like today's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from advisor.config import PowerSettings
from advisor.errors import AdvisorError
from advisor.files import read_toml

DAYS_PER_MONTH = 365.25 / 12


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NewVMs(_Strict):
    """`count` new VMs of one size; CPU demand in cores (default a quarter and a half of the vCPUs)."""

    name: str = Field("new", min_length=1, description="name prefix: NAME-1, NAME-2, ...")
    count: int = Field(1, ge=1, le=100_000)
    vcpus: int = Field(ge=1)
    mem_mib: float = Field(gt=0)
    cpu_p50: float | None = Field(None, ge=0, description="cores at P50; default vcpus / 4")
    cpu_p95: float | None = Field(None, ge=0, description="cores at P95; default vcpus / 2")

    @model_validator(mode="after")
    def _ordered(self) -> NewVMs:
        if self.p50 > self.p95:
            raise ValueError("cpu_p50 must not exceed cpu_p95")
        return self

    @property
    def p50(self) -> float:
        return self.cpu_p50 if self.cpu_p50 is not None else self.vcpus / 4

    @property
    def p95(self) -> float:
        return self.cpu_p95 if self.cpu_p95 is not None else self.vcpus / 2


class NewHosts(_Strict):
    """`count` hosts of a type: capacity and power copied from an existing host of that type unless given."""

    type: str = Field(min_length=1)
    count: int = Field(1, ge=1, le=100_000)
    cpu_cores: float | None = Field(None, gt=0)
    mem_mib: float | None = Field(None, gt=0)
    power: PowerSettings | None = None


class ScenarioPower(PowerSettings):
    """Another power model, for every host or only for the hosts of `types`."""

    types: list[str] = Field(default_factory=list, description="host types it applies to; empty: all")


class Scenario(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    growth_pct: float = Field(0.0, gt=-100, le=10_000, description="demand growth, percent")
    growth_per: Literal["month", "horizon"] = "month"
    months: int = Field(12, ge=1, le=120, description="projection window")
    plan_month: int | None = Field(None, ge=0, description="month whose demand is planned; default months")
    new_vms: list[NewVMs] = Field(default_factory=list)
    retire_types: list[str] = Field(default_factory=list)
    retire_hosts: list[str] = Field(default_factory=list)
    add_hosts: list[NewHosts] = Field(default_factory=list)
    maintenance: list[str] = Field(default_factory=list, description="hosts to put in maintenance")
    cpu_headroom: float | None = Field(None, gt=0, le=1)
    mem_headroom: float | None = Field(None, gt=0, le=1)
    power: ScenarioPower | None = None
    time_limit_s: float = Field(5.0, gt=0, le=3600, description="CP-SAT time limit of this scenario")

    @model_validator(mode="after")
    def _plan_in_window(self) -> Scenario:
        if self.plan_month is not None and self.plan_month > self.months:
            raise ValueError(f"plan_month ({self.plan_month}) is beyond months ({self.months})")
        return self

    @property
    def monthly_rate(self) -> float:
        """Growth per month as a fraction."""
        g = self.growth_pct / 100.0
        return g if self.growth_per == "month" else (1.0 + g) ** (1.0 / self.months) - 1.0

    def factor_at_day(self, day: float) -> float:
        """Demand relative to today after `day` days."""
        return float((1.0 + self.monthly_rate) ** (day / DAYS_PER_MONTH))

    @property
    def planned_month(self) -> int:
        return self.months if self.plan_month is None else self.plan_month


class ScenarioFile(_Strict):
    defaults: dict[str, Any] = Field(default_factory=dict)
    scenario: list[dict[str, Any]] = Field(min_length=1)


def load_scenarios(path: Path) -> list[Scenario]:
    """Read and validate `path`. Every error is one AdvisorError naming the file, the scenario and the key."""
    return parse_scenarios(read_toml(path, "scenarios"), str(path))


def parse_scenarios(data: dict[str, Any], source: str = "scenarios") -> list[Scenario]:
    try:
        top = ScenarioFile.model_validate(data)
    except ValidationError as e:
        raise AdvisorError(f"{source}: {_describe(e)}") from None
    out: list[Scenario] = []
    for i, raw in enumerate(top.scenario):
        label = f"scenario {raw.get('name')!r}" if isinstance(raw.get("name"), str) else f"scenario #{i + 1}"
        try:
            out.append(Scenario.model_validate({**top.defaults, **raw}))
        except ValidationError as e:
            raise AdvisorError(f"{source}: {label}: {_describe(e)}") from None
    names = [s.name for s in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise AdvisorError(f"{source}: scenario name {dup!r} is used twice")
    return out


def _describe(e: ValidationError) -> str:
    """The first error, an unknown key first: a misspelt key also shows up as the right one missing."""
    err = min(e.errors(), key=lambda x: x["type"] != "extra_forbidden")
    key = ".".join(str(x) for x in err["loc"]) or "(top level)"
    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{key}: {msg}{more}"
