"""A VM's local disks: which of its disks must be copied when it moves, and the copy itself for a cold
migration (a live one lets QEMU copy them: VIR_MIGRATE_NON_SHARED_DISK).

A disk is local when its file or block device lies in a storage pool of a local type (dir, fs, logical,
disk, zfs) on the source host. A disk in a network pool, a network disk, or a file in no pool counts as
shared: wrongly assuming shared makes the destination fail to open the disk and the migration fail with
the VM still on its source, while wrongly assuming local would copy a shared disk onto itself.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from advisor.errors import InputError
from advisor.virt.connection import require_libvirt

LOCAL_POOL_TYPES = {"dir", "fs", "logical", "disk", "zfs"}
MIB = 1024 * 1024
CHUNK = 4 * MIB


@dataclass(frozen=True)
class LocalDisk:
    target: str  # the guest's device name (vda), what VIR_MIGRATE_PARAM_MIGRATE_DISKS takes
    path: str
    pool: str
    allocation_mib: float


def local_disks(conn: Any, dom: Any) -> list[LocalDisk]:
    """The domain's writable disks that live in a local storage pool of its host."""
    pools = _local_pool_paths(conn)
    out = []
    for disk in ET.fromstring(dom.XMLDesc(0)).iter("disk"):
        if disk.get("device", "disk") != "disk" or disk.find("readonly") is not None:
            continue
        if disk.find("shareable") is not None:
            continue
        source, target = disk.find("source"), disk.find("target")
        if source is None or target is None:
            continue
        path = source.get("file") or source.get("dev")
        if not path:
            continue
        pool = next((name for name, root in pools.items() if path.startswith(root.rstrip("/") + "/")), None)
        if pool is None:
            continue
        dev = target.get("dev", "")
        allocation = dom.blockInfo(dev)[1] if dom.isActive() else conn.storageVolLookupByPath(path).info()[2]
        out.append(LocalDisk(dev, path, pool, allocation / MIB))
    return out


def _local_pool_paths(conn: Any) -> dict[str, str]:
    out = {}
    for pool in conn.listAllStoragePools():
        root = ET.fromstring(pool.XMLDesc(0))
        path = root.findtext("target/path")
        if root.get("type") in LOCAL_POOL_TYPES and path:
            out[pool.name()] = path
    return out


def copy_volume(src: Any, dst: Any, disk: LocalDisk, replace: bool) -> None:
    """Copy a local disk's volume, byte for byte, into the same pool on the destination host, through
    libvirt streams (no shell access to either host needed). An existing volume there is an error unless
    `replace` (a copy this apply started before it was interrupted)."""
    lv = require_libvirt()
    try:
        pool = src.storagePoolLookupByName(disk.pool)
        pool.refresh(0)
        volume = src.storageVolLookupByPath(disk.path)
        dst_pool = dst.storagePoolLookupByName(disk.pool)
    except lv.libvirtError as e:
        raise InputError(f"disk {disk.target} ({disk.path}): {e.get_error_message()}") from None
    dst_pool.refresh(0)
    if volume.name() in dst_pool.listVolumes():
        if not replace:
            raise InputError(
                f"disk {disk.target}: the destination's pool {disk.pool} already has a volume {volume.name()}"
            )
        dst_pool.storageVolLookupByName(volume.name()).delete(0)
    root = ET.fromstring(volume.XMLDesc(0))
    for tag in ("key", "target/path"):
        parent, _, leaf = tag.rpartition("/")
        holder = root.find(parent) if parent else root
        child = holder.find(leaf) if holder is not None else None
        if holder is not None and child is not None:
            holder.remove(child)
    created = dst_pool.createXML(ET.tostring(root, encoding="unicode"), 0)
    down, up = src.newStream(0), dst.newStream(0)
    volume.download(down, 0, 0, 0)
    created.upload(up, 0, 0, 0)
    try:
        while chunk := down.recv(CHUNK):
            if not isinstance(chunk, bytes):
                raise InputError(f"disk {disk.target}: reading the source volume failed")
            view = memoryview(chunk)
            while view:
                sent = up.send(bytes(view))
                view = view[sent:]
        down.finish()
        up.finish()
    except BaseException:
        for stream in (down, up):
            with suppress(lv.libvirtError):
                stream.abort()
        raise
