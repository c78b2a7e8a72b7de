#!/usr/bin/env bash
# System packages the integration tests need (Debian 12): a real Prometheus (+ promtool), the two
# exporters whose metric names the Prometheus collector reads, and Chromium for the what-if report's
# headless-browser test. Idempotent: does nothing when all are
# installed. Run as root (CI) or through sudo.
set -euo pipefail

PACKAGES=(prometheus prometheus-node-exporter prometheus-libvirt-exporter chromium)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-test-deps: all present (${PACKAGES[*]})"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-test-deps: run as root (missing: ${missing[*]})" >&2; exit 1; }
  SUDO="sudo"
fi

echo "install-test-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=600 update
# The packages start nothing by themselves in a container without systemd; the tests start their own
# Prometheus on a free port with a private data directory.
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}"
