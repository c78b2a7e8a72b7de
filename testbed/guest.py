"""The test guest: a Debian kernel and a one-file initramfs whose init dirties memory and checks it.

No disk image and no distribution inside: the guest boots in about 6 s under TCG, writes heartbeats to
its serial console, and reports lost dirty pages after a migration (shared/notes/testbed.md, section 3).
Artefacts are built once per machine into a cache directory.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("ADVISOR_TESTBED_CACHE", "/var/cache/advisor-testbed"))
DIRTIER_C = Path(__file__).with_name("guest") / "dirtier.c"


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path


def build_image(cache: Path = CACHE) -> GuestImage:
    """The kernel (from Debian's linux-image package, no install) and the dirtier initramfs."""
    cache.mkdir(parents=True, exist_ok=True)
    kernel, initrd = cache / "vmlinuz", cache / "initrd.cpio.gz"
    if not kernel.exists():
        _fetch_kernel(kernel)
    stamp = cache / "initrd.src"
    if not initrd.exists() or not stamp.exists() or stamp.read_text() != DIRTIER_C.read_text():
        _build_initrd(initrd)
        stamp.write_text(DIRTIER_C.read_text())
    return GuestImage(kernel, initrd)


def _fetch_kernel(target: Path) -> None:
    depends = subprocess.run(
        ["apt-cache", "depends", "linux-image-amd64"], check=True, capture_output=True, text=True
    ).stdout
    match = re.search(r"Depends: (linux-image-\S+)", depends)
    if match is None:
        raise RuntimeError("apt-cache knows no linux-image-amd64 dependency: run apt-get update")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", match.group(1)], cwd=tmp, check=True, capture_output=True)
        deb = next(Path(tmp).glob("*.deb"))
        tar_bytes = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True
        ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        member = next(m for m in tar.getmembers() if m.name.startswith("./boot/vmlinuz-"))
        source = tar.extractfile(member)
        assert source is not None
        tmp_target = target.with_suffix(".part")
        tmp_target.write_bytes(source.read())
        tmp_target.replace(target)


def _build_initrd(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "rootfs"
        (root / "dev").mkdir(parents=True)
        subprocess.run(["gcc", "-O2", "-static", "-o", str(root / "init"), str(DIRTIER_C)], check=True)
        # Without a console node the kernel gives init no stdout.
        subprocess.run(["mknod", "-m", "600", str(root / "dev" / "console"), "c", "5", "1"], check=True)
        listing = subprocess.run(["find", "."], cwd=root, check=True, capture_output=True).stdout
        archive = subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=listing, check=True, capture_output=True
        ).stdout
    with (
        open(target.with_suffix(".part"), "wb") as out,
        gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1) as gz,
    ):
        gz.write(archive)
    target.with_suffix(".part").replace(target)


@dataclass(frozen=True)
class GuestSpec:
    """One dirtier guest; `disk_mib` adds a local qcow2 disk (for storage migration)."""

    name: str
    mem_mib: int = 512
    ws_mib: int = 128
    rate_mibps: int = 10
    vcpus: int = 1
    disk_mib: int = 0


def domain_xml(spec: GuestSpec, image: GuestImage) -> str:
    # TCG (`type='qemu'`): this machine's /dev/kvm cannot boot a stock kernel. `<acpi/>` keeps libvirt
    # 9.0 from passing -no-acpi, which QEMU >= 9 rejects.
    disk = ""
    if spec.disk_mib:
        disk = (
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='/var/lib/libvirt/images/{spec.name}.qcow2'/>"
            "<target dev='vda' bus='virtio'/></disk>"
        )
    serial = f"/var/log/libvirt/{spec.name}-serial.log"
    return f"""<domain type='qemu'>
  <name>{spec.name}</name>
  <memory unit='MiB'>{spec.mem_mib}</memory>
  <vcpu>{spec.vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{image.kernel}</kernel><initrd>{image.initrd}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 ws_mb={spec.ws_mib} rate_mb={spec.rate_mibps}</cmdline></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff><on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    {disk}
    <serial type='file'><source path='{serial}' append='on'/><target port='0'/></serial>
    <console type='file'><source path='{serial}' append='on'/><target type='serial' port='0'/></console>
    <memballoon model='virtio'><stats period='5'/></memballoon>
  </devices>
</domain>"""


@dataclass(frozen=True)
class Heartbeat:
    n: int
    t: float
    dirtied_mibps: float
    bad: int


_HB = re.compile(r"hb (\d+) t=([\d.]+) dirtied=([\d.]+)MiB/s total=\d+MiB bad=(\d+)")


def heartbeats(serial_log: Path) -> list[Heartbeat]:
    """The guest's heartbeats from one host's serial log (empty when the file is not there yet)."""
    if not serial_log.exists():
        return []
    text = serial_log.read_text(errors="replace")
    return [Heartbeat(int(n), float(t), float(d), int(b)) for n, t, d, b in _HB.findall(text)]
