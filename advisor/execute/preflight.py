"""Before a live apply touches anything: is the plan still for this cluster, does every destination have
room at every wave, does every VM run where the plan says, may it move, and how (live, with its local
disks, or cold)? The checks are pure functions of the live cluster; `modes` asks libvirt about disks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from enum import StrEnum
from typing import Any

from advisor.core import Cluster, HostState, Plan
from advisor.errors import InputError
from advisor.execute.disks import local_disks
from advisor.execute.journal import MigrationRecord, MigrationState

EPS = 1e-6  # MiB: rounding, not room


class Mode(StrEnum):
    LIVE = "live"
    STORAGE = "storage"  # live, copying local disks (VIR_MIGRATE_NON_SHARED_DISK)
    COLD = "cold"  # the VM is not live-migratable: shut down, move, start


def stale_reason(plan: Plan, cluster: Cluster) -> str:
    """Why the plan does not fit the live cluster ("" if it does)."""
    if plan.cluster_fingerprint == cluster.fingerprint():
        return ""
    return (
        f"stale plan: it was made for cluster state {plan.cluster_fingerprint}, the live cluster is "
        f"{cluster.fingerprint()}; collect and plan again"
    )


def plan_problems(plan: Plan, cluster: Cluster, running: Mapping[str, bool]) -> list[str]:
    """Moves the live cluster forbids: VMs unknown, not running, not movable, or not where the move
    starts; hosts unknown, in maintenance, or in another cluster."""
    vms, hosts = cluster.vm_by_name, cluster.host_by_name
    at = dict(cluster.placement)
    out = []
    for m in sorted(plan.migrations, key=lambda m: m.wave):
        vm = vms.get(m.vm)
        if vm is None:
            out.append(f"VM {m.vm} is not running on any host")
            continue
        if at[m.vm] != m.source or m.source == m.destination:
            move = f"{m.source} -> {m.destination}"
            out.append(f"VM {m.vm}: wave {m.wave} moves it {move}, but it will be on {at[m.vm]}")
        at[m.vm] = m.destination
        if not running.get(m.vm, False):
            out.append(f"VM {m.vm} is not running (paused or shutting down) on {vm.host}")
        if not vm.movable:
            out.append(f"VM {m.vm} is marked not movable")
        dst = hosts.get(m.destination)
        if dst is None:
            out.append(f"VM {m.vm}: destination {m.destination} is not a configured host")
        elif dst.state == HostState.MAINTENANCE:
            out.append(f"VM {m.vm}: destination {m.destination} is in maintenance")
        elif m.source in hosts and hosts[m.source].cluster != dst.cluster:
            out.append(f"VM {m.vm}: {m.source} and {m.destination} are in different clusters")
    return out


def capacity_problems(plan: Plan, cluster: Cluster, done: Sequence[int] = ()) -> list[str]:
    """Destinations short of memory: during each wave a moving VM holds memory on both hosts, so every
    destination must fit what it runs plus what arrives. Migrations in `done` (indices) happened already."""
    hosts = cluster.host_by_name
    mem = {vm.name: vm.mem_mib for vm in cluster.vms}
    placement = dict(cluster.placement)
    finished = set(done)
    out = []
    for wave in _waves(plan):
        arriving = [(i, m) for i, m in wave if i not in finished and m.vm in mem]
        reserved: dict[str, float] = {}
        for vm, host in placement.items():
            reserved[host] = reserved.get(host, 0.0) + mem[vm]
        for _, m in arriving:
            reserved[m.destination] = reserved.get(m.destination, 0.0) + mem[m.vm]
        for dst in sorted({m.destination for _, m in arriving}):
            if dst in hosts and reserved[dst] > hosts[dst].mem_mib + EPS:
                out.append(
                    f"wave {wave[0][1].wave}: destination {dst} needs {reserved[dst]:.0f} MiB, "
                    f"it has {hosts[dst].mem_mib:.0f} MiB"
                )
        for _, m in arriving:
            placement[m.vm] = m.destination
    return out


def resume_problems(stored: Cluster, live: Cluster, records: Sequence[MigrationRecord]) -> list[str]:
    """After reconciliation every VM must run where the journal says it is (done moves applied to the
    cluster the run started from) and nothing else may have changed."""
    expected = dict(stored.placement)
    for r in sorted(records, key=lambda r: r.idx):
        if r.state == MigrationState.DONE:
            expected[r.vm] = r.destination
    here = live.placement
    out = [
        f"VM {vm} runs on {here[vm]}, the journal has it on {host}"
        for vm, host in sorted(expected.items())
        if vm in here and here[vm] != host
    ]
    missing = sorted(set(expected) - set(here))
    if missing:
        out.append(f"VM(s) no longer running anywhere: {', '.join(missing)}")
    if out:
        return out
    as_started = replace(live, vms=tuple(replace(v, host=stored.placement[v.name]) for v in live.vms))
    if as_started.fingerprint() != stored.fingerprint():
        out.append(
            "the cluster changed since the interrupted run began (hosts or VMs added, removed or resized): "
            "collect and plan again"
        )
    return out


def modes(
    plan: Plan, cluster: Cluster, domains: Mapping[str, Any], conns: Mapping[str, Any]
) -> dict[int, Mode]:
    """Each migration's mode, decided once per VM on the host it runs on now."""
    vms = cluster.vm_by_name
    by_vm: dict[str, Mode] = {}
    for m in plan.migrations:
        if m.vm in by_vm:
            continue
        vm = vms[m.vm]
        if not vm.live_migratable:
            by_vm[m.vm] = Mode.COLD
        elif local_disks(conns[vm.host], domains[m.vm]):
            by_vm[m.vm] = Mode.STORAGE
        else:
            by_vm[m.vm] = Mode.LIVE
    return {i: by_vm[m.vm] for i, m in enumerate(plan.migrations)}


def refuse(problems: Sequence[str]) -> None:
    """One line: the first problem, and how many more."""
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(f"preflight refused the plan: {problems[0]}{more}")


def _waves(plan: Plan) -> list[list[tuple[int, Any]]]:
    out: dict[int, list[tuple[int, Any]]] = {}
    for i, m in enumerate(plan.migrations):
        out.setdefault(m.wave, []).append((i, m))
    return [out[w] for w in sorted(out)]
