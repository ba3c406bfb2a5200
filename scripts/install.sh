#!/usr/bin/env bash
# Installs everything provisioner needs on a Debian/Ubuntu machine: system packages, the
# native runtime, and the Python package (editable, with test extras). Idempotent.
# Used by README's first command and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  # disks
  btrfs-progs util-linux udev e2fsprogs fdisk
  # native runtime build + peers
  build-essential pkg-config libjson-c-dev libseccomp-dev libcap-dev runc crun busybox-static containerd strace
  # images: registry and peers
  docker-registry skopeo umoci podman
  # networking
  iproute2 iptables nftables procps conntrack
  # containers: --init (compose init: true) runs the host's tini-static as PID 1
  tini
  # local cloud (qemu VMs)
  qemu-system-x86 qemu-utils mmdebstrap cloud-init genisoimage openssh-client
  # observability: the collectors the tests ship to (rsyslog's imtcp, graphite-carbon's
  # carbon-cache, prometheus and its promtool) and the scrape benchmark's peer (node_exporter)
  rsyslog graphite-carbon prometheus prometheus-node-exporter
  # measuring
  time
  # tests: the store's syscall order (fsync before a layer counts)
  strace
  # the Engine API's real clients (their daemon is never started: dockerd would fight provisioner
  # over the bridge and nftables) and a terminal for `docker run -it`; podman is the bench's peer
  docker.io docker-compose tmux
)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install: apt packages: ${missing[*]}" >&2
  # docker.io ships dockerd and starts it where systemd runs: masked first, so it never does
  if [ -d /run/systemd/system ] && [[ " ${missing[*]} " == *" docker.io "* ]]; then
    $SUDO systemctl mask docker.service docker.socket >/dev/null
  fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian's docker-registry package starts a system registry on :5000 where an init system
# runs; tests start their own on loopback, so a running system one is harmless.

for dir in native native/shim; do
  if [ -f "$dir/Makefile" ]; then
    echo "install: building $dir" >&2
    make -s -C "$dir"
  fi
done

PY=${PYTHON:-python3}
echo "install: pip install -e .[test] with $($PY --version)" >&2
$PY -m pip install -q --disable-pip-version-check -e ".[test]"
echo "install: done; try: provision doctor" >&2
