"""Facts about this machine that several layers need (read-only: /proc, /sys, /dev/kvm).

The store checks its root is on btrfs, the local cloud whether KVM can run guests, the runtime
and `provision doctor` which cgroup layout the host has. Reading them lives here, below all of
those, so none of them reaches up into the doctor's report.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path


def cgroup_mode(mountinfo: str | None = None) -> str:
    """'v2' (unified), 'hybrid' (v1 controllers + a cgroup2 mount), 'v1' (legacy) or 'none'."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    v1 = v2_root = v2_any = False
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line:
            continue
        mountpoint = fields[4]
        fstype = line.split(" - ", 1)[1].split()[0]
        if fstype == "cgroup2":
            v2_any = True
            v2_root = v2_root or mountpoint == "/sys/fs/cgroup"
        elif fstype == "cgroup":
            v1 = True
    if v2_root and not v1:
        return "v2"
    if v1 and v2_any:
        return "hybrid"
    if v1:
        return "v1"
    return "v2" if v2_any else "none"


def filesystems() -> set[str]:
    try:
        return {line.split()[-1] for line in Path("/proc/filesystems").read_text().splitlines() if line.strip()}
    except OSError:
        return set()


def fstype_of(path: Path) -> str | None:
    """The filesystem type of the mount holding `path` (longest mountpoint prefix wins)."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    best, best_type = "", None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        mnt = left.split()[4].replace("\\040", " ")
        if (str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, best_type = mnt, right.split()[0]
    return best_type


def kvm_usable() -> tuple[bool, str]:
    """True when /dev/kvm opens read-write and answers KVM_GET_API_VERSION."""
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm absent"
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return False, f"/dev/kvm: {exc.strerror}"
    try:
        version = fcntl.ioctl(fd, 0xAE00)  # KVM_GET_API_VERSION
        return version == 12, f"/dev/kvm API {version}"
    except OSError as exc:
        return False, f"/dev/kvm ioctl: {exc.strerror}"
    finally:
        os.close(fd)
