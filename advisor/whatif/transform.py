"""A scenario applied to today's cluster and forecast: the inputs the planner sees in that what-if world.

Retired hosts are put in maintenance for the plan (their VMs must move off) and count as gone everywhere
else: no capacity, no energy. Added hosts are up and empty; consolidation leaves them off if they are
not needed. New VMs arrive today and grow with the rest of the demand; they start on the first host with
room within headroom (as a scheduler would place them), so the planner only moves them for the goal, and
their moves are not counted as migrations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from advisor.config import PlanSettings, PowerSettings
from advisor.core import VM, Cluster, Forecast, Host, HostState, PowerModel, VMForecast
from advisor.errors import AdvisorError, InputError
from advisor.whatif.scenarios import DAYS_PER_MONTH, NewHosts, Scenario

TYPE_LABEL = "model"  # the host label that names a host type (the synthetic generator and collectors set it)


@dataclass(frozen=True)
class WhatIfInput:
    cluster: Cluster
    forecast: Forecast
    settings: PlanSettings
    retired: frozenset[str]
    new_vms: frozenset[str]
    factor: float  # demand at the planned month relative to today


def host_type(host: Host) -> str:
    return host.labels.get(TYPE_LABEL, "")


def apply_scenario(
    cluster: Cluster, forecast: Forecast, scenario: Scenario, settings: PlanSettings, power: PowerSettings
) -> WhatIfInput:
    """Pure: the scenario's cluster, forecast (grown to the planned month) and plan settings. Raises
    AdvisorError naming the scenario for a host or type the cluster does not have."""
    where = f"scenario {scenario.name!r}"
    forecast.check_covers(cluster)
    names = cluster.host_by_name
    types = {host_type(h) for h in cluster.hosts}
    for key, wanted, known in (
        ("retire_hosts", scenario.retire_hosts, names),
        ("maintenance", scenario.maintenance, names),
        ("retire_types", scenario.retire_types, types),
        ("power.types", scenario.power.types if scenario.power else [], types),
    ):
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise AdvisorError(
                f"{where}: {key}: cluster {cluster.name} has no host {'type ' if 'type' in key else ''}"
                f"{unknown[0]!r}"
            )
    retired = frozenset(
        h.name
        for h in cluster.hosts
        if h.name in scenario.retire_hosts or host_type(h) in scenario.retire_types
    )
    hosts = [
        _changed(
            h,
            scenario,
            HostState.MAINTENANCE if h.name in retired or h.name in scenario.maintenance else None,
        )
        for h in cluster.hosts
    ]
    for added in scenario.add_hosts:
        hosts += _new_hosts(added, cluster, power, where, {h.name for h in hosts})
    factor = scenario.factor_at_day(scenario.planned_month * DAYS_PER_MONTH)
    vms = [replace(v, mem_mib=v.mem_mib * factor) for v in cluster.vms]
    fc = {name: _grown(f, factor) for name, f in forecast.vms.items()}
    new_names: set[str] = set()
    taken = {v.name for v in vms}
    for spec in scenario.new_vms:
        for i in range(spec.count):
            name = _fresh(f"{spec.name}-{i + 1}", taken)
            taken.add(name)
            new_names.add(name)
            vms.append(VM(name, "", spec.vcpus, spec.mem_mib * factor, labels={"whatif": scenario.name}))
            fc[name] = _grown(VMForecast(spec.p50, spec.p95, spec.mem_mib, spec.mem_mib), factor)
    plan_settings = settings.model_copy(
        update={
            "time_limit_s": scenario.time_limit_s,
            **({"cpu_headroom": scenario.cpu_headroom} if scenario.cpu_headroom is not None else {}),
            **({"mem_headroom": scenario.mem_headroom} if scenario.mem_headroom is not None else {}),
        }
    )
    vms = _place_new(vms, fc, hosts, new_names, plan_settings)
    try:
        what_if = Cluster(cluster.name, tuple(hosts), tuple(vms), cluster.rules)
    except InputError as e:
        raise AdvisorError(f"{where}: {e}") from None
    grown = replace(forecast, cluster_fingerprint=what_if.fingerprint(), vms=fc)
    return WhatIfInput(what_if, grown, plan_settings, retired, frozenset(new_names), factor)


def _changed(host: Host, scenario: Scenario, state: HostState | None) -> Host:
    p = scenario.power
    out = host if state is None else replace(host, state=state)
    if p is not None and (not p.types or host_type(host) in p.types):
        out = replace(out, power=PowerModel(p.idle_w, p.max_w, p.standby_w, tuple(p.curve_w)))
    return out


def _new_hosts(
    spec: NewHosts, cluster: Cluster, power: PowerSettings, where: str, taken: set[str]
) -> list[Host]:
    like = next((h for h in cluster.hosts if host_type(h) == spec.type), None)
    cores = spec.cpu_cores or (like.cpu_cores if like else None)
    mem = spec.mem_mib or (like.mem_mib if like else None)
    if cores is None or mem is None:
        raise AdvisorError(
            f"{where}: add_hosts: cluster {cluster.name} has no host of type {spec.type!r} to copy; "
            "give cpu_cores and mem_mib"
        )
    model = spec.power.model() if spec.power else (like.power if like else power.model())
    label = like.cluster if like else cluster.hosts[0].cluster
    out = []
    for i in range(spec.count):
        name = _fresh(f"new-{spec.type}-{i + 1}", taken)
        taken.add(name)
        out.append(Host(name, cores, mem, cluster=label, power=model, labels={TYPE_LABEL: spec.type}))
    return out


def _fresh(name: str, taken: set[str]) -> str:
    out, k = name, 1
    while out in taken:
        k += 1
        out = f"{name}.{k}"
    return out


def _grown(f: VMForecast, factor: float) -> VMForecast:
    return replace(
        f,
        cpu_p50=f.cpu_p50 * factor,
        cpu_p95=f.cpu_p95 * factor,
        mem_p50=f.mem_p50 * factor,
        mem_p95=f.mem_p95 * factor,
    )


def _place_new(
    vms: list[VM], fc: Mapping[str, VMForecast], hosts: list[Host], new: set[str], settings: PlanSettings
) -> list[VM]:
    """First fit, largest first, on running hosts and then standby ones; a VM that fits nowhere goes to
    the usable host with the most free memory, where the planner sees an overload to repair (or not)."""
    usable = [h for h in hosts if h.can_run_vms]
    if not usable:
        return vms
    cpu = {h.name: 0.0 for h in hosts}
    mem = {h.name: 0.0 for h in hosts}
    for v in vms:
        if v.name not in new:
            cpu[v.host] += fc[v.name].cpu_p95
            mem[v.host] += v.mem_mib
    order = sorted(usable, key=lambda h: (h.state != HostState.UP, h.name))
    placed = {}
    for v in sorted((v for v in vms if v.name in new), key=lambda v: (-v.mem_mib, v.name)):
        d = fc[v.name].cpu_p95
        fits = (
            h
            for h in order
            if cpu[h.name] + d <= h.cpu_cores * settings.cpu_headroom
            and mem[h.name] + v.mem_mib <= h.mem_mib * settings.mem_headroom
        )
        host = next(fits, None) or max(usable, key=lambda h: h.mem_mib * settings.mem_headroom - mem[h.name])
        cpu[host.name] += d
        mem[host.name] += v.mem_mib
        placed[v.name] = host.name
    return [replace(v, host=placed[v.name]) if v.name in placed else v for v in vms]
