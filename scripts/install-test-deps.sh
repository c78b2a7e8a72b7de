#!/usr/bin/env bash
# System packages the integration tests need (Debian 12), installed as root (CI) or through sudo:
# - a real Prometheus (+ promtool) and the two exporters whose metric names the Prometheus collector reads;
# - Chromium for the what-if report's headless-browser test;
# - the two-host libvirt test bed (shared/notes/testbed.md): libvirt 9.0 (monolithic libvirtd, no
#   systemd units), QEMU 10 from bookworm-backports (bookworm's QEMU 7.2 loses dirty pages of TCG guests
#   during pre-copy), the headers libvirt-python builds against, gcc for the guest's init, and the
#   `libvirt-qemu` user that root libvirtd insists on.
# Idempotent: does nothing when everything is present.
set -euo pipefail

PACKAGES=(prometheus prometheus-node-exporter prometheus-libvirt-exporter chromium
          libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
          libvirt-dev pkg-config gcc libc6-dev iproute2 cpio)
# Named per package: `-t bookworm-backports` on the whole line would pull libvirt 11 as well.
BACKPORTS=(qemu-system-x86 qemu-system-common qemu-system-data seabios qemu-utils qemu-block-extra)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
APT="$SUDO apt-get -o DPkg::Lock::Timeout=600"
export DEBIAN_FRONTEND=noninteractive

installed() { dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null | grep -q "install ok installed"; }

missing=()
for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
qemu_version=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
need_backports=0
case "$qemu_version" in 1:1[0-9].*) ;; *) need_backports=1 ;; esac
for p in qemu-utils qemu-block-extra; do installed "$p" || need_backports=1; done

if [ ${#missing[@]} -eq 0 ] && [ $need_backports -eq 0 ] && getent passwd libvirt-qemu >/dev/null; then
  echo "install-test-deps: all present"
  exit 0
fi
if [ -n "$SUDO" ] && ! command -v sudo >/dev/null; then
  echo "install-test-deps: run as root (missing: ${missing[*]} ${BACKPORTS[*]})" >&2
  exit 1
fi

if [ $need_backports -eq 1 ] && [ ! -e /etc/apt/sources.list.d/backports.sources ]; then
  # Backports from the machine's own Debian mirror: the first stanza of debian.sources, other suite.
  sed -n '1,/^$/p' /etc/apt/sources.list.d/debian.sources \
    | sed 's/^Suites:.*/Suites: bookworm-backports/' | $SUDO tee /etc/apt/sources.list.d/backports.sources >/dev/null
fi
$APT update
# Nothing starts by itself in a container without systemd; the tests start their own daemons with
# private state directories.
bp=()
for p in "${BACKPORTS[@]}"; do bp+=("$p/bookworm-backports"); done
$APT install -y --no-install-recommends "${PACKAGES[@]}" "${bp[@]}"

getent group libvirt-qemu >/dev/null || $SUDO groupadd --system libvirt-qemu
getent passwd libvirt-qemu >/dev/null \
  || $SUDO useradd --system -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
echo "install-test-deps: done"
