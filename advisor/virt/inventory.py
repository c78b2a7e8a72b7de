"""The live inventory of libvirt hosts as a Cluster: what the planner plans and the executor's preflight
compares a plan's fingerprint with.

Hosts: cores from `getInfo()`, memory from `getMemoryStats()` (all NUMA cells: `getInfo()`'s figure can be
node 0 only), each minus the configured reserve. VMs: every active domain (running, paused, ...), its
vCPUs and its maximum memory (what it can claim from the host). Per-VM placement policy lives in the
domain's own XML, so it travels with the VM when it migrates:

    <metadata>
      <advisor:placement xmlns:advisor="urn:advisor:placement:1" movable="false" live_migratable="true">
        <advisor:label name="tier">db</advisor:label>
      </advisor:placement>
    </metadata>

`movable` (default true) keeps a VM where it is; `live_migratable` (default true) false asks for a cold
migration; labels are free key/value pairs. Set it with
`virsh metadata VM --uri urn:advisor:placement:1 --key advisor --set '<placement movable="false"/>'
--live --config`.

Hosts are read concurrently; hosts and VMs are sorted by name so that two reads of an unchanged cluster
have the same fingerprint. A VM active on two hosts (a migration in flight) counts where it runs; if that
is not exactly one host, the read fails naming the VM.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from advisor.config import LibvirtSettings, PowerSettings
from advisor.core import VM, Cluster, Host, HostState, PowerModel
from advisor.errors import InputError
from advisor.virt.connection import connect, redact_uri, require_libvirt

NAMESPACE = "urn:advisor:placement:1"
KEY = "advisor"  # the prefix libvirt writes the element with
KIB_PER_MIB = 1024.0
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}

Seen = tuple[VM, Any, int]  # a VM, its domain handle, its libvirt state


@dataclass(frozen=True)
class HostConnection:
    """A host as the configuration names it, and the URI that reaches its libvirtd."""

    name: str
    uri: str
    cluster: str = "default"
    state: HostState = HostState.UP
    power: PowerModel = field(default_factory=PowerModel)
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def shown(self) -> str:
        """The host for messages: its name and its URI without a password."""
        return f"host {self.name} ({redact_uri(self.uri)})"


@dataclass(frozen=True)
class Placement:
    """A VM's placement policy from its `<metadata>`."""

    movable: bool = True
    live_migratable: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Live:
    """One read of the hosts: the cluster, and each VM's domain handle where it runs (for the collector)."""

    cluster: Cluster
    domains: Mapping[str, Any]  # VM name -> libvirt.virDomain on its host
    states: Mapping[str, int]  # VM name -> libvirt domain state (VIR_DOMAIN_RUNNING, ...)


def host_connections(settings: LibvirtSettings, power: PowerSettings) -> list[HostConnection]:
    """The configured hosts; a host without its own power model gets `[power]`."""
    if not settings.hosts:
        raise InputError("collect.libvirt.hosts is empty: list the hypervisors (name and uri) to read")
    return [
        HostConnection(
            name=h.name,
            uri=h.uri,
            cluster=h.cluster,
            state=HostState(h.state),
            power=(h.power or power).model(),
            labels=dict(h.labels),
        )
        for h in settings.hosts
    ]


def open_hosts(hosts: Sequence[HostConnection], timeout_s: float) -> dict[str, Any]:
    """An open connection per host name, opened concurrently. An unreachable host is an InputError naming
    it (with its URI redacted); the connections already opened are closed first."""

    def one(h: HostConnection) -> Any:
        try:
            return connect(h.uri, timeout_s)
        except InputError as e:
            raise InputError(f"host {h.name}: {_scrubbed(str(e), h.uri)}") from None  # names the URI

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(hosts)))) as pool:
        futures = [pool.submit(one, h) for h in hosts]
    conns: dict[str, Any] = {}
    failure: InputError | None = None
    for h, fut in zip(hosts, futures, strict=True):
        exc = fut.exception()
        if exc is None:
            conns[h.name] = fut.result()
        elif failure is None:
            failure = exc if isinstance(exc, InputError) else InputError(f"{h.shown}: {exc}")
    if failure is not None:
        close_all(conns)
        raise failure
    return conns


def close_all(conns: Mapping[str, Any]) -> None:
    lv = require_libvirt()
    for conn in conns.values():
        with suppress(lv.libvirtError):  # a dead connection needs no closing
            conn.close()


def read_inventory(
    hosts: Sequence[HostConnection],
    settings: LibvirtSettings,
    conns: Mapping[str, Any] | None = None,
) -> Cluster:
    """The live cluster of `hosts`. With `conns` (host name -> open connection) they are used as they are;
    without, connections are opened for the read and closed after it."""
    if conns is not None:
        return read_live(conns, hosts, settings).cluster
    opened = open_hosts(hosts, settings.timeout_s)
    try:
        return read_live(opened, hosts, settings).cluster
    finally:
        close_all(opened)


def read_live(conns: Mapping[str, Any], hosts: Sequence[HostConnection], settings: LibvirtSettings) -> Live:
    """The cluster and the domain handles of its VMs, read from open connections."""
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(hosts)))) as pool:
        reads = list(pool.map(lambda h: _read_host(conns[h.name], h, settings), hosts))
    by_vm: dict[str, list[tuple[str, VM, Any, int]]] = {}
    for h, (_, found) in zip(hosts, reads, strict=True):
        for vm, dom, state in found:
            by_vm.setdefault(vm.name, []).append((h.name, vm, dom, state))
    chosen = {name: _where_it_runs(name, seen) for name, seen in by_vm.items()}
    cluster = Cluster(
        name=settings.cluster,
        hosts=tuple(sorted((host for host, _ in reads), key=lambda x: x.name)),
        vms=tuple(chosen[name][1] for name in sorted(chosen)),
    )
    return Live(
        cluster,
        domains={name: c[2] for name, c in chosen.items()},
        states={name: c[3] for name, c in chosen.items()},
    )


def domain_locations(conns: Mapping[str, Any], active_only: bool = True) -> dict[str, list[str]]:
    """VM name -> the hosts (sorted) where a domain of that name is active (or, with `active_only`
    false, defined at all). One host per VM is the healthy case; none is a lost VM, two a duplicate."""
    lv = require_libvirt()
    flags = lv.VIR_CONNECT_LIST_DOMAINS_ACTIVE if active_only else 0
    out: dict[str, list[str]] = {}
    for host in sorted(conns):
        for dom in conns[host].listAllDomains(flags):
            out.setdefault(dom.name(), []).append(host)
    return dict(sorted(out.items()))


def parse_placement(xml: str | None, where: str) -> Placement:
    """The placement policy from the metadata element's XML (None: no metadata, the defaults)."""
    if xml is None:
        return Placement()
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise InputError(f"{where}: placement metadata is not XML ({e})") from None
    labels: dict[str, str] = {}
    for el in root:
        if _local(el.tag) != "label":
            continue
        name = el.get("name")
        if not name:
            raise InputError(f"{where}: placement metadata has a <label> without a name")
        labels[name] = (el.text or "").strip()
    return Placement(
        movable=_flag(root, "movable", where),
        live_migratable=_flag(root, "live_migratable", where),
        labels=dict(sorted(labels.items())),
    )


# --- reading one host -----------------------------------------------------------------------------------


def _read_host(conn: Any, h: HostConnection, settings: LibvirtSettings) -> tuple[Host, list[Seen]]:
    lv = require_libvirt()
    try:
        cores = float(conn.getInfo()[2]) - settings.cpu_reserve_cores
        mem = conn.getMemoryStats(lv.VIR_NODE_MEMORY_STATS_ALL_CELLS)["total"] / KIB_PER_MIB
        mem -= settings.mem_reserve_mib
        domains = conn.listAllDomains(lv.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
    except lv.libvirtError as e:
        raise InputError(f"{h.shown}: {_scrubbed(e.get_error_message(), h.uri)}") from None
    for what, left, key in (("cores", cores, "cpu_reserve_cores"), ("MiB", mem, "mem_reserve_mib")):
        if left <= 0:
            raise InputError(f"{h.shown}: collect.libvirt.{key} leaves no {what} for VMs")
    host = Host(h.name, cores, mem, cluster=h.cluster, state=h.state, power=h.power, labels=dict(h.labels))
    found = []
    for dom in domains:
        seen = _read_domain(dom, h)
        if seen is not None:
            found.append(seen)
    return host, found


def _read_domain(dom: Any, h: HostConnection) -> Seen | None:
    """The VM of one active domain, or None if it went away while being read."""
    lv = require_libvirt()
    try:
        name = dom.name()
        state, max_kib, _, vcpus, _ = dom.info()
        try:
            xml = dom.metadata(lv.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0)
        except lv.libvirtError as e:
            if e.get_error_code() != lv.VIR_ERR_NO_DOMAIN_METADATA:
                raise
            xml = None
    except lv.libvirtError as e:
        if e.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
            return None  # shut down or migrated away between the listing and now
        raise InputError(f"{h.shown}: {_scrubbed(e.get_error_message(), h.uri)}") from None
    policy = parse_placement(xml, f"VM {name} on host {h.name}")
    vm = VM(
        name=name,
        host=h.name,
        vcpus=int(vcpus),
        mem_mib=max_kib / KIB_PER_MIB,
        labels=policy.labels,
        movable=policy.movable,
        live_migratable=policy.live_migratable,
    )
    return vm, dom, int(state)


def _where_it_runs(name: str, seen: list[tuple[str, VM, Any, int]]) -> tuple[str, VM, Any, int]:
    """One entry per VM: the only one, or during a migration the one that runs (the other end is paused)."""
    if len(seen) == 1:
        return seen[0]
    running = [s for s in seen if s[3] == require_libvirt().VIR_DOMAIN_RUNNING]
    if len(running) == 1:
        return running[0]
    hosts = ", ".join(sorted(s[0] for s in seen))
    raise InputError(f"VM {name} is active on {hosts} (a migration in flight?); collect again when it ends")


def _flag(root: ET.Element, attr: str, where: str) -> bool:
    value = root.get(attr)
    if value is None:
        return True
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise InputError(f"{where}: placement metadata {attr}={value!r} is not true or false")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _scrubbed(message: str, uri: str) -> str:
    """`message` without the URI's password, in case libvirt quoted the URI back."""
    password = urlsplit(uri).password
    return message.replace(password, "***") if password else message
