"""Small filesystem helpers: atomic writes (temp file in the same directory, fsync, rename),
private state directories, syncing a whole filesystem or a directory entry.

Private by default: a new file is 0600 unless the caller names a mode (container records and
bundles hold the containers' secrets); state directories are 0700, or 0710 as Docker makes its
containers directory (CVE-2021-41091: what images bring, setuid binaries and device nodes, must
not be reachable by other local accounts through the store)."""
from __future__ import annotations

import ctypes
import os
import tempfile
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)


def private_dir(path: str | os.PathLike, mode: int = 0o700) -> Path:
    """`mkdir -p path`, then `mode` on it — also when it exists already (made by an older version,
    or under another umask): other accounts must not traverse it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if (os.lstat(path).st_mode & 0o7777) != mode:
        os.chmod(path, mode, follow_symlinks=False)
    return path


def syncfs(path: str | os.PathLike) -> None:
    """syncfs(2) on the filesystem holding `path`: its data and metadata are on disk when this
    returns (on btrfs: a transaction commit, after writing back every dirty file of it)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory: the entries just created or renamed in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: str | bytes, mode: int | None = None) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, never a mix. The
    mode is `mode`, else the replaced file's, else 0600 (callers say when others may read it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
