"""The bounded on-disk buffer between the log reader and the sender: framed messages in order.

Layout under `<root>/logship/spool/` (directory 0700, files 0600: log lines can hold anything):
segment files `<seq>.seg` holding whole frames back to back (a new segment starts at
SEGMENT_BYTES, only between frames), and `head`, the position of the first frame not yet
delivered ("<seq> <offset>"), replaced atomically on every commit. What is buffered is every
byte from the head to the end of the last segment; appending a frame that would take that past
`limit` drops the frame instead and counts it (the newest lines are the ones dropped: what the
collector gets stays in order, with a gap the drop counter and a warning line account for).

A segment is deleted once the head has passed it. Nothing is ever rewritten in place, so a crash
leaves the buffer as it was up to the last append, and at worst the head one commit behind (those
frames go out again: at least once, never lost).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from ..fsutil import atomic_write

SEGMENT_BYTES = 1 << 20


class Spool:
    def __init__(self, directory: str | os.PathLike, limit: int):
        self.dir = Path(directory)
        self.limit = limit
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.lock = threading.Lock()
        self.dropped = 0
        self.appended = 0
        self.sent_bytes = 0
        segs = self._segments()
        self.head_seq, self.head_off = self._read_head(segs)
        if self.head_seq not in segs:   # its segment is gone (or none yet): start from the oldest there is
            self.head_seq, self.head_off = (min((s for s in segs if s > self.head_seq), default=self.head_seq), 0)
        for seq in [s for s in segs if s < self.head_seq]:
            self._path(seq).unlink(missing_ok=True)
        segs = [s for s in segs if s >= self.head_seq] or [self.head_seq]
        self.tail_seq = segs[-1]
        self.sizes = {s: self._size(s) for s in segs}
        self._tail = None

    # -- files -------------------------------------------------------------------------------------
    def _path(self, seq: int) -> Path:
        return self.dir / f"{seq:012d}.seg"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob("*.seg") if p.stem.isdigit())

    def _size(self, seq: int) -> int:
        try:
            return self._path(seq).stat().st_size
        except FileNotFoundError:
            return 0

    def _read_head(self, segs: list[int]) -> tuple[int, int]:
        try:
            seq, off = (int(x) for x in (self.dir / "head").read_text().split())
            return seq, off
        except (OSError, ValueError):
            return (segs[0] if segs else 0), 0

    def _write_head(self) -> None:
        atomic_write(self.dir / "head", f"{self.head_seq} {self.head_off}\n", mode=0o600)

    # -- the writer's side -------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Bytes buffered and not yet delivered."""
        return sum(self.sizes.values()) - self.head_off

    def append(self, frames: list[bytes]) -> int:
        """Appends the frames that fit; returns how many were dropped for lack of room."""
        dropped = 0
        with self.lock:
            out = bytearray()
            room = self.limit - self.pending
            for f in frames:
                if len(f) > room:
                    dropped += 1
                    continue
                room -= len(f)
                out += f
            if out:
                self._write(bytes(out))
            self.appended += len(frames) - dropped
            self.dropped += dropped
        return dropped

    def _write(self, data: bytes) -> None:
        if self.sizes[self.tail_seq] >= SEGMENT_BYTES:
            self.sync()
            if self._tail is not None:
                self._tail.close()
                self._tail = None
            self.tail_seq += 1
            self.sizes[self.tail_seq] = 0
        if self._tail is None:
            fd = os.open(self._path(self.tail_seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            self._tail = os.fdopen(fd, "ab", buffering=0)
        self._tail.write(data)
        self.sizes[self.tail_seq] += len(data)

    def sync(self) -> None:
        """Makes what was appended durable (the reader then records how far it read)."""
        if self._tail is not None:
            os.fdatasync(self._tail.fileno())

    # -- the sender's side -------------------------------------------------------------------------
    def peek(self, max_bytes: int = 1 << 16) -> tuple[bytes, tuple[int, int]]:
        """Whole frames from the head, up to `max_bytes` (at least one frame), and the position after
        them for commit(). Empty when nothing is buffered."""
        from .syslog import unframe

        with self.lock:
            seq, off = self.head_seq, self.head_off
            while seq < self.tail_seq and off >= self.sizes.get(seq, 0):
                seq, off = seq + 1, 0
            size = self.sizes.get(seq, 0)
            if off >= size:
                return b"", (seq, off)
        with open(self._path(seq), "rb") as f:
            f.seek(off)
            data = f.read(max(max_bytes, 1))
            frames, used = unframe(data)
            if not frames:   # one frame bigger than max_bytes: read all of it
                n = int(data.split(b" ", 1)[0])
                f.seek(off)
                data = f.read(len(str(n)) + 1 + n)
                frames, used = unframe(data)
        return data[:used], (seq, off + used)

    def commit(self, position: tuple[int, int], sent: int = 0) -> None:
        """Everything before `position` was delivered."""
        with self.lock:
            seq, off = position
            for old in [s for s in self.sizes if s < seq]:
                self._path(old).unlink(missing_ok=True)
                del self.sizes[old]
            self.head_seq, self.head_off = seq, off
            self.sent_bytes += sent
            self._write_head()

    def close(self) -> None:
        with self.lock:
            if self._tail is not None:
                self._tail.close()
                self._tail = None
