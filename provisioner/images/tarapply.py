"""Apply one uncompressed layer tar stream onto a directory, safely.

Semantics follow the OCI image spec (layer.md): entries apply in order; a non-directory replaces
whatever is at its path; a directory over a directory merges attributes; `.wh.NAME` deletes NAME
from lower layers; `.wh..wh..opq` hides every lower child of its directory; whiteouts never remove
entries this same layer wrote. Directory modes, owners and mtimes are applied last.

Hardening: every path is resolved component by component from a directory fd of the layer root
with O_NOFOLLOW, so nothing can be written outside the root whatever the tar contains:
- absolute names are taken relative to the root (what GNU tar and umoci do);
- `..` components are refused (ImageError: a well-formed layer never needs them);
- a symlink met as a *parent* component is resolved inside the root (absolute targets and `..`
  clamp at the root, like umoci's securejoin), so `lib/x` still lands in `usr/lib/x` in a
  usrmerge image but never escapes;
- the last component is never followed (we replace or create it with *at() calls);
- a hardlink's target is resolved the same way and must be an existing non-directory.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass, field

from .tarsafety import Budget, LayerError, write_sparse

log = logging.getLogger(__name__)

WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"
_MAX_LINKS = 40
_FD_CACHE_MAX = 256
_CHUNK = 1 << 20
_XATTR_PAX = "SCHILY.xattr."

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_EXCL never follows a symlink at the last component (EEXIST), O_NOFOLLOW says so again
_O_NEWFILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class ApplyStats:
    entries: int = 0
    files: int = 0
    bytes: int = 0
    whiteouts: int = 0
    warnings: list[str] = field(default_factory=list)


def split_name(name: str) -> list[str]:
    """Tar member name -> path components relative to the root ('' and '.' dropped).

    Leading '/' is stripped (taken relative to the root). A '..' component is refused."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"layer entry {name!r} contains '..': refused")
    return parts


class TreeWriter:
    """Writes entries under `root_fd`, never outside it. One instance per layer application."""

    def __init__(self, root: str | os.PathLike, *, same_owner: bool | None = None, budget: Budget | None = None):
        self.root = os.fspath(root)
        self.budget = budget or Budget()
        self.root_fd = os.open(self.root, _O_DIR)
        self.same_owner = os.geteuid() == 0 if same_owner is None else same_owner
        self._fds: dict[tuple[str, ...], int] = {}
        # tar parent path -> real parent path; only a removal can invalidate it (see _remove)
        self._resolved: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.written: set[tuple[str, ...]] = set()  # paths (and their ancestors) this layer wrote
        self.dirs: list[tuple[tuple[str, ...], tarfile.TarInfo]] = []
        # (atime, mtime) in ns of each directory before this layer first changed its entries: a
        # directory the tar does not list keeps its times (reproducible trees, as umoci does)
        self._times: dict[tuple[str, ...], tuple[int, int]] = {}
        self.stats = ApplyStats()
        self._warned: set[str] = set()

    # ---- fds ---------------------------------------------------------------------------------
    def close(self) -> None:
        self._drop_fds()
        os.close(self.root_fd)

    def _drop_fds(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _dir_fd(self, parts: tuple[str, ...]) -> int:
        """An fd for the real directory `parts` (already resolved: no symlinks in it)."""
        if not parts:
            return self.root_fd
        fd = self._fds.get(parts)
        if fd is not None:
            return fd
        parent = self._dir_fd(parts[:-1])
        fd = os.open(parts[-1], _O_DIR, dir_fd=parent)
        self._fds[parts] = fd
        return fd

    def _trim_fds(self) -> None:
        """Bound the fd cache. Only called between entries: fds handed out while an entry is
        being applied must stay open until it is done."""
        if len(self._fds) >= _FD_CACHE_MAX:
            self._drop_fds()

    def warn(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", msg)
            self.stats.warnings.append(msg)

    # ---- resolution --------------------------------------------------------------------------
    def resolve_parent(self, parts: list[str], *, create: bool, name: str) -> tuple[tuple[str, ...], int]:
        """Resolve all but the last component inside the root; return (real parent path, fd)."""
        raw = tuple(parts[:-1])
        hit = self._resolved.get(raw)
        if hit is not None:
            return hit, self._dir_fd(hit)
        todo = list(raw)
        done: list[str] = []
        links = 0
        while todo:
            comp = todo.pop(0)
            if comp == "..":  # only from symlink targets: clamp at the root
                if done:
                    done.pop()
                continue
            if comp in ("", "."):
                continue
            pfd = self._dir_fd(tuple(done))
            try:
                st = os.lstat(comp, dir_fd=pfd)
            except FileNotFoundError:
                if not create:
                    raise
                self._keep_times(tuple(done), pfd)
                os.mkdir(comp, 0o755, dir_fd=pfd)
                os.chmod(comp, 0o755, dir_fd=pfd)  # an implicit parent: 0755 whatever the umask
                done.append(comp)
                continue
            if stat.S_ISDIR(st.st_mode):
                done.append(comp)
            elif stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    raise LayerError(f"layer entry {name!r}: too many levels of symbolic links")
                target = os.readlink(comp, dir_fd=pfd)
                if target.startswith("/"):
                    done = []
                todo = target.split("/") + todo
            else:
                raise LayerError(f"layer entry {name!r}: parent {'/'.join(done + [comp])!r} is not a directory")
        key = tuple(done)
        fd = self._dir_fd(key)
        if len(self._resolved) > 65536:
            self._resolved.clear()
        self._resolved[raw] = key
        return key, fd

    # ---- removal -----------------------------------------------------------------------------
    def _remove(self, pfd: int, leaf: str, st: os.stat_result, path: tuple[str, ...]) -> None:
        self._resolved.clear()
        if stat.S_ISDIR(st.st_mode):
            # shutil.rmtree with dir_fd walks by fds and never follows symlinks
            shutil.rmtree(leaf, dir_fd=pfd)
            self._drop_fds()  # cached fds may point into the removed tree (pfd is now closed too)
        else:
            os.unlink(leaf, dir_fd=pfd)

    def _keep_times(self, path: tuple[str, ...], fd: int) -> None:
        if path not in self._times:
            st = os.fstat(fd)
            self._times[path] = (st.st_atime_ns, st.st_mtime_ns)

    def _mark_written(self, path: tuple[str, ...]) -> None:
        for i in range(len(path), -1, -1):
            p = path[:i]
            if p in self.written:
                break
            self.written.add(p)

    # ---- entries -----------------------------------------------------------------------------
    def apply(self, ti: tarfile.TarInfo, tf: tarfile.TarFile) -> None:
        self.stats.entries += 1
        self.budget.take(ti)
        self._trim_fds()
        parts = split_name(ti.name)
        if not parts:  # the root directory itself
            if ti.isdir():
                self.dirs.append(((), ti))
            return
        leaf = parts[-1]
        if leaf.startswith(WH_PREFIX):
            self._whiteout(parts, ti.name)
            return
        ppath, pfd = self.resolve_parent(parts, create=True, name=ti.name)
        self._keep_times(ppath, pfd)
        path = ppath + (leaf,)
        if ti.isreg():
            # the common case, a new file: O_EXCL creation doubles as the existence check
            try:
                fd = os.open(leaf, _O_NEWFILE, 0o600, dir_fd=pfd)
            except FileExistsError:
                pass  # something is there: replaced below
            else:
                self._mark_written(path)
                self._file(pfd, leaf, ti, tf, fd)
                return
        try:
            st = os.lstat(leaf, dir_fd=pfd)
        except FileNotFoundError:
            st = None
        if st is not None:
            if ti.isdir() and stat.S_ISDIR(st.st_mode):
                self._mark_written(path)
                self.dirs.append((path, ti))
                return
            if ti.islnk() and self._same_as_link_target(ti, st):
                self._mark_written(path)
                return
            self._remove(pfd, leaf, st, path)
            pfd = self._dir_fd(ppath)
        self._mark_written(path)
        if ti.isreg():
            self._file(pfd, leaf, ti, tf)
        elif ti.isdir():
            os.mkdir(leaf, 0o700, dir_fd=pfd)
            self.dirs.append((path, ti))
        elif ti.issym():
            os.symlink(ti.linkname, leaf, dir_fd=pfd)
            self._meta(pfd, leaf, ti, None, is_link=True)
        elif ti.islnk():
            self._hardlink(pfd, leaf, ti)
        elif ti.ischr() or ti.isblk() or ti.isfifo():
            self._node(pfd, leaf, ti)
        else:
            self.warn(f"type{ti.type!r}", f"layer entry {ti.name!r}: unsupported tar type {ti.type!r}, skipped")

    def _same_as_link_target(self, ti: tarfile.TarInfo, st: os.stat_result) -> bool:
        try:
            tparts = split_name(ti.linkname)
            _, tfd = self.resolve_parent(tparts, create=False, name=ti.name)
            tst = os.lstat(tparts[-1], dir_fd=tfd)
        except (OSError, IndexError):
            return False
        return (tst.st_dev, tst.st_ino) == (st.st_dev, st.st_ino)

    def _file(self, pfd: int, leaf: str, ti: tarfile.TarInfo, tf: tarfile.TarFile, fd: int | None = None) -> None:
        if fd is None:
            fd = os.open(leaf, _O_NEWFILE, 0o600, dir_fd=pfd)
        try:
            if ti.issparse():
                write_sparse(fd, ti, tf.fileobj, self._copy)
            elif ti.size:
                self._copy(tf.fileobj, fd, ti.size, ti.name)
            self.stats.files += 1
            self.stats.bytes += ti.size
            self._meta(pfd, leaf, ti, fd)
        finally:
            os.close(fd)

    @staticmethod
    def _copy(src, fd: int, size: int, name: str) -> None:
        remaining = size
        while remaining:
            chunk = src.read(min(remaining, _CHUNK))
            if not chunk:
                raise LayerError(f"layer truncated inside {name!r}")
            view = memoryview(chunk)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            remaining -= len(chunk)

    def _hardlink(self, pfd: int, leaf: str, ti: tarfile.TarInfo) -> None:
        tparts = split_name(ti.linkname)
        if not tparts:
            raise LayerError(f"layer entry {ti.name!r}: hardlink to the root directory refused")
        try:
            _, tfd = self.resolve_parent(tparts, create=False, name=ti.name)
            tst = os.lstat(tparts[-1], dir_fd=tfd)
        except FileNotFoundError:
            raise LayerError(f"layer entry {ti.name!r}: hardlink target {ti.linkname!r} does not exist in the layer root")
        if stat.S_ISDIR(tst.st_mode):
            raise LayerError(f"layer entry {ti.name!r}: hardlink to directory {ti.linkname!r} refused")
        os.link(tparts[-1], leaf, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)

    def _node(self, pfd: int, leaf: str, ti: tarfile.TarInfo) -> None:
        kind = stat.S_IFCHR if ti.ischr() else stat.S_IFBLK if ti.isblk() else stat.S_IFIFO
        dev = os.makedev(ti.devmajor, ti.devminor) if kind != stat.S_IFIFO else 0
        try:
            os.mknod(leaf, kind | 0o600, dev, dir_fd=pfd)
        except PermissionError:
            self.warn("mknod", f"layer entry {ti.name!r}: device nodes not permitted here (user namespace or not root): skipped")
            return
        self._meta(pfd, leaf, ti, None)

    # ---- metadata ----------------------------------------------------------------------------
    def _meta(self, pfd: int, leaf: str, ti: tarfile.TarInfo, fd: int | None, *, is_link: bool = False) -> None:
        """Owner, then mode (chown clears setuid), xattrs, mtime."""
        if self.same_owner:
            try:
                if fd is not None:
                    os.fchown(fd, ti.uid, ti.gid)
                else:
                    os.chown(leaf, ti.uid, ti.gid, dir_fd=pfd, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EINVAL):
                    raise
                self.warn("chown", f"cannot set owner {ti.uid}:{ti.gid} on {ti.name!r} ({exc.strerror}): owners not kept")
        if not is_link:
            if fd is not None:
                os.fchmod(fd, ti.mode & 0o7777)
            else:
                os.chmod(leaf, ti.mode & 0o7777, dir_fd=pfd)
        if ti.pax_headers:
            self._xattrs(pfd, leaf, ti, fd)
        ns = int(ti.mtime * 1_000_000_000)
        if fd is not None:
            os.utime(fd, ns=(ns, ns))
        else:
            os.utime(leaf, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)

    def _xattrs(self, pfd: int, leaf: str, ti: tarfile.TarInfo, fd: int | None) -> None:
        for key, value in ti.pax_headers.items():
            if not key.startswith(_XATTR_PAX):
                continue
            attr = key[len(_XATTR_PAX):]
            if "\x00" in attr:
                raise LayerError(f"layer entry {ti.name!r}: xattr name {attr.split(chr(0))[0]!r}… holds a NUL byte")
            data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
            # /proc/self/fd/PARENT/leaf: the parent is pinned by its fd, the leaf is not followed
            try:
                if fd is not None:
                    os.setxattr(fd, attr, data)
                else:
                    os.setxattr(f"/proc/self/fd/{pfd}/{leaf}", attr, data, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EACCES, errno.EINVAL):
                    raise
                self.warn(f"xattr:{attr.split('.')[0]}", f"cannot set xattr {attr} on {ti.name!r} ({exc.strerror}): skipped")

    # ---- whiteouts ---------------------------------------------------------------------------
    def _whiteout(self, parts: list[str], name: str) -> None:
        self.stats.whiteouts += 1
        leaf = parts[-1]
        target = leaf[len(WH_PREFIX):]
        if leaf != WH_OPAQUE and (not target or target in (".", "..")):
            raise LayerError(f"layer entry {name!r}: malformed whiteout")
        try:
            ppath, pfd = self.resolve_parent(parts, create=False, name=name)
        except FileNotFoundError:
            return  # nothing below to hide
        self._keep_times(ppath, pfd)
        if leaf == WH_OPAQUE:
            self._opaque(ppath, pfd)
            return
        path = ppath + (target,)
        if path in self.written:
            return  # whiteouts never remove entries written by the same layer
        try:
            st = os.lstat(target, dir_fd=pfd)
        except FileNotFoundError:
            return
        self._remove(pfd, target, st, path)

    def _opaque(self, ppath: tuple[str, ...], pfd: int | None = None) -> None:
        """Remove every child of `ppath` this layer did not write; recurse into same-layer dirs
        (their lower children are hidden too: the whole lower directory is invisible)."""
        self._mark_written(ppath)
        self._keep_times(ppath, self._dir_fd(ppath))
        for child in os.listdir(self._dir_fd(ppath)):
            path = ppath + (child,)
            pfd = self._dir_fd(ppath)
            st = os.lstat(child, dir_fd=pfd)
            if path in self.written:
                if stat.S_ISDIR(st.st_mode):
                    self._opaque(path)
                continue
            self._remove(pfd, child, st, path)

    # ---- finish ------------------------------------------------------------------------------
    def finish(self) -> None:
        """Directory attributes last (deepest first), so creating children does not undo them;
        directories the tar does not list get back the times they had before this layer."""
        self._drop_fds()
        listed = {path for path, _ in self.dirs}
        for path, ti in sorted(self.dirs, key=lambda d: len(d[0]), reverse=True):
            fd = self._open_dir(path)
            if fd is None:
                continue  # removed or replaced later in the same layer
            try:
                self._meta(-1, "", ti, fd)
            finally:
                os.close(fd)
        for path, times in self._times.items():
            if path in listed:
                continue
            fd = self._open_dir(path)
            if fd is not None:
                try:
                    os.utime(fd, ns=times)
                finally:
                    os.close(fd)

    def _open_dir(self, path: tuple[str, ...]) -> int | None:
        """A new fd for directory `path` (resolved from the root), or None if it is gone."""
        self._trim_fds()
        if not path:
            return os.dup(self.root_fd)
        try:
            _, pfd = self.resolve_parent(list(path), create=False, name="/".join(path))
            return os.open(path[-1], _O_DIR, dir_fd=pfd)
        except (OSError, LayerError):  # gone, or no longer a directory (O_NOFOLLOW: not a symlink)
            return None
