"""The Prometheus collector against a real Prometheus (Debian package) backfilled by promtool with a known
slice of the Bitbrains trace written as libvirt-exporter and node_exporter series."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from promtest import backfill, free_port, missing_binaries, prometheus

from advisor.collect import collect, load_bitbrains
from advisor.collect.prom_backfill import write_openmetrics
from advisor.collect.prometheus import load_prometheus
from advisor.config import CollectSettings, PowerSettings, PrometheusSettings, TraceSettings
from advisor.core import VM, Cluster, Host
from advisor.errors import AdvisorError, InputError
from advisor.files import write_cluster

pytestmark = pytest.mark.prometheus

BITBRAINS = Path("/work/shared/data/bitbrains_rnd/bitbrains_rnd_2013-08.csv.gz")
STEP = 300
POINTS = 576  # 2 days at 5 minutes
POWER = PowerSettings()
ENDS_AGO = pd.Timedelta(hours=3)  # no future samples: they would break the server's head block


@pytest.fixture(scope="module", autouse=True)
def _binaries() -> None:
    problem = missing_binaries()
    if problem:
        pytest.fail(problem, pytrace=False)


def _end() -> pd.Timestamp:
    return (pd.Timestamp.now(tz="UTC") - ENDS_AGO).floor(f"{STEP}s")


def _settings(url: str, end: pd.Timestamp, hours: float, **kw: object) -> PrometheusSettings:
    return PrometheusSettings.model_validate({"url": url, "end": end.isoformat(), "range_h": hours, **kw})


@dataclass(frozen=True)
class Served:
    url: str
    end: pd.Timestamp
    cluster: Cluster
    metrics: pd.DataFrame


def _serve(tmp: Path, cluster: Cluster, metrics: pd.DataFrame, drop: str = "") -> Iterator[str]:
    om = tmp / "history.om"
    write_openmetrics(om, cluster, metrics, STEP)
    if drop:  # remove one series, as an exporter that lost a domain would
        om.write_text("".join(line for line in om.read_text().splitlines(True) if not line.startswith(drop)))
    backfill(om, tmp / "data")
    with prometheus(tmp / "data") as url:
        yield url


@pytest.fixture(scope="module")
def bitbrains(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """20 Bitbrains VMs x 2 days, re-timed onto a 5-minute grid ending 3 h ago."""
    if not BITBRAINS.exists():
        pytest.skip(f"{BITBRAINS} is not on this machine")
    trace = TraceSettings.model_validate({"host_mem_mib": 262144, "host_cpu_cores": 32})
    cluster, metrics = load_bitbrains([str(BITBRAINS)], trace, POWER, vms=20)
    metrics = metrics.groupby("vm", sort=False).head(POINTS).copy()
    assert (metrics.groupby("vm").size() == POINTS).all()
    end = _end()
    back = POINTS - 1 - metrics.groupby("vm", sort=False).cumcount()
    metrics["ts"] = end - pd.to_timedelta(back * STEP, unit="s")
    metrics = metrics.sort_values(["vm", "ts"]).reset_index(drop=True)
    for url in _serve(tmp_path_factory.mktemp("prom-bitbrains"), cluster, metrics):
        yield Served(url, end, cluster, metrics)


def test_pull_equals_the_source_within_rounding(bitbrains: Served) -> None:
    cluster, metrics = load_prometheus(_settings(bitbrains.url, bitbrains.end, 48, chunk_h=7), None, POWER)
    src = bitbrains.metrics
    assert len(metrics) == len(src) == 20 * POINTS
    assert (metrics["vm"] == src["vm"]).all() and (metrics["ts"] == src["ts"]).all()
    np.testing.assert_allclose(metrics["cpu_cores"], src["cpu_cores"], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(metrics["mem_mib"], src["mem_mib"])
    by_name = sorted(bitbrains.cluster.vms, key=lambda v: v.name)
    assert list(cluster.vms) == by_name  # names, hosts, vCPUs and sizes from the info metrics
    expected_hosts = {(h.name, h.cpu_cores, h.mem_mib) for h in bitbrains.cluster.hosts}
    assert {(h.name, h.cpu_cores, h.mem_mib) for h in cluster.hosts} == expected_hosts


def test_chunking_does_not_change_the_result(bitbrains: Served) -> None:
    one = load_prometheus(_settings(bitbrains.url, bitbrains.end, 48, chunk_h=48), None, POWER)[1]
    many = load_prometheus(_settings(bitbrains.url, bitbrains.end, 48, chunk_h=0.5), None, POWER)[1]
    pd.testing.assert_frame_equal(one, many)


def test_a_shorter_span_ending_earlier_is_the_matching_slice(bitbrains: Served) -> None:
    end = bitbrains.end - pd.Timedelta(hours=5)
    _, metrics = load_prometheus(_settings(bitbrains.url, end, 12), None, POWER)
    src = bitbrains.metrics
    want = src[(src["ts"] > end - pd.Timedelta(hours=12)) & (src["ts"] <= end)].reset_index(drop=True)
    pd.testing.assert_frame_equal(metrics, want)


def test_span_before_the_history_names_the_missing_vms(bitbrains: Served) -> None:
    """With an inventory, VMs Prometheus has nothing for are reported by name, not dropped."""
    end = bitbrains.end - pd.Timedelta(days=4)
    with pytest.raises(InputError, match=r"no series for 20 VM\(s\): 1 \(vm_cpu, vm_mem\); 10 "):
        load_prometheus(_settings(bitbrains.url, end, 6), bitbrains.cluster, POWER)
    with pytest.raises(InputError, match="no VM series from"):
        load_prometheus(_settings(bitbrains.url, end, 6), None, POWER)


def test_collect_dispatches_to_prometheus_with_an_inventory_file(bitbrains: Served, tmp_path: Path) -> None:
    inv = tmp_path / "cluster.json"
    write_cluster(inv, bitbrains.cluster)
    settings = CollectSettings.model_validate(
        {
            "source": "prometheus",
            "inventory": str(inv),
            "prometheus": {"url": bitbrains.url, "end": bitbrains.end.isoformat(), "range_h": 48},
        }
    )
    cluster, metrics = collect(settings, POWER)
    assert cluster == bitbrains.cluster
    pd.testing.assert_frame_equal(metrics[["vm", "ts"]], bitbrains.metrics[["vm", "ts"]])


# --- Broken history: a VM without CPU series, one with a gap that then stops, one that starts late ----------


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    end = _end()
    grid = pd.date_range(end=end, periods=72, freq=f"{STEP}s")  # 6 hours
    keep = {
        "ok": np.ones(72, bool),
        "nocpu": np.ones(72, bool),
        "holey": np.r_[np.ones(30, bool), np.zeros(3, bool), np.ones(27, bool), np.zeros(12, bool)],
        "late": np.r_[np.zeros(24, bool), np.ones(48, bool)],
    }
    rows = [
        pd.DataFrame({"vm": vm, "ts": grid[mask], "cpu_cores": 0.5, "mem_mib": 1024.0})
        for vm, mask in keep.items()
    ]
    metrics = pd.concat(rows, ignore_index=True)
    cluster = Cluster("small", (Host("h1", 8, 16384),), tuple(VM(vm, "h1", 2, 2048) for vm in keep))
    drop = 'libvirt_domain_info_cpu_time_seconds_total{domain="nocpu"'
    for url in _serve(tmp_path_factory.mktemp("prom-broken"), cluster, metrics, drop=drop):
        yield Served(url, end, cluster, metrics)


def _without(cluster: Cluster, *names: str) -> Cluster:
    return Cluster(cluster.name, cluster.hosts, tuple(v for v in cluster.vms if v.name not in names))


def test_missing_series_is_reported_by_vm_name(broken: Served) -> None:
    with pytest.raises(InputError, match=r"no series for 1 VM\(s\): nocpu \(vm_cpu\)$"):
        load_prometheus(_settings(broken.url, broken.end, 6), None, POWER)


def test_gaps_and_stale_series_fail_by_default(broken: Served) -> None:
    inventory = _without(broken.cluster, "nocpu")
    with pytest.raises(InputError) as err:
        load_prometheus(_settings(broken.url, broken.end, 6), inventory, POWER)
    gap_at = (broken.end - pd.Timedelta(minutes=5 * 41)).strftime("%Y-%m-%dT%H:%M:%SZ")
    stale_at = (broken.end - pd.Timedelta(minutes=5 * 12)).strftime("%Y-%m-%dT%H:%M:%SZ")
    # 3 samples lost, and rate() over one step has no earlier sample for the first one after the gap
    assert str(err.value).startswith(
        "gaps or stale series for 1 VM(s): "
        f"holey: 4 missing step(s) from {gap_at}, no samples since {stale_at}"
    )


def test_on_gaps_report_keeps_what_there_is_unfilled_and_says_so(broken: Served) -> None:
    inventory = _without(broken.cluster, "nocpu")
    said: list[str] = []
    _, metrics = load_prometheus(
        _settings(broken.url, broken.end, 6, on_gaps="report"), inventory, POWER, progress=said.append
    )
    src = broken.metrics
    after_gap = (src["vm"] == "holey") & (src["ts"] == broken.end - pd.Timedelta(minutes=5 * 38))
    want = src[(src["vm"] != "nocpu") & ~after_gap].sort_values(["vm", "ts"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(metrics, want, check_dtype=False)
    assert any("holey: 4 missing step(s)" in s for s in said)
    assert any(s.startswith("1 VM(s) with a shorter history: late from") for s in said)


def test_a_late_vm_alone_is_accepted(broken: Served) -> None:
    inventory = _without(broken.cluster, "nocpu", "holey")
    _, metrics = load_prometheus(_settings(broken.url, broken.end, 6), inventory, POWER)
    assert metrics.groupby("vm").size().to_dict() == {"late": 48, "ok": 72}


# --- A Prometheus that is down, or a query it rejects ------------------------------------------------------


def test_down_prometheus_is_one_clear_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(AdvisorError, match=rf"^Prometheus at {url}: not reachable \(Connection refused\)$"):
        load_prometheus(_settings(url, _end(), 1), None, POWER)


def test_bad_query_names_the_key_and_prometheus_reason(bitbrains: Served) -> None:
    settings = _settings(bitbrains.url, bitbrains.end, 1, vm_mem="max by ($vm (")
    with pytest.raises(AdvisorError, match=r"query vm_mem failed: HTTP 400: .*parse error"):
        load_prometheus(settings, None, POWER)


def test_label_mappings_and_literal_dollars(bitbrains: Served) -> None:
    """Labels named otherwise (here made by label_replace, whose `$1` is written `$$1`) map by config."""
    rename = (
        'label_replace(label_replace({q}, "vm_name", "$$1", "domain", "(.*)"), "node", "$$1", "host", "(.*)")'
    )
    rename_host = 'label_replace({q}, "node", "$$1", "host", "(.*)")'
    settings = _settings(
        bitbrains.url,
        bitbrains.end,
        48,
        vm_label="vm_name",
        host_label="node",
        vm_cpu="sum by ($vm, $host) ("
        + rename.format(q="rate(libvirt_domain_info_cpu_time_seconds_total[$window])")
        + ")",
        vm_mem="max by ($vm, $host) (" + rename.format(q="libvirt_domain_info_memory_usage_bytes") + ")",
        vm_vcpus="max by ($vm) ("
        + rename.format(q="max_over_time(libvirt_domain_info_virtual_cpus[$range])")
        + ")",
        vm_mem_size="max by ($vm) ("
        + rename.format(q="max_over_time(libvirt_domain_info_maximum_memory_bytes[$range])")
        + ")",
        host_cores="count by ($host) ("
        + rename_host.format(q='last_over_time(node_cpu_seconds_total{mode="idle"}[$range])')
        + ")",
        host_mem="max by ($host) (" + rename_host.format(q="node_memory_MemTotal_bytes") + ")",
    )
    cluster, metrics = load_prometheus(settings, None, POWER)
    pd.testing.assert_frame_equal(
        metrics, load_prometheus(_settings(bitbrains.url, bitbrains.end, 48), None, POWER)[1]
    )
    assert {v.host for v in cluster.vms} == {v.host for v in bitbrains.cluster.vms}


def test_series_without_vm_or_host_label_are_named(bitbrains: Served) -> None:
    no_host = _settings(
        bitbrains.url,
        bitbrains.end,
        1,
        vm_cpu="sum by ($vm) (rate(libvirt_domain_info_cpu_time_seconds_total[$window]))",
        vm_mem="max by ($vm) (libvirt_domain_info_memory_usage_bytes)",
    )
    with pytest.raises(
        InputError, match=r"^20 VM\(s\) \(1, 10, 11, 12, 13\) lack a host label: add it by relabelling"
    ):
        load_prometheus(no_host, None, POWER)
    assert len(load_prometheus(no_host, bitbrains.cluster, POWER)[1]) == 20 * 12  # the inventory places them
    no_vm = _settings(bitbrains.url, bitbrains.end, 1, vm_mem="sum(libvirt_domain_info_memory_usage_bytes)")
    with pytest.raises(InputError, match="query vm_mem returns series without the VM label 'domain'"):
        load_prometheus(no_vm, None, POWER)
