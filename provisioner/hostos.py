"""What differs between the host operating systems provisioner runs on, in one table.

The local cloud builds its VM images from these (Debian suite, packages), agent delivery picks the
dependency wheels for the host's Python and C library, and deploy knows which login user a cloud's
image of that OS has. Ubuntu LTS cloud images are the next rows to add.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class HostOs:
    name: str                    # as a stack names it: `local: {os: debian-13}`
    suite: str                   # the distribution's release name, for mmdebstrap
    python: str                  # its python3's major.minor
    glibc: str                   # its C library, "2.36": which manylinux wheels its Python can load
    users: dict[str, str]        # the login user of the cloud's image, by cloud
    packages: tuple[str, ...]    # what the local cloud's VM image installs


# What the on-host agent and the boot hook's steps use, on every Debian release we support.
_DEBIAN_PACKAGES = (
    # boot: kernel (its initramfs is built by initramfs-tools in the chroot), init, device manager
    "linux-image-cloud-amd64", "initramfs-tools", "systemd", "systemd-sysv", "udev", "dbus",
    # first boot configuration and access
    "cloud-init", "openssh-server", "sudo", "ca-certificates", "netbase",
    # what the on-host agent uses
    "btrfs-progs", "e2fsprogs", "nvme-cli", "iproute2", "nftables", "conntrack", "util-linux", "procps",
    "python3", "python3-venv", "python3-pip",
    # --init (compose init: true): tini-static, bind-mounted into the container as its PID 1
    "tini",
    # what the boot hook's steps configure: time sync and log rotation
    "systemd-timesyncd", "logrotate",
)

SYSTEMS = {
    "debian-12": HostOs("debian-12", "bookworm", "3.11", "2.36", {"aws": "admin", "gce": "provisioner",
                                                                 "local": "debian"}, _DEBIAN_PACKAGES),
    "debian-13": HostOs("debian-13", "trixie", "3.13", "2.41", {"aws": "admin", "gce": "provisioner",
                                                               "local": "debian"}, _DEBIAN_PACKAGES),
}
DEFAULT = "debian-12"


def host_os(name: str) -> HostOs:
    try:
        return SYSTEMS[name]
    except KeyError:
        raise ConfigError(f"unknown host OS {name!r} (known: {', '.join(sorted(SYSTEMS))})") from None


def by_suite(suite: str) -> HostOs:
    for system in SYSTEMS.values():
        if system.suite == suite:
            return system
    raise ConfigError(f"unknown Debian suite {suite!r} (known: {', '.join(s.suite for s in SYSTEMS.values())})")
