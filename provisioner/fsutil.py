"""Small filesystem helpers: atomic writes (temp file in the same directory, fsync, rename),
private state directories, syncing a whole filesystem or a directory entry.

Private by default: a new file is 0600 unless the caller names a mode (container records and
bundles hold the containers' secrets); state directories are 0700, or 0710 as Docker makes its
containers directory (CVE-2021-41091: what images bring, setuid binaries and device nodes, must
not be reachable by other local accounts through the store)."""
from __future__ import annotations

import ctypes
import fcntl
import os
import stat
import tempfile
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)


_O_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_dir_nofollow(name: str | os.PathLike, dir_fd: int | None = None) -> int:
    """An fd of directory `name` (relative to `dir_fd`), never through a symlink (OSError:
    ELOOP for a symlink, ENOTDIR for anything else): what root opens in a directory a user owns."""
    return os.open(name, _O_NOFOLLOW_DIR, dir_fd=dir_fd)


def read_nofollow(name: str, dir_fd: int | None = None) -> tuple[os.stat_result, bytes] | None:
    """(stat, content) of regular file `name`, never through a symlink; None when it is missing,
    a symlink or not a regular file (O_NONBLOCK: a FIFO swapped in cannot hang the reader)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return st, b"".join(chunks)
    finally:
        os.close(fd)


def write_at(dir_fd: int, name: str, data: str | bytes, mode: int, uid: int = -1, gid: int = -1) -> None:
    """`name` in the directory `dir_fd` replaced by `data` atomically, with mode and owner set on
    the new file's fd before it takes the name: no path is followed, so a user who owns the
    directory and swaps its entries for symlinks meanwhile gets root to touch nothing else."""
    if isinstance(data, str):
        data = data.encode()
    tmp = f".{name}.{os.urandom(6).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if uid != -1 or gid != -1:
                os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    os.fsync(dir_fd)


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


def pidfile_holder(pid_file: Path) -> int | None:
    """The pid written in `pid_file` by the process holding its flock (a daemon's pid file);
    None when no process holds it."""
    try:
        fd = os.open(pid_file, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None   # nobody holds it
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else None
    finally:
        os.close(fd)
