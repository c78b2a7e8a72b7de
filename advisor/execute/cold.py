"""Cold migration, for VMs marked not live-migratable: shut the VM down, copy its local disks, move its
definition (libvirt's offline migration, peer to peer), start it on the destination.

Until the definition has moved, any failure starts the VM again on its source, so a failed cold migration
costs a restart, never the VM.
"""

from __future__ import annotations

import time
from typing import Any

from advisor.config import ApplySettings
from advisor.errors import InputError
from advisor.execute.disks import copy_volume, local_disks
from advisor.execute.hosts import HostPool
from advisor.execute.journal import MigrationState, scrub
from advisor.execute.migrate import Outcome, Step
from advisor.virt.connection import require_libvirt

SHUTDOWN_POLL_S = 0.5


def migrate_cold(
    pool: HostPool,
    vm: str,
    source: str,
    destination: str,
    settings: ApplySettings,
    step: Step,
    replace_volumes: bool = False,
) -> Outcome:
    lv = require_libvirt()
    src, dst = pool.conn(source), pool.conn(destination)
    dom = src.lookupByName(vm)
    if not dom.isPersistent():
        return Outcome(MigrationState.FAILED, f"VM {vm} is transient: a shutdown would lose its definition")
    disks = local_disks(src, dom)
    try:
        if dom.isActive():
            _stop(dom, settings, step)
        for disk in disks:
            with step("copy-disk", target=disk.target, pool=disk.pool, mib=round(disk.allocation_mib, 1)):
                copy_volume(src, dst, disk, replace_volumes)
        with step("move-definition", destination=destination):
            flags = (
                lv.VIR_MIGRATE_OFFLINE
                | lv.VIR_MIGRATE_PERSIST_DEST
                | lv.VIR_MIGRATE_UNDEFINE_SOURCE
                | lv.VIR_MIGRATE_PEER2PEER
            )
            dom.migrateToURI3(pool.peer_uri(destination), {}, flags)
    except (lv.libvirtError, InputError, TimeoutError) as e:
        message = e.get_error_message() if isinstance(e, lv.libvirtError) else str(e)
        return Outcome(MigrationState.FAILED, scrub(f"{message}; {_restart(dom, step)}"))
    try:
        with step("start", host=destination):
            dst.lookupByName(vm).create()
    except lv.libvirtError as e:
        return Outcome(
            MigrationState.UNKNOWN,
            scrub(f"defined on {destination} but it did not start: {e.get_error_message()}"),
        )
    return Outcome(MigrationState.DONE, f"restarted on {destination}")


def _stop(dom: Any, settings: ApplySettings, step: Step) -> None:
    """A clean shutdown, or with `cold_force_off` a power-off once it times out."""
    lv = require_libvirt()
    with step("shutdown", timeout_s=settings.cold_shutdown_timeout_s) as record:
        dom.shutdown()
        deadline = time.monotonic() + settings.cold_shutdown_timeout_s
        while dom.isActive() and time.monotonic() < deadline:
            time.sleep(SHUTDOWN_POLL_S)
        record["clean"] = not dom.isActive()
    if not dom.isActive():
        return
    if not settings.cold_force_off:
        raise TimeoutError(
            f"it did not shut down within {settings.cold_shutdown_timeout_s:g} s "
            "(apply.cold_force_off powers such a VM off)"
        )
    with step("power-off"):
        try:
            dom.destroy()
        except lv.libvirtError:
            if dom.isActive():
                raise


def _restart(dom: Any, step: Step) -> str:
    """Start the VM again where it was; says what happened."""
    lv = require_libvirt()
    try:
        if dom.isActive():
            return "the VM still runs on its source"
        with step("restart-on-source"):
            dom.create()
        return "the VM was started again on its source"
    except lv.libvirtError as e:
        return f"starting it again on its source failed too: {e.get_error_message()}"
