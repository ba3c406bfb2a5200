"""The one action most steps share: a whole file with the given content, mode and owner."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...fsutil import atomic_write


@dataclass(frozen=True)
class WriteFile:
    path: str
    content: str
    mode: int = 0o644
    uid: int | None = None
    gid: int | None = None

    def describe(self) -> str:
        return f"write {self.path} ({oct(self.mode)[2:]})"


def needs_write(path: Path, content: str, mode: int = 0o644, uid: int | None = None,
                gid: int | None = None) -> bool:
    """True unless `path` already holds `content` with `mode` (and owner, when given)."""
    try:
        st = path.stat()
        same = path.read_text() == content
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return True
    return not (same and (st.st_mode & 0o7777) == mode and (uid is None or st.st_uid == uid)
                and (gid is None or st.st_gid == gid))


def plan_file(path: Path, content: str, mode: int = 0o644, uid: int | None = None,
              gid: int | None = None) -> WriteFile | None:
    return WriteFile(str(path), content, mode, uid, gid) if needs_write(path, content, mode, uid, gid) else None


def write(a: WriteFile) -> None:
    atomic_write(a.path, a.content, mode=a.mode)
    if a.uid is not None or a.gid is not None:
        os.chown(a.path, -1 if a.uid is None else a.uid, -1 if a.gid is None else a.gid)
