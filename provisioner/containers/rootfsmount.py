"""A container's rootfs on a store mounted nosuid,nodev (as the disks layer mounts it): setuid
binaries inside the container still work, as under Docker.

The runtime bind-mounts the rootfs for the container, and a bind mount keeps the flags of the
mount it comes from: from a nosuid store, `sudo`, `ping` or `su` in an image would fail. So when
the rootfs sits on a nosuid mount, it first becomes a bind mount of its own with suid (nodev kept:
device nodes an image brings stay inert; the container's /dev is the runtime's own). It lives in
<root>/containers/<id>/ (0700): no other account reaches it. Made again at each start (a reboot
drops it), removed before the subvolume is.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import CommandError, ContainerError


def is_mountpoint(path: Path) -> bool:
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4].encode().decode("unicode_escape") == path for line in f)


def ensure(runner, rootfs: Path) -> bool:
    """Give `rootfs` a suid (and nodev) mount of its own when its filesystem is mounted nosuid;
    True when it did."""
    if not os.statvfs(rootfs).f_flag & os.ST_NOSUID:
        return False
    try:
        runner.run(["mount", "--bind", str(rootfs), str(rootfs)])
        runner.run(["mount", "-o", "remount,bind,suid,nodev", str(rootfs)])
    except CommandError as exc:
        release(runner, rootfs)
        raise ContainerError(f"cannot mount the rootfs {rootfs} with setuid allowed: {exc}") from exc
    return True


def release(runner, rootfs: Path) -> None:
    """Unmount what ensure() mounted on `rootfs` (nothing when there is none)."""
    while rootfs.is_dir() and is_mountpoint(rootfs):
        runner.run(["umount", str(rootfs)])
