"""What goes into a base VM image (pure data) and the cache key derived from it."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import hostos
from ..remote.bundle import runtime_requirements

# CI builds the image once per machine; reruns reuse it (keyed by the package list).
DEFAULT_CACHE = Path("/var/tmp/provisioner-vm-cache")

# Bumped whenever the customisation steps in build.py change what ends up in the image,
# so an old cached image is not mistaken for a new one.
RECIPE_VERSION = 9


def default_cache_dir() -> Path:
    return Path(os.environ.get("PROVISION_VM_CACHE", str(DEFAULT_CACHE)))


@dataclass(frozen=True)
class ImageSpec:
    os: str = hostos.DEFAULT        # a row of the host OS table (provisioner/hostos.py)
    mirror: str = "http://deb.debian.org/debian"
    variant: str = "minbase"
    extra_packages: tuple[str, ...] = field(default_factory=tuple)
    size_mb: int = 0  # 0: size the filesystem from the tree (+ headroom)
    # Bake the host agent's Python dependencies into /opt/provisioner/venv, so a deploy sends and
    # installs only the provisioner wheel itself (the wheels stay in /opt/provisioner/wheels, root's alone).
    agent: bool = True

    @property
    def system(self) -> hostos.HostOs:
        return hostos.host_os(self.os)

    @property
    def suite(self) -> str:
        return self.system.suite

    def agent_requirements(self) -> list[str]:
        return runtime_requirements() if self.agent else []

    def all_packages(self) -> list[str]:
        return sorted(set(self.system.packages) | set(self.extra_packages))

    def key(self) -> str:
        """Stable cache key: same OS, mirror, variant, packages and recipe → same image."""
        data = {"recipe": RECIPE_VERSION, "suite": self.suite, "mirror": self.mirror,
                "variant": self.variant, "packages": self.all_packages(), "size_mb": self.size_mb,
                **({"agent": self.agent_requirements()} if self.agent else {})}
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        return f"{self.suite}-{digest[:16]}"

    def to_json(self) -> dict:
        d = asdict(self)
        d["suite"] = self.suite
        d["packages"] = self.all_packages()
        d.pop("extra_packages")
        return d
