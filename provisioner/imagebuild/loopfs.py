"""A throwaway loop-backed btrfs filesystem (for tests, benchmarks and trying the store out).

Only ever touches the loop device it attached itself, backed by a file under `workdir`.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..errors import CommandError


@contextlib.contextmanager
def loop_btrfs(workdir: Path, runner, size: str = "1G"):
    """Yield the mountpoint of a fresh btrfs on a loop device; unmount and detach afterwards."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    backing, mnt = workdir / "btrfs.img", workdir / "mnt"
    runner.run(["truncate", "-s", size, str(backing)])
    dev = runner.run(["losetup", "-f", "--show", str(backing)]).stdout.strip()
    mounted = False
    try:
        runner.run(["mkfs.btrfs", "-q", "-f", dev])
        mnt.mkdir(exist_ok=True)
        runner.run(["mount", "-t", "btrfs", dev, str(mnt)])
        mounted = True
        yield mnt
    finally:
        if mounted:
            try:
                runner.run(["umount", str(mnt)])
            except CommandError:
                runner.run(["umount", "-l", str(mnt)], check=False)
        runner.run(["losetup", "-d", dev], check=False)
        with contextlib.suppress(OSError):
            os.unlink(backing)
