"""btrfs subvolume operations for the layer store, all through the Runner.

Each call costs a process spawn (~2-5 ms); a pull makes four per layer, which is noise next to
extracting the layer, so the ioctls are not worth their complexity here.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import CommandError, ImageError

BTRFS_FIRST_FREE_OBJECTID = 256  # the inode number of every subvolume's root directory


def create(runner, path: Path) -> None:
    _run(runner, ["btrfs", "subvolume", "create", str(path)], path)


def snapshot(runner, src: Path, dst: Path, *, readonly: bool = False) -> None:
    argv = ["btrfs", "subvolume", "snapshot"] + (["-r"] if readonly else []) + [str(src), str(dst)]
    _run(runner, argv, dst)


def delete(runner, path: Path) -> None:
    """Delete a subvolume (read-only ones too; nested subvolumes are not expected)."""
    _run(runner, ["btrfs", "subvolume", "delete", str(path)], path)


def set_readonly(runner, path: Path, readonly: bool = True) -> None:
    _run(runner, ["btrfs", "property", "set", "-ts", str(path), "ro", "true" if readonly else "false"], path)


def is_subvolume(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return st.st_ino == BTRFS_FIRST_FREE_OBJECTID and os.path.isdir(path) and not os.path.islink(path)


def _run(runner, argv: list[str], path: Path) -> None:
    try:
        runner.run(argv)
    except CommandError as exc:
        raise ImageError(f"btrfs {argv[1]} {argv[2]} failed for {path}: {exc.stderr.strip() or exc}") from exc
