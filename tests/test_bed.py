"""The test bed itself: two distinct hosts, a guest whose memory check works, and a live migration
(memory and a local disk) that arrives intact. Everything the executor tests build on."""

from __future__ import annotations

import subprocess

import libvirt
import pytest

from testbed.bed import Bed
from testbed.guest import GuestSpec

pytestmark = [pytest.mark.bed, pytest.mark.slow]

FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    | libvirt.VIR_MIGRATE_PEER2PEER
)


def test_two_distinct_hosts_on_one_machine(bed: Bed) -> None:
    a, b = bed.connect("a"), bed.connect("b")
    assert (a.getHostname(), b.getHostname()) == ("hosta.tb", "hostb.tb")
    assert a.getVersion() >= 9_000_000, "QEMU >= 9 is needed: 7.2 loses dirty pages of TCG guests"
    uuids = {c.getCapabilities().split("<uuid>")[1].split("</uuid>")[0] for c in (a, b)}
    assert uuids == {bed.hosts["a"].uuid, bed.hosts["b"].uuid}


def test_live_migration_keeps_memory_and_disk_intact(clean_bed: Bed) -> None:
    bed = clean_bed
    dom = bed.start_guest("a", GuestSpec("bedvm", mem_mib=256, ws_mib=128, rate_mibps=10, disk_mib=32))
    before = bed.wait_heartbeats("a", "bedvm", count=2)
    assert before[-1].bad == 0 and before[-1].dirtied_mibps > 5

    dom.migrateSetMaxDowntime(300)
    params = {
        libvirt.VIR_MIGRATE_PARAM_URI: bed.hosts["b"].migration_uri,
        libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 64,
    }
    dom.migrateToURI3(bed.hosts["b"].peer_uri, params, FLAGS | libvirt.VIR_MIGRATE_NON_SHARED_DISK)

    a, b = bed.connect("a"), bed.connect("b")
    assert "bedvm" not in [d.name() for d in a.listAllDomains()]
    moved = b.lookupByName("bedvm")
    assert moved.isActive() and moved.isPersistent()
    stats = moved.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    assert stats["memory_iteration"] >= 1 and stats["downtime"] > 0
    after = bed.wait_heartbeats("b", "bedvm", count=3)
    assert all(beat.bad == 0 for beat in after), "the guest lost dirty pages in the migration"
    compare = subprocess.run(
        [
            "qemu-img",
            "compare",
            "-U",
            str(bed.hosts["a"].image_path("bedvm")),
            str(bed.hosts["b"].image_path("bedvm")),
        ],
        capture_output=True,
        text=True,
    )
    assert compare.returncode == 0, compare.stdout + compare.stderr
