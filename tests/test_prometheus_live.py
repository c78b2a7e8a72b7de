"""The Prometheus collector on a live scrape: a real Prometheus scraping prometheus-libvirt-exporter and
node_exporter, one of each per bed host with the host label added per target (docs/prometheus.md), reads
the bed's VMs as libvirt has them."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from promtest import INSTALL_HINT, PROMETHEUS, free_port, missing_binaries, stop

from advisor.collect.prometheus import load_prometheus
from advisor.config import LibvirtSettings, PowerSettings, PrometheusSettings
from advisor.core import Cluster
from advisor.virt.inventory import host_connections, read_inventory
from testbed.bed import Bed
from testbed.guest import GuestSpec

pytestmark = [pytest.mark.prometheus, pytest.mark.bed, pytest.mark.slow]

LIBVIRT_EXPORTER = Path("/usr/bin/prometheus-libvirt-exporter")
NODE_EXPORTER = Path("/usr/bin/prometheus-node-exporter")
SCRAPE_S = 1
STEP_S = 2
WINDOW_S = 6  # rate() needs two scrapes inside its window, with room for a late one
GUESTS = {
    "a": GuestSpec("plv-a", mem_mib=256, ws_mib=64, rate_mibps=5),
    "b": GuestSpec("plv-b", 320, 64, 5, 2),
}


@contextmanager
def _running(args: list[str], log: Path) -> Iterator[subprocess.Popen]:
    """A process started here and stopped by its PID."""
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            stop(proc)


def _query(url: str, promql: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/v1/query?query={urllib.parse.quote(promql)}", timeout=5) as r:
        return json.load(r)["data"]["result"]


def _wait(what: str, ready: Callable[[], bool], timeout_s: float = 60.0) -> None:
    start = time.monotonic()
    while not ready():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"{what} after {timeout_s:.0f} s")
        time.sleep(0.5)


def _answers(url: str, promql: str, at_least: int) -> bool:
    try:
        return len(_query(url, promql)) >= at_least
    except OSError:
        return False


@contextmanager
def _guests(bed: Bed) -> Iterator[ExitStack]:
    """GUESTS running on the bed, and a stack for what runs beside them; the guests go last."""
    try:
        for letter, spec in GUESTS.items():
            bed.start_guest(letter, spec)
        with ExitStack() as stack:
            yield stack
    finally:
        for letter, spec in GUESTS.items():
            conn = bed.connect(letter)
            for dom in conn.listAllDomains():
                if dom.name() == spec.name:
                    if dom.isActive():
                        dom.destroy()
                    dom.undefine()
            conn.close()


@pytest.fixture(scope="module")
def scraped(bed: Bed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Bed, str]]:
    """A guest per bed host; per host an exporter pair labelled with its name; a Prometheus scraping them."""
    absent = [str(p) for p in (LIBVIRT_EXPORTER, NODE_EXPORTER) if not p.exists()]
    problem = missing_binaries() or (f"{', '.join(absent)} not found: {INSTALL_HINT}" if absent else None)
    if problem:
        pytest.fail(problem, pytrace=False)
    tmp = tmp_path_factory.mktemp("prom-live")
    with _guests(bed) as stack:
        libvirt_jobs, node_jobs = [], []
        for letter, host in bed.hosts.items():
            lv_port, node_port = free_port(), free_port()
            listen = f"--web.listen-address=127.0.0.1:{lv_port}"
            exporter = [str(LIBVIRT_EXPORTER), listen, f"--libvirt.uri={host.uri}"]
            stack.enter_context(_running(exporter, tmp / f"libvirt-exporter-{letter}.log"))
            listen = f"--web.listen-address=127.0.0.1:{node_port}"
            node = [
                str(NODE_EXPORTER),
                listen,
                "--collector.disable-defaults",
                "--collector.cpu",
                "--collector.meminfo",
            ]
            stack.enter_context(_running(node, tmp / f"node-exporter-{letter}.log"))
            libvirt_jobs.append(f"{{targets: ['127.0.0.1:{lv_port}'], labels: {{host: {host.name}}}}}")
            node_jobs.append(f"{{targets: ['127.0.0.1:{node_port}'], labels: {{host: {host.name}}}}}")
        config = tmp / "prometheus.yml"
        config.write_text(
            f"global: {{scrape_interval: {SCRAPE_S}s, scrape_timeout: {SCRAPE_S}s}}\n"
            "scrape_configs:\n"
            f"  - {{job_name: libvirt, static_configs: [{', '.join(libvirt_jobs)}]}}\n"
            f"  - {{job_name: node, static_configs: [{', '.join(node_jobs)}]}}\n"
        )
        port = free_port()
        server = [
            str(PROMETHEUS),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        stack.enter_context(_running(server, tmp / "prometheus.log"))
        url = f"http://127.0.0.1:{port}"
        rate = f"rate(libvirt_domain_info_cpu_time_seconds_total[{WINDOW_S}s])"
        _wait("no CPU rate of both guests", lambda: _answers(url, rate, len(GUESTS)))
        time.sleep(2 * STEP_S)  # a few points on the grid
        yield bed, url


def test_live_scrape_reads_the_beds_vms(scraped: tuple[Bed, str]) -> None:
    bed, url = scraped
    hosts = [{"name": h.name, "uri": h.uri} for h in bed.hosts.values()]
    lv_settings = LibvirtSettings.model_validate({"hosts": hosts})
    truth: Cluster = read_inventory(host_connections(lv_settings, PowerSettings()), lv_settings)
    assert {v.name for v in truth.vms} >= {s.name for s in GUESTS.values()}

    settings = PrometheusSettings.model_validate(
        # A missed 1-s scrape under load is a gap; this test is about the live read, not gap policy.
        {"url": url, "range_h": 20 / 3600, "step_s": STEP_S, "rate_window_s": WINDOW_S, "on_gaps": "report"}
    )
    said: list[str] = []
    cluster, metrics = load_prometheus(settings, None, PowerSettings(), progress=said.append)

    assert {v.name: v.host for v in cluster.vms} == {v.name: v.host for v in truth.vms}
    assert {v.name: (v.vcpus, v.mem_mib) for v in cluster.vms} == {
        v.name: (v.vcpus, v.mem_mib) for v in truth.vms
    }
    assert {h.name: (h.cpu_cores, h.mem_mib) for h in cluster.hosts} == {
        h.name: (h.cpu_cores, h.mem_mib) for h in truth.hosts
    }  # node_exporter and libvirt read the same /proc here
    counts = metrics.groupby("vm").size()
    assert set(counts.index) == {v.name for v in truth.vms} and (counts > 0).all()
    assert (metrics["cpu_cores"] > 0).any()
