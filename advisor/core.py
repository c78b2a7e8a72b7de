"""Core types shared by every stage: plain, validated data with no I/O.

Units: CPU in cores (a VM at 50% of 4 vCPUs uses 2.0), memory in MiB, rates in MiB/s, durations in
seconds, power in watts, energy in kWh, timestamps UTC.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from advisor.errors import InputError

SCHEMA_VERSION = 1


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint_of(obj: Any) -> str:
    """A stable short hash of a JSON-able object (key order and float formatting independent)."""
    return hashlib.sha256(_canonical_json(obj).encode()).hexdigest()[:16]


def _positive(what: str, value: float) -> None:
    if not isinstance(value, int | float) or math.isnan(value) or value <= 0:
        raise InputError(f"{what} must be a positive number, got {value!r}")


def _non_negative(what: str, value: float) -> None:
    if not isinstance(value, int | float) or math.isnan(value) or value < 0:
        raise InputError(f"{what} must be a non-negative number, got {value!r}")


class HostState(StrEnum):
    UP = "up"
    MAINTENANCE = "maintenance"
    STANDBY = "standby"


@dataclass(frozen=True)
class PowerModel:
    """Host power draw against CPU utilisation.

    Linear from `idle_w` at 0% to `max_w` at 100% unless `curve_w` gives a piecewise-linear table of
    watts at evenly spaced utilisations (0%, 10%, ..., 100% for 11 points, as SPECpower tables are).
    A host in standby draws `standby_w`.
    """

    idle_w: float = 150.0
    max_w: float = 350.0
    standby_w: float = 10.0
    curve_w: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        _non_negative("power.idle_w", self.idle_w)
        _non_negative("power.standby_w", self.standby_w)
        if self.max_w < self.idle_w:
            raise InputError(f"power.max_w ({self.max_w}) is below power.idle_w ({self.idle_w})")
        if self.curve_w:
            if len(self.curve_w) < 2:
                raise InputError("power.curve_w needs at least two points (0% and 100%)")
            if any(b < a for a, b in zip(self.curve_w, self.curve_w[1:], strict=False)):
                raise InputError("power.curve_w must not decrease with utilisation")
            object.__setattr__(self, "curve_w", tuple(float(w) for w in self.curve_w))
            object.__setattr__(self, "idle_w", self.curve_w[0])
            object.__setattr__(self, "max_w", self.curve_w[-1])

    def watts(self, util: float) -> float:
        """Power at CPU utilisation `util` (clipped to [0, 1]) of a running host."""
        u = min(max(util, 0.0), 1.0)
        if not self.curve_w:
            return self.idle_w + (self.max_w - self.idle_w) * u
        pos = u * (len(self.curve_w) - 1)
        i = min(int(pos), len(self.curve_w) - 2)
        return self.curve_w[i] + (self.curve_w[i + 1] - self.curve_w[i]) * (pos - i)


@dataclass(frozen=True)
class Host:
    name: str
    cpu_cores: float
    mem_mib: float
    cluster: str = "default"
    state: HostState = HostState.UP
    power: PowerModel = field(default_factory=PowerModel)
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise InputError("a host has an empty name")
        _positive(f"host {self.name}: cpu_cores", self.cpu_cores)
        _positive(f"host {self.name}: mem_mib", self.mem_mib)
        try:
            object.__setattr__(self, "state", HostState(self.state))
        except ValueError:
            states = ", ".join(s.value for s in HostState)
            raise InputError(f"host {self.name}: state {self.state!r} is not one of {states}") from None

    @property
    def can_run_vms(self) -> bool:
        """Up or standby (a standby host can be woken); a host in maintenance must be emptied."""
        return self.state != HostState.MAINTENANCE


@dataclass(frozen=True)
class VM:
    name: str
    host: str
    vcpus: int
    mem_mib: float
    labels: Mapping[str, str] = field(default_factory=dict)
    movable: bool = True
    live_migratable: bool = True

    def __post_init__(self) -> None:
        if not self.name:
            raise InputError("a VM has an empty name")
        _positive(f"VM {self.name}: vcpus", self.vcpus)
        _positive(f"VM {self.name}: mem_mib", self.mem_mib)


@dataclass(frozen=True)
class Rules:
    """Placement rules. Affinity groups share a host; anti-affinity groups use distinct hosts;
    a pinned VM runs only on one of its listed hosts."""

    affinity: tuple[tuple[str, ...], ...] = ()
    anti_affinity: tuple[tuple[str, ...], ...] = ()
    pins: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "affinity", tuple(tuple(g) for g in self.affinity))
        object.__setattr__(self, "anti_affinity", tuple(tuple(g) for g in self.anti_affinity))
        object.__setattr__(self, "pins", {vm: tuple(hs) for vm, hs in self.pins.items()})
        for kind, groups in (("affinity", self.affinity), ("anti_affinity", self.anti_affinity)):
            for group in groups:
                if len(group) < 2:
                    raise InputError(f"rules.{kind}: group {list(group)} needs at least two VMs")
                if len(set(group)) != len(group):
                    raise InputError(f"rules.{kind}: group {list(group)} lists a VM twice")
        for vm, hosts in self.pins.items():
            if not hosts:
                raise InputError(f"rules.pins: VM {vm} is pinned to no host")


@dataclass(frozen=True)
class Cluster:
    """Hosts, VMs and rules at one instant. Validated on construction."""

    name: str
    hosts: tuple[Host, ...]
    vms: tuple[VM, ...]
    rules: Rules = field(default_factory=Rules)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hosts", tuple(self.hosts))
        object.__setattr__(self, "vms", tuple(self.vms))
        if not self.hosts:
            raise InputError(f"cluster {self.name}: has no hosts")
        _unique("host", (h.name for h in self.hosts))
        _unique("VM", (v.name for v in self.vms))
        hosts = self.host_by_name
        largest_mem = (
            max(h.mem_mib for h in self.hosts if h.can_run_vms)
            if any(h.can_run_vms for h in self.hosts)
            else 0.0
        )
        for vm in self.vms:
            if vm.host not in hosts:
                raise InputError(f"VM {vm.name}: runs on unknown host {vm.host!r}")
            if vm.mem_mib > largest_mem:
                raise InputError(
                    f"VM {vm.name}: needs {vm.mem_mib:.0f} MiB, more than any usable host has "
                    f"({largest_mem:.0f} MiB)"
                )
        vm_names = self.vm_by_name
        for kind, groups in (("affinity", self.rules.affinity), ("anti_affinity", self.rules.anti_affinity)):
            for group in groups:
                for name in group:
                    if name not in vm_names:
                        raise InputError(f"rules.{kind}: unknown VM {name!r}")
        for name, pin_hosts in self.rules.pins.items():
            if name not in vm_names:
                raise InputError(f"rules.pins: unknown VM {name!r}")
            for h in pin_hosts:
                if h not in hosts:
                    raise InputError(f"rules.pins: VM {name} is pinned to unknown host {h!r}")

    @property
    def host_by_name(self) -> dict[str, Host]:
        return {h.name: h for h in self.hosts}

    @property
    def vm_by_name(self) -> dict[str, VM]:
        return {v.name: v for v in self.vms}

    @property
    def placement(self) -> dict[str, str]:
        return {v.name: v.host for v in self.vms}

    def fingerprint(self) -> str:
        """Changes whenever anything the planner reads changes; a plan is refused on another state."""
        return fingerprint_of(self.to_dict())

    def with_placement(self, placement: Mapping[str, str]) -> Cluster:
        vms = tuple(replace(v, host=placement.get(v.name, v.host)) for v in self.vms)
        return replace(self, vms=vms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "hosts": [_host_to_dict(h) for h in self.hosts],
            "vms": [{**asdict(v), "labels": dict(v.labels)} for v in self.vms],
            "rules": {
                "affinity": [list(g) for g in self.rules.affinity],
                "anti_affinity": [list(g) for g in self.rules.anti_affinity],
                "pins": {k: list(v) for k, v in self.rules.pins.items()},
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "cluster") -> Cluster:
        _check_schema(data, source)
        with _reading(source):
            hosts = tuple(_host_from_dict(h) for h in data["hosts"])
            vms = tuple(VM(**_known(VM, v, f"{source}: vm")) for v in data["vms"])
            r = data.get("rules", {})
            rules = Rules(
                affinity=tuple(tuple(g) for g in r.get("affinity", [])),
                anti_affinity=tuple(tuple(g) for g in r.get("anti_affinity", [])),
                pins={k: tuple(v) for k, v in r.get("pins", {}).items()},
            )
            return cls(name=data["name"], hosts=hosts, vms=vms, rules=rules)


@contextmanager
def _reading(source: str) -> Iterator[None]:
    """Turn what a malformed file raises while it is decoded into one InputError naming the file."""
    try:
        yield
    except InputError as e:
        msg = str(e)
        raise InputError(msg if msg.startswith(source) else f"{source}: {msg}") from None
    except KeyError as e:
        raise InputError(f"{source}: missing key {e.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise InputError(f"{source}: {e}") from None


def _unique(kind: str, names: Iterable[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise InputError(f"duplicate {kind} name {n!r}")
        seen.add(n)


def _known(cls: type, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise InputError(f"{where}: unknown key(s) {sorted(unknown)}")
    return dict(data)


def _check_schema(data: Mapping[str, Any], source: str) -> None:
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InputError(f"{source}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")


def _host_to_dict(h: Host) -> dict[str, Any]:
    d = asdict(h)
    d["state"] = h.state.value
    d["labels"] = dict(h.labels)
    d["power"]["curve_w"] = list(h.power.curve_w)
    return d


def _host_from_dict(d: Mapping[str, Any]) -> Host:
    d = dict(_known(Host, d, "host"))
    power = d.pop("power", None)
    if power is not None:
        power = dict(_known(PowerModel, power, f"host {d.get('name')}: power"))
        power["curve_w"] = tuple(power.get("curve_w", ()))
        d["power"] = PowerModel(**power)
    return Host(**d)


@dataclass(frozen=True)
class VMForecast:
    """One VM's demand over the planning horizon: quantiles of its CPU (cores) and memory (MiB),
    and its memory dirty rate (MiB/s) for migration cost."""

    cpu_p50: float
    cpu_p95: float
    mem_p50: float
    mem_p95: float
    dirty_mibps: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise InputError(f"forecast {f.name} must be a finite non-negative number, got {value!r}")


@dataclass(frozen=True)
class Forecast:
    made_at: datetime
    horizon_s: int
    model: str
    cluster_fingerprint: str
    vms: Mapping[str, VMForecast]

    def fingerprint(self) -> str:
        return fingerprint_of(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "made_at": self.made_at.isoformat(),
            "horizon_s": self.horizon_s,
            "model": self.model,
            "cluster_fingerprint": self.cluster_fingerprint,
            "vms": {name: asdict(f) for name, f in sorted(self.vms.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "forecast") -> Forecast:
        _check_schema(data, source)
        with _reading(source):
            return cls(
                made_at=_parse_time(data["made_at"]),
                horizon_s=int(data["horizon_s"]),
                model=str(data["model"]),
                cluster_fingerprint=str(data["cluster_fingerprint"]),
                vms={
                    k: VMForecast(**_known(VMForecast, v, f"{source}: vm {k}"))
                    for k, v in data["vms"].items()
                },
            )

    def check_covers(self, cluster: Cluster) -> None:
        """A plan needs a forecast for every VM of the cluster it plans."""
        missing = [v.name for v in cluster.vms if v.name not in self.vms]
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise InputError(
                f"forecast has no entry for {len(missing)} VM(s) of cluster {cluster.name}: {shown}"
            )


def _parse_time(value: str) -> datetime:
    t = datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


class MigrationReason(StrEnum):
    MAINTENANCE = "maintenance"  # source host is being evacuated
    OVERLOAD = "overload"  # source host is above headroom at forecast P95
    RULE = "rule"  # repairs an affinity, anti-affinity or pin violation
    CONSOLIDATE = "consolidate"  # empties a host so it can go to standby
    BALANCE = "balance"  # spreads load across active hosts
    PARK = "park"  # temporary hop that breaks a sequencing deadlock


@dataclass(frozen=True)
class Migration:
    vm: str
    source: str
    destination: str
    reason: MigrationReason
    wave: int
    predicted_time_s: float
    predicted_downtime_ms: float
    predicted_mib: float
    converges: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", MigrationReason(self.reason))


@dataclass(frozen=True)
class PlanFigures:
    """Figures of one placement under the forecast: what the report compares before and after."""

    active_hosts: int
    energy_kwh_per_day: float
    peak_cpu_util: float
    peak_mem_util: float
    hosts_over_headroom: int


@dataclass(frozen=True)
class Bounds:
    hosts_cpu: int
    hosts_mem: int
    energy_kwh_per_day: float

    @property
    def hosts(self) -> int:
        return max(self.hosts_cpu, self.hosts_mem)


class PlanStatus(StrEnum):
    OPTIMAL = "optimal"
    FEASIBLE = "feasible"
    INFEASIBLE = "infeasible"


@dataclass(frozen=True)
class Plan:
    cluster: str
    cluster_fingerprint: str
    forecast_fingerprint: str
    created_at: datetime
    goal: str
    status: PlanStatus
    solver: str
    placement: Mapping[str, str]
    migrations: tuple[Migration, ...]
    standby: tuple[str, ...]
    before: PlanFigures
    after: PlanFigures
    bounds: Bounds
    blocking_vms: tuple[str, ...] = ()
    message: str = ""
    solve_s: float = 0.0
    schema_version: int = SCHEMA_VERSION
    # VMs predicted not to move live at their forecast dirty rate (advisor.migration.live_window.LiveWindow
    # as dicts): held where they are unless they must move
    cannot_move_live: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", PlanStatus(self.status))
        object.__setattr__(self, "migrations", tuple(self.migrations))

    @property
    def waves(self) -> list[list[Migration]]:
        out: dict[int, list[Migration]] = {}
        for m in self.migrations:
            out.setdefault(m.wave, []).append(m)
        return [out[w] for w in sorted(out)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat()
        d["status"] = self.status.value
        d["placement"] = dict(sorted(self.placement.items()))
        d["migrations"] = [{**asdict(m), "reason": m.reason.value} for m in self.migrations]
        d["standby"] = list(self.standby)
        d["blocking_vms"] = list(self.blocking_vms)
        d["cannot_move_live"] = [dict(w) for w in self.cannot_move_live]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "plan") -> Plan:
        _check_schema(data, source)
        with _reading(source):
            d = dict(_known(cls, data, source))
            d["created_at"] = _parse_time(d["created_at"])
            d["migrations"] = tuple(
                Migration(**_known(Migration, m, f"{source}: migration")) for m in d["migrations"]
            )
            d["standby"] = tuple(d["standby"])
            d["blocking_vms"] = tuple(d.get("blocking_vms", ()))
            d["cannot_move_live"] = tuple(dict(w) for w in d.get("cannot_move_live", ()))
            d["before"] = PlanFigures(**d["before"])
            d["after"] = PlanFigures(**d["after"])
            d["bounds"] = Bounds(**d["bounds"])
            return cls(**d)

    @classmethod
    def from_json(cls, text: str, source: str = "plan") -> Plan:
        try:
            return cls.from_dict(json.loads(text), source)
        except json.JSONDecodeError as e:
            raise InputError(f"{source}: not valid JSON ({e})") from None
