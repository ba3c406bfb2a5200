"""Write layer tars from a list of entries (deterministic: fixed mtimes, PAX format).

    tar_bytes([D("etc"), F("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"), L("bin/sh", "busybox"),
               H("bin/ls", "bin/busybox"), WH("old"), OPQ("var/cache")])
"""
from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field

DEFAULT_MTIME = 1_700_000_000


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str = "file"  # file | dir | symlink | hardlink | char | block | fifo
    data: bytes = b""
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    linkname: str = ""
    major: int = 0
    minor: int = 0
    mtime: int = DEFAULT_MTIME
    xattrs: dict[str, bytes] = field(default_factory=dict)
    uname: str = ""
    gname: str = ""


_TYPES = {
    "file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE,
}
_DEFAULT_MODE = {"file": 0o644, "dir": 0o755, "symlink": 0o777, "hardlink": 0o644, "char": 0o666,
                 "block": 0o660, "fifo": 0o644}


def F(name: str, data: bytes | str = b"", mode: int = 0o644, **kw) -> Entry:
    return Entry(name, "file", data.encode() if isinstance(data, str) else data, mode, **kw)


def D(name: str, mode: int = 0o755, **kw) -> Entry:
    return Entry(name, "dir", mode=mode, **kw)


def L(name: str, target: str, **kw) -> Entry:
    return Entry(name, "symlink", linkname=target, **kw)


def H(name: str, target: str, **kw) -> Entry:
    return Entry(name, "hardlink", linkname=target, **kw)


def C(name: str, major: int, minor: int, mode: int = 0o666, **kw) -> Entry:
    return Entry(name, "char", mode=mode, major=major, minor=minor, **kw)


def B(name: str, major: int, minor: int, mode: int = 0o660, **kw) -> Entry:
    return Entry(name, "block", mode=mode, major=major, minor=minor, **kw)


def FIFO(name: str, mode: int = 0o644, **kw) -> Entry:
    return Entry(name, "fifo", mode=mode, **kw)


def WH(path: str) -> Entry:
    """A whiteout: deletes `path` from lower layers."""
    head, _, leaf = path.rstrip("/").rpartition("/")
    return F(f"{head}/.wh.{leaf}" if head else f".wh.{leaf}")


def OPQ(directory: str) -> Entry:
    """An opaque marker: hides every lower child of `directory`."""
    return F(f"{directory.rstrip('/')}/.wh..wh..opq")


def tarinfo(e: Entry) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(e.name)
    ti.type = _TYPES[e.kind]
    ti.mode = _DEFAULT_MODE[e.kind] if e.mode is None else e.mode
    ti.uid, ti.gid, ti.uname, ti.gname = e.uid, e.gid, e.uname, e.gname
    ti.mtime = e.mtime
    ti.linkname = e.linkname
    ti.devmajor, ti.devminor = e.major, e.minor
    ti.size = len(e.data) if e.kind == "file" else 0
    if e.xattrs:
        ti.pax_headers = {
            "SCHILY.xattr." + k: (v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v)
            for k, v in e.xattrs.items()
        }
    return ti


def write_tar(fileobj, entries: list[Entry]) -> None:
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            ti = tarinfo(e)
            tf.addfile(ti, io.BytesIO(e.data) if ti.size else None)


def tar_bytes(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    write_tar(buf, entries)
    return buf.getvalue()
