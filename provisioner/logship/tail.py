"""Following log files the way the shim writes and rotates them (facts: reading only).

A source is one live file (`<root>/containers/<id>/<id>.log`, or one of the agent's own logs) and
its rotated predecessors (`.1`, `.2`, ... oldest last), as provision-shim rotates them: rename
the chain up by one, then a fresh file under the live name. A cursor — the inode of the file
being read and the offset after its last complete line — says how far a source was read, so:

- nothing is read twice: a rotated file keeps its inode, and reading resumes in it under its new
  name, then moves on to the newer files in order;
- nothing is missed while the reader keeps up (the shim keeps `max_files` files of `max_size`:
  30 MiB per container by default, minutes of even a chatty container's output); a cursor whose
  file has already fallen off the end is reported (`lost`) and reading restarts at the oldest;
- the containers are never slowed: they write to the shim's files as always; this only reads
  them, a bounded amount per source per round.

A source whose file was truncated in place (logrotate's copytruncate of the agent's own logs)
starts again at 0.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MAX_ROUND = 1 << 20   # bytes read per source per round: memory stays small, sources take turns


HEAD = 64   # bytes of a file's start kept in its cursor: its first record's nanosecond time makes it unique


@dataclass(frozen=True)
class Cursor:
    inode: int
    offset: int
    head: str = ""            # the file's first bytes (hex): an inode number alone can be reused

    def to_json(self) -> list:
        return [self.inode, self.offset, self.head]

    @classmethod
    def from_json(cls, v) -> "Cursor | None":
        try:
            inode, offset, head = v
            return cls(int(inode), int(offset), str(head))
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Chunk:
    lines: list[bytes]        # complete lines, without their "\n", oldest first
    cursor: Cursor | None     # where the next round starts (None: nothing to read yet)
    lost: bool = False        # the cursor's file was gone: some lines may have been missed


def _head(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(HEAD).hex()
    except OSError:
        return ""


def _same(path: Path, cursor: Cursor) -> bool:
    """Is `path` (which has the cursor's inode number) the very file the cursor was in?"""
    head = _head(path)
    n = min(len(head), len(cursor.head))
    return head[:n] == cursor.head[:n]


def chain(base: Path) -> list[tuple[Path, int, int]]:
    """(path, inode, size) of the source's files, oldest first: base.N ... base.1, base."""
    rotated = []
    try:
        names = os.listdir(base.parent)
    except FileNotFoundError:
        return []
    prefix = base.name + "."
    for n in names:
        if n.startswith(prefix) and n[len(prefix):].isdigit():
            rotated.append((int(n[len(prefix):]), base.parent / n))
    out = []
    for _, p in sorted(rotated, reverse=True) + [(0, base)]:
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        out.append((p, st.st_ino, st.st_size))
    return out


def read_new(base: Path, cursor: Cursor | None, max_bytes: int = MAX_ROUND) -> Chunk:
    """The complete lines written since `cursor` (all of them when it is None), across rotations."""
    try:
        st = base.stat()
        if cursor is not None and st.st_ino == cursor.inode and st.st_size == cursor.offset:
            return Chunk([], cursor)   # the common case: nothing new, one stat
    except FileNotFoundError:
        pass
    files = chain(base)
    if not files:
        return Chunk([], cursor)
    inodes = [ino for _, ino, _ in files]
    lost = False
    if cursor is not None and cursor.inode in inodes and _same(files[inodes.index(cursor.inode)][0], cursor):
        start, offset = inodes.index(cursor.inode), cursor.offset
        if files[start][2] < offset:       # truncated in place
            offset = 0
    else:
        lost = cursor is not None
        start, offset = 0, 0
    lines: list[bytes] = []
    budget, new_cursor = max_bytes, cursor
    for i in range(start, len(files)):
        path, ino, _ = files[i]
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_ino != ino:
                    break   # rotated between the listing and the open: the next round sees it
                f.seek(offset)
                data = f.read(budget)
        except FileNotFoundError:
            break
        budget -= len(data)
        live = i == len(files) - 1
        if not live and offset + len(data) >= st.st_size:
            # a rotated file is complete: all of it is lines (the last one even without "\n")
            whole = data[:-1] if data.endswith(b"\n") else data
            lines += whole.split(b"\n") if data else []
            new_cursor, offset = Cursor(files[i + 1][1], 0, _head(files[i + 1][0])), 0
            if budget > 0:
                continue
            break
        cut = data.rfind(b"\n") + 1
        lines += data[:cut - 1].split(b"\n") if cut else []
        head = cursor.head if cursor is not None and cursor.inode == ino and len(cursor.head) == 2 * HEAD \
            else _head(path)
        new_cursor = Cursor(ino, offset + cut, head)
        break
    return Chunk(lines, new_cursor, lost)
