"""Describe a directory tree for comparisons (differential tests against umoci, benchmarks).

`describe(root)` maps each relative path to its type, mode bits, owner, size, content hash, link
target, device numbers and xattrs; hardlinks are recorded as groups of paths sharing an inode.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def _xattrs(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for n in sorted(names):
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False).hex()
        except OSError:
            continue
    return out


def describe(root: Path, *, mtimes: bool = True, dir_mtimes: bool = False, recent: float | None = None,
             skip_xattr_prefixes: tuple[str, ...] = ()) -> dict:
    """`recent`: mtimes at or after this time are recorded as "recent" (directories a tool created
    implicitly get the time of extraction, which no two runs share)."""
    root = Path(root)
    entries: dict[str, dict] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            mode = st.st_mode
            d: dict = {"mode": oct(stat.S_IMODE(mode)), "uid": st.st_uid, "gid": st.st_gid}
            if stat.S_ISREG(mode):
                h = hashlib.sha256()
                with open(full, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                d.update(type="file", size=st.st_size, sha256=h.hexdigest())
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
            elif stat.S_ISDIR(mode):
                d["type"] = "dir"
            elif stat.S_ISLNK(mode):
                d.update(type="symlink", target=os.readlink(full))
                del d["mode"]  # symlink modes are meaningless on Linux
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                d.update(type="char" if stat.S_ISCHR(mode) else "block",
                         rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)))
            elif stat.S_ISFIFO(mode):
                d["type"] = "fifo"
            else:
                d["type"] = "other"
            if mtimes and (d["type"] != "dir" or dir_mtimes):
                d["mtime"] = "recent" if recent is not None and st.st_mtime >= recent else int(st.st_mtime)
            x = {k: v for k, v in _xattrs(full).items() if not k.startswith(skip_xattr_prefixes)}
            if x:
                d["xattrs"] = x
            entries[rel] = d
    links = sorted(sorted(paths) for paths in inodes.values() if len(paths) > 1)
    return {"entries": entries, "hardlinks": links}


def diff(a: dict, b: dict, limit: int = 20) -> list[str]:
    """Human-readable differences between two describe() results (empty when equal)."""
    out = []
    ea, eb = a["entries"], b["entries"]
    for path in sorted(set(ea) | set(eb)):
        if path not in eb:
            out.append(f"only in first: {path} {ea[path]}")
        elif path not in ea:
            out.append(f"only in second: {path} {eb[path]}")
        elif ea[path] != eb[path]:
            keys = sorted(k for k in set(ea[path]) | set(eb[path]) if ea[path].get(k) != eb[path].get(k))
            out.append(f"{path}: " + ", ".join(f"{k}: {ea[path].get(k)!r} != {eb[path].get(k)!r}" for k in keys))
    if a["hardlinks"] != b["hardlinks"]:
        out.append(f"hardlink groups differ: {a['hardlinks']} != {b['hardlinks']}")
    return out[:limit]
