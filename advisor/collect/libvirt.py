"""Collector for libvirt hosts: the live inventory and a short sampled series of every active VM.

Utilisation comes from bulk domain stats (one `domainListGetStats` call per host and sample, hosts in
parallel), `samples` times `interval_s` apart; a metrics row is the change between two samples:

* `cpu_cores`: the domain's `cpu.time` delta over the host's own sample interval (what the QEMU process
  used, the figure the Prometheus exporter reports too), clipped at the VM's vCPUs: what QEMU's emulator
  and I/O threads use beyond that is host overhead, not demand a VM's size can be held to.
* `mem_mib`: `balloon.rss` (host memory the guest has actually touched), capped at `balloon.current`
  (its balloon size), or `balloon.current` where no RSS is reported. Not `balloon.current` alone: without a
  balloon driver in the guest it is the configured size at every sample and says nothing about use.
  The planner reserves each VM's configured size either way; this series only feeds the forecaster.
* `dirty_mibps`: the mean of `dirty_samples` page-sampling dirty-rate readings (`startDirtyRateCalc`,
  `dirty_calc_s` each), taken while the CPU samples run, for up to `workers` VMs at once. Single
  readings are noisy (libvirt samples 512 pages per GiB: +-100 % per reading, a mean of 5 within ~30 %),
  so the VM's mean is on every row. A paused VM dirties nothing: 0 without a reading.

Limitation: this is a snapshot, seconds of history, not the days the forecaster learns daily patterns
from; that history comes from Prometheus (`collect.source = "prometheus"`). Use this source for the live
inventory, for dirty rates (no exporter has them) and where no Prometheus scrapes the hosts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from advisor.config import LibvirtSettings, PowerSettings
from advisor.core import Cluster
from advisor.errors import InputError
from advisor.metrics import validate_metrics
from advisor.virt.connection import require_libvirt
from advisor.virt.inventory import HostConnection, Live, close_all, host_connections, open_hosts, read_live

Progress = Callable[[str], None]
KIB_PER_MIB = 1024.0
DIRTY_DONE = 2  # dirtyrate.calc_status: measured
DIRTY_POLL_S = 0.2
DIRTY_GRACE_S = 15.0  # beyond calc time, before a reading counts as lost


@dataclass(frozen=True)
class Sample:
    """One VM at one sampling round: seconds on the monotonic clock, cumulative CPU ns, memory MiB."""

    vm: str
    round: int
    mono_s: float
    cpu_ns: float
    mem_mib: float


def collect_libvirt(
    settings: LibvirtSettings, power: PowerSettings, progress: Progress | None = None
) -> tuple[Cluster, pd.DataFrame]:
    """The live cluster of the configured hosts and `samples - 1` rows of metrics per VM."""
    say = progress or (lambda _: None)
    hosts = host_connections(settings, power)
    say(f"connecting to {len(hosts)} libvirt host(s)")
    conns = open_hosts(hosts, settings.timeout_s)
    try:
        live = read_live(conns, hosts, settings)
        return sample(live, conns, hosts, settings, say)
    finally:
        close_all(conns)


def sample(
    live: Live,
    conns: Mapping[str, Any],
    hosts: Sequence[HostConnection],
    settings: LibvirtSettings,
    say: Progress,
) -> tuple[Cluster, pd.DataFrame]:
    """Sample the VMs of `live`; VMs that go away meanwhile (stopped, migrated) are left out and reported."""
    vms = live.cluster.vms
    span = (settings.samples - 1) * settings.interval_s
    say(
        f"{len(vms)} VMs on {len(hosts)} host(s): {settings.samples} samples {settings.interval_s:g} s apart"
        + (f", {settings.dirty_samples} dirty-rate readings each" if settings.dirty_samples else "")
        + f" (~{span:.0f} s)"
    )
    on_host = {h.name: [v.name for v in vms if v.host == h.name] for h in hosts}
    with ThreadPoolExecutor(max_workers=settings.workers) as dirty_pool:
        dirty = {
            vm.name: dirty_pool.submit(
                measure_dirty_rate, conns[vm.host], live.domains[vm.name], live.states[vm.name], settings
            )
            for vm in vms
            if settings.dirty_samples
        }
        first, samples = _sample_rounds(conns, live.domains, on_host, settings)
    gone = sorted({v.name for v in vms} - {s.vm for s in samples if s.round == settings.samples - 1})
    if gone:
        say(f"{len(gone)} VM(s) stopped or migrated while sampled, left out: {', '.join(gone[:5])}")
    rates = {name: _result(fut, name) for name, fut in dirty.items() if name not in gone}
    cluster = replace(live.cluster, vms=tuple(v for v in vms if v.name not in gone))
    vcpus = {v.name: v.vcpus for v in cluster.vms}
    frame = rows_from_samples(samples, vcpus, settings.interval_s, first)
    if settings.dirty_samples:
        frame["dirty_mibps"] = frame["vm"].map(rates).astype(float)
    return cluster, validate_metrics(frame, "libvirt")


def rows_from_samples(
    samples: Sequence[Sample], vcpus: Mapping[str, int], interval_s: float, first: pd.Timestamp
) -> pd.DataFrame:
    """Metrics rows from consecutive rounds of each VM in `vcpus` (others are dropped). A row stands at
    the end of its interval, on a regular grid `interval_s` apart from `first` (round 0's time, floored
    to the second); CPU rates use the hosts' measured intervals."""
    df = pd.DataFrame(
        {
            "vm": pd.Series([s.vm for s in samples], dtype=object),
            "round": pd.Series([s.round for s in samples], dtype=np.int64),
            "mono_s": pd.Series([s.mono_s for s in samples], dtype=float),
            "cpu_ns": pd.Series([s.cpu_ns for s in samples], dtype=float),
            "mem_mib": pd.Series([s.mem_mib for s in samples], dtype=float),
        }
    )
    df = df[df["vm"].isin(list(vcpus))].sort_values(["vm", "round"], kind="stable")
    prev = df.groupby("vm", sort=False).shift(1)
    consecutive = (df["round"] - prev["round"]) == 1
    dt = (df["mono_s"] - prev["mono_s"]).to_numpy(float)
    used = (df["cpu_ns"] - prev["cpu_ns"]).to_numpy(float) / 1e9
    with np.errstate(invalid="ignore", divide="ignore"):
        cores = np.clip(used / dt, 0.0, df["vm"].map(vcpus).to_numpy(float))
    rows = df.assign(cpu_cores=cores)[consecutive.to_numpy() & (dt > 0)]
    ts = first.floor("s") + pd.to_timedelta(rows["round"].to_numpy(float) * interval_s, unit="s")
    return pd.DataFrame(
        {
            "vm": rows["vm"].to_numpy(),
            "ts": ts,
            "cpu_cores": rows["cpu_cores"].to_numpy(float),
            "mem_mib": rows["mem_mib"].to_numpy(float),
        }
    )


def memory_in_use_mib(stats: Mapping[str, Any]) -> float:
    """`balloon.rss` capped at `balloon.current`, or `balloon.current` alone (both KiB) -> MiB."""
    current = float(stats.get("balloon.current", 0.0))
    rss = stats.get("balloon.rss")
    if rss is None:
        return current / KIB_PER_MIB
    return (min(float(rss), current) if current else float(rss)) / KIB_PER_MIB


def measure_dirty_rate(conn: Any, dom: Any, state: int, settings: LibvirtSettings) -> float:
    """Mean MiB/s of `settings.dirty_samples` page-sampling readings (0 for a VM that is not running)."""
    lv = require_libvirt()
    if state != lv.VIR_DOMAIN_RUNNING:
        return 0.0
    readings = []
    for _ in range(settings.dirty_samples):
        dom.startDirtyRateCalc(settings.dirty_calc_s, lv.VIR_DOMAIN_DIRTYRATE_MODE_PAGE_SAMPLING)
        deadline = time.monotonic() + settings.dirty_calc_s + DIRTY_GRACE_S
        time.sleep(settings.dirty_calc_s)
        while True:
            stats = conn.domainListGetStats([dom], lv.VIR_DOMAIN_STATS_DIRTYRATE)[0][1]
            if stats.get("dirtyrate.calc_status") == DIRTY_DONE:
                readings.append(float(stats["dirtyrate.megabytes_per_second"]))
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no dirty-rate reading in {settings.dirty_calc_s + DIRTY_GRACE_S:g} s")
            time.sleep(DIRTY_POLL_S)
    return float(np.mean(readings))


def _sample_rounds(
    conns: Mapping[str, Any],
    domains: Mapping[str, Any],
    on_host: Mapping[str, Sequence[str]],
    settings: LibvirtSettings,
) -> tuple[pd.Timestamp, list[Sample]]:
    """`settings.samples` rounds on an absolute schedule, hosts in parallel within a round; returns the
    wall-clock time of round 0 and the samples."""
    hosts = [h for h, names in on_host.items() if names]
    out: list[Sample] = []
    first = pd.Timestamp.now(tz="UTC")
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(hosts)))) as pool:
        for k in range(settings.samples):
            wait = start + k * settings.interval_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            rounds = [
                pool.submit(_host_stats, h, conns[h], [domains[n] for n in on_host[h]], k) for h in hosts
            ]
            for done in rounds:
                out.extend(done.result())
    return first, out


def _host_stats(host: str, conn: Any, doms: Sequence[Any], k: int) -> list[Sample]:
    """One round on one host; a domain that has gone away since the inventory is skipped."""
    lv = require_libvirt()
    flags = lv.VIR_DOMAIN_STATS_STATE | lv.VIR_DOMAIN_STATS_CPU_TOTAL | lv.VIR_DOMAIN_STATS_BALLOON
    try:
        t0 = time.monotonic()
        stats = conn.domainListGetStats(list(doms), flags)
        mono = (t0 + time.monotonic()) / 2
    except lv.libvirtError as e:
        if e.get_error_code() != lv.VIR_ERR_NO_DOMAIN:
            raise InputError(f"host {host}: domain stats failed: {e.get_error_message()}") from None
        if len(doms) == 1:
            return []
        return [s for d in doms for s in _host_stats(host, conn, [d], k)]
    return [
        Sample(dom.name(), k, mono, float(st.get("cpu.time", 0.0)), memory_in_use_mib(st))
        for dom, st in stats
        if st.get("state.state", lv.VIR_DOMAIN_RUNNING) != lv.VIR_DOMAIN_SHUTOFF and "cpu.time" in st
    ]


def _result(fut: Future[float], vm: str) -> float:
    lv = require_libvirt()
    try:
        return fut.result()
    except lv.libvirtError as e:
        raise InputError(
            f"VM {vm}: dirty-rate reading failed ({e.get_error_message()}); "
            "collect.libvirt.dirty_samples = 0 collects without"
        ) from None
    except TimeoutError as e:
        raise InputError(f"VM {vm}: {e}") from None
