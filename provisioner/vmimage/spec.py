"""What goes into a base VM image (pure data) and the cache key derived from it."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

# CI builds the image once per machine; reruns reuse it (keyed by the package list).
DEFAULT_CACHE = Path("/var/tmp/provisioner-vm-cache")

# Bumped whenever the customisation steps in build.py change what ends up in the image,
# so an old cached image is not mistaken for a new one.
RECIPE_VERSION = 8

PACKAGES = (
    # boot: kernel (its initramfs is built by initramfs-tools in the chroot), init, device manager
    "linux-image-cloud-amd64", "initramfs-tools", "systemd", "systemd-sysv", "udev", "dbus",
    # first boot configuration and access
    "cloud-init", "openssh-server", "sudo", "ca-certificates", "netbase",
    # what the on-host agent uses
    "btrfs-progs", "e2fsprogs", "nvme-cli", "iproute2", "nftables", "util-linux", "procps",
    "python3", "python3-venv", "python3-pip",
    # what the boot hook's steps configure: time sync and log rotation
    "systemd-timesyncd", "logrotate",
)


def default_cache_dir() -> Path:
    return Path(os.environ.get("PROVISION_VM_CACHE", str(DEFAULT_CACHE)))


@dataclass(frozen=True)
class ImageSpec:
    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    variant: str = "minbase"
    packages: tuple[str, ...] = PACKAGES
    extra_packages: tuple[str, ...] = field(default_factory=tuple)
    size_mb: int = 0  # 0: size the filesystem from the tree (+ headroom)
    # Bake the host agent's Python dependencies into /opt/provisioner/venv, so a deploy sends and
    # installs only the provisioner wheel itself (the wheels stay in /opt/provisioner/wheels, root's alone).
    agent: bool = True

    def agent_requirements(self) -> list[str]:
        if not self.agent:
            return []
        from ..remote.bundle import runtime_requirements

        return runtime_requirements()

    def all_packages(self) -> list[str]:
        return sorted(set(self.packages) | set(self.extra_packages))

    def key(self) -> str:
        """Stable cache key: same suite, mirror, variant, packages and recipe → same image."""
        data = {"recipe": RECIPE_VERSION, "suite": self.suite, "mirror": self.mirror,
                "variant": self.variant, "packages": self.all_packages(), "size_mb": self.size_mb,
                **({"agent": self.agent_requirements()} if self.agent else {})}
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        return f"{self.suite}-{digest[:16]}"

    def to_json(self) -> dict:
        d = asdict(self)
        d["packages"] = self.all_packages()
        d.pop("extra_packages")
        return d
