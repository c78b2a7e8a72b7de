"""Two real libvirt/QEMU hosts on one machine, for the tests and bench/migrations.py.

Each host is a root `libvirtd` in its own network, mount and UTS namespace, with its own state
directories bind-mounted over /etc/libvirt, /run/libvirt and /var/{lib,log,cache}/libvirt; a veth pair
links the two. The recipe, its timings and its pitfalls are in shared/notes/testbed.md. Several beds can
run at once (each gets its own namespace names and subnet), so helpers and CI jobs don't collide.
Needs root, libvirtd, QEMU >= 9 and iproute2 (scripts/install-test-deps.sh).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

from advisor.virt.connection import start_event_loop
from testbed.guest import GuestImage, GuestSpec, Heartbeat, build_image, domain_xml, heartbeats


@dataclass
class Host:
    """One libvirt host of the bed."""

    name: str  # "hosta"
    letter: str  # "a"
    ip: str
    root: Path
    netns: str
    veth: str
    uuid: str
    pid: int = 0

    @property
    def socket(self) -> Path:
        return self.root / "run" / "libvirt-sock"

    @property
    def uri(self) -> str:
        """The URI a client in the root namespace uses (path-based unix socket)."""
        return f"qemu+unix:///system?socket={self.socket}"

    @property
    def peer_uri(self) -> str:
        """The URI the other host's libvirtd uses to reach this one (peer-to-peer migration)."""
        return f"qemu+tcp://{self.ip}/system"

    @property
    def migration_uri(self) -> str:
        """Where QEMU's migration stream goes: over the veth."""
        return f"tcp://{self.ip}"

    def serial_log(self, domain: str) -> Path:
        return self.root / "log" / f"{domain}-serial.log"

    def image_path(self, domain: str) -> Path:
        return self.root / "lib" / "images" / f"{domain}.qcow2"


@dataclass
class Bed:
    """Both hosts, their network and the guest image; `up()` and `down()` are idempotent."""

    root: Path
    bed_id: int = field(default_factory=lambda: 20 + os.getpid() % 200)
    hosts: dict[str, Host] = field(default_factory=dict)
    image: GuestImage | None = None

    def __post_init__(self) -> None:
        for letter in ("a", "b"):
            octet = 1 if letter == "a" else 2
            self.hosts[letter] = Host(
                name=f"host{letter}",
                letter=letter,
                ip=f"10.213.{self.bed_id}.{octet}",
                root=self.root / "hosts" / letter,
                netns=f"advbed{self.bed_id}-{letter}",
                veth=f"advb{self.bed_id}{letter}",
                uuid=f"6a0b1b6e-0000-4000-8000-{self.bed_id:010d}0{letter}",
            )

    # -- lifecycle ---------------------------------------------------------------------------------

    def up(self, timeout_s: float = 90.0) -> None:
        self.image = build_image()
        start_event_loop()
        self._network_up()
        for host in self.hosts.values():
            self._write_config(host)
            self._start_daemon(host)
        for host in self.hosts.values():
            conn = self.connect(host.letter, timeout_s)
            self._ensure_pool(conn)
            conn.close()

    def down(self) -> None:
        for host in self.hosts.values():
            self.destroy_all(host.letter)
            self.stop_daemon(host.letter)
        for host in self.hosts.values():
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True)

    def _network_up(self) -> None:
        a, b = self.hosts["a"], self.hosts["b"]
        for host in (a, b):
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True)
            _ip("netns", "add", host.netns)
        _ip("link", "add", a.veth, "type", "veth", "peer", "name", b.veth)
        for host in (a, b):
            _ip("link", "set", host.veth, "netns", host.netns)
            _ip("-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", host.veth)
            _ip("-n", host.netns, "link", "set", "lo", "up")
            _ip("-n", host.netns, "link", "set", host.veth, "up")

    def _write_config(self, host: Host) -> None:
        for sub in ("etc", "run", "lib/images", "log", "cache"):
            (host.root / sub).mkdir(parents=True, exist_ok=True)
        etc = host.root / "etc"
        (etc / "libvirtd.conf").write_text(
            "listen_tls = 0\nlisten_tcp = 1\n"
            f'listen_addr = "{host.ip}"\n'
            'auth_tcp = "none"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\n'
            'unix_sock_group = "root"\nunix_sock_rw_perms = "0770"\n'
            f'host_uuid = "{host.uuid}"\n'
            'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n'
        )
        # cgroups off: with them both daemons would share /machine/qemu-1-<name>.
        (etc / "qemu.conf").write_text(
            'user = "root"\ngroup = "root"\ndynamic_ownership = 0\nremember_owner = 0\n'
            'security_driver = "none"\ncgroup_controllers = [ ]\nnamespaces = [ ]\n'
            'stdio_handler = "file"\n'
            f'migration_address = "{host.ip}"\n'
            "migration_port_min = 49152\nmigration_port_max = 49215\n"
        )
        lines = ["127.0.0.1 localhost"] + [f"{h.ip} {h.name}.tb {h.name}" for h in self.hosts.values()]
        (etc / "hosts").write_text("\n".join(lines) + "\n")
        (etc / "resolv.conf").write_text("")

    def _start_daemon(self, host: Host) -> None:
        r = host.root
        script = f"""
hostname {host.name}
mount --bind {r}/etc /etc/libvirt
mount --bind {r}/etc/hosts /etc/hosts
mount --bind {r}/etc/resolv.conf /etc/resolv.conf
mkdir -p /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt
mount --bind {r}/run /run/libvirt
mount --bind {r}/lib /var/lib/libvirt
mount --bind {r}/log /var/log/libvirt
mount --bind {r}/cache /var/cache/libvirt
exec libvirtd --listen --config /etc/libvirt/libvirtd.conf --pid-file /run/libvirt/libvirtd.pid
"""
        out = open(r / "daemon.out", "ab")  # noqa: SIM115 - handed to the daemon, closed with it
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                host.netns,
                "unshare",
                "--uts",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        host.pid = proc.pid

    def stop_daemon(self, letter: str, sig: int = signal.SIGTERM) -> None:
        """Stop (or, with SIGKILL, kill) a host's libvirtd; its QEMU processes outlive it."""
        host = self.hosts[letter]
        if not host.pid:
            return
        try:
            os.kill(host.pid, sig)
        except ProcessLookupError:
            host.pid = 0
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(host.pid, os.WNOHANG)
            except ChildProcessError:
                done = host.pid
            if done:
                break
            time.sleep(0.1)
        else:
            os.kill(host.pid, signal.SIGKILL)
        host.pid = 0

    def restart_daemon(self, letter: str, timeout_s: float = 60.0) -> None:
        host = self.hosts[letter]
        self.stop_daemon(letter)
        self._start_daemon(host)
        self.connect(letter, timeout_s).close()

    def connect(self, letter: str, timeout_s: float = 60.0) -> libvirt.virConnect:
        """A connection once the daemon answers (the socket appears seconds before it does)."""
        uri = self.hosts[letter].uri
        start = time.monotonic()
        while True:
            try:
                conn = libvirt.open(uri)
                conn.getVersion()
                return conn
            except libvirt.libvirtError:
                if time.monotonic() - start > timeout_s:
                    raise
                time.sleep(0.2)

    @staticmethod
    def _ensure_pool(conn: libvirt.virConnect) -> None:
        # A directory pool where local disks live lets libvirt pre-create a migrating disk on the
        # destination (copy-storage) instead of failing.
        if "images" in conn.listStoragePools() + conn.listDefinedStoragePools():
            return
        pool = conn.storagePoolDefineXML(
            "<pool type='dir'><name>images</name><target><path>/var/lib/libvirt/images</path></target></pool>"
        )
        pool.setAutostart(True)
        pool.create()

    # -- guests ------------------------------------------------------------------------------------

    def start_guest(self, letter: str, spec: GuestSpec, persistent: bool = True) -> libvirt.virDomain:
        """Define and start a dirtier guest on a host (its disk, if any, created there)."""
        assert self.image is not None, "bed is not up"
        host = self.hosts[letter]
        host.serial_log(spec.name).unlink(missing_ok=True)
        if spec.disk_mib:
            _make_disk(host.image_path(spec.name), spec.disk_mib)
        conn = self.connect(letter)
        xml = domain_xml(spec, self.image)
        dom = conn.defineXML(xml) if persistent else conn.createXML(xml, 0)
        if persistent:
            dom.create()
        return dom

    def wait_heartbeats(
        self, letter: str, name: str, count: int = 2, timeout_s: float = 60.0
    ) -> list[Heartbeat]:
        """Wait until a guest has written `count` heartbeats on a host; returns them all."""
        log = self.hosts[letter].serial_log(name)
        deadline = time.monotonic() + timeout_s
        while True:
            beats = heartbeats(log)
            if len(beats) >= count:
                return beats
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} on host {letter}: {len(beats)} heartbeats in {timeout_s:.0f} s")
            time.sleep(0.5)

    def destroy_all(self, letter: str) -> None:
        """Destroy every domain, then undefine it (a destroyed transient domain is gone already)."""
        host = self.hosts[letter]
        if not host.pid:
            return
        try:
            conn = libvirt.open(host.uri)
        except libvirt.libvirtError:
            return
        for dom in conn.listAllDomains():
            persistent = dom.isPersistent()
            if dom.isActive():
                dom.destroy()
            if persistent:
                dom.undefine()
        conn.close()

    # -- faults ------------------------------------------------------------------------------------

    def cut_link(self) -> None:
        for host in self.hosts.values():
            _ip("-n", host.netns, "link", "set", host.veth, "down")

    def restore_link(self) -> None:
        for host in self.hosts.values():
            _ip("-n", host.netns, "link", "set", host.veth, "up")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _make_disk(path: Path, size_mib: int) -> None:
    """A qcow2 disk whose first MiB holds a known pattern, so a copy can be checked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), f"{size_mib}M"], check=True)
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 1M", str(path)], check=True, capture_output=True
    )


@contextmanager
def running_bed(root: Path) -> Iterator[Bed]:
    bed = Bed(root)
    try:
        bed.up()
        yield bed
    finally:
        bed.down()
        shutil.rmtree(root, ignore_errors=True)
