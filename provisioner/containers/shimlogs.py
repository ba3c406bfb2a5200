"""Reading a supervised container's log: the JSON-lines files provision-shim writes and rotates
(`<log_dir>/<name>.log[.1 .2]`, Docker's json-file shape), whole, tailed or followed while the shim
lives. Split from supervise, which re-exports `logs`, `log_text` and `LogLine`."""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError, ContainerError
from ..runspec.durations import parse_duration


# -- logs ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LogLine:
    time: str
    stream: str
    text: str  # as the process wrote it, trailing newline included when there was one

    def format(self, timestamps: bool = False) -> str:
        return f"{self.time} {self.text}" if timestamps else self.text


def parse_since(text: str, now: float | None = None) -> str:
    """`--since` as Docker takes it — an RFC 3339 time ("2026-01-02T13:23:37Z", offsets too), a date
    (UTC), Unix seconds, or a duration back from now ("10m", "1h30m") — as the shim's own UTC stamp
    ("2026-01-02T13:23:37.000000000Z"), which its lines compare against as strings."""
    t = str(text).strip()
    when: datetime | None = None
    if re.fullmatch(r"\d+(\.\d+)?", t):
        when = datetime.fromtimestamp(float(t), timezone.utc)
    elif re.fullmatch(r"\d{4}-\d\d-\d\d", t):
        when = datetime.fromisoformat(t).replace(tzinfo=timezone.utc)
    elif re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)", t):
        when = datetime.fromisoformat(t.replace("Z", "+00:00")).astimezone(timezone.utc)
    else:
        try:
            when = datetime.fromtimestamp((time.time() if now is None else now) - parse_duration(t), timezone.utc)
        except ValueError:
            raise ConfigError(f"--since {text!r}: want a time like 2026-01-02T13:23:37Z, a date, Unix seconds or a "
                              "duration like 10m") from None
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond:06d}000Z"


def log_files(base: Path) -> list[Path]:
    """Oldest first: base.N ... base.1, base."""
    rotated = []
    for p in base.parent.glob(base.name + ".*"):
        suffix = p.name[len(base.name) + 1:]
        if suffix.isdigit():
            rotated.append((int(suffix), p))
    return [p for _, p in sorted(rotated, reverse=True)] + ([base] if base.exists() else [])


def _parse(raw: bytes) -> LogLine | None:
    try:
        rec = json.loads(raw.decode("utf-8", errors="replace"))
        return LogLine(rec["time"], rec["stream"], rec["log"])
    except (ValueError, KeyError, TypeError):
        return None  # a torn last line (the shim is mid-write) or foreign junk


def logs(name: str, log_dir: str | os.PathLike, *, tail: int | None = None, follow: bool = False,
         state_dir: str | os.PathLike | None = None, poll_interval: float = 0.1,
         follow_timeout: float | None = None, since: str | None = None,
         idle_marks: bool = False) -> Iterator[LogLine | None]:
    """The container's log lines, oldest first; `since` (a parse_since stamp) keeps those written
    then or later, `tail` the last N of them; `follow` then waits for more (across rotations,
    without losing or repeating a line) until the supervisor is gone or `follow_timeout` passes.
    With `idle_marks`, a follower yields None each time it is about to wait for more (so a reader
    that batches lines knows when to send what it has, and may look whether its client left)."""
    from . import supervise   # supervise re-exports this module's names: imported late

    base = supervise.ShimPaths.of(name, log_dir, state_dir or log_dir).log
    readers = _open_all(base)
    lines: list[LogLine] = []
    for r in readers:
        lines.extend(r.lines())
    last = readers.pop() if readers and follow else None
    for r in readers:
        r.close()
    if since is not None:
        lines = [ln for ln in lines if ln.time >= since]
    if tail is not None:
        lines = lines[-tail:] if tail > 0 else []
    yield from lines
    if follow:
        yield from _follow(name, base, state_dir or log_dir, last, poll_interval, follow_timeout, idle_marks)


def log_text(name: str, log_dir: str | os.PathLike, *, tail: int | None = None, follow: bool = False,
             timestamps: bool = False, state_dir: str | os.PathLike | None = None,
             follow_timeout: float | None = None) -> Iterator[str]:
    """`logs [--tail N] [-f] [--timestamps]` as text: each line as the process wrote it,
    prefixed with its RFC 3339 time under `timestamps`."""
    for line in logs(name, log_dir, tail=tail, follow=follow, state_dir=state_dir, follow_timeout=follow_timeout):
        yield line.format(timestamps)


class _Reader:
    """Reads complete JSON lines from one open log file (a torn last line waits for its end)."""

    def __init__(self, f):
        self.f, self.pending = f, b""
        self.inode = os.fstat(f.fileno()).st_ino

    def lines(self) -> list[LogLine]:
        chunk = self.f.read()
        if not chunk:
            return []
        self.pending += chunk
        *complete, self.pending = self.pending.split(b"\n")
        return [line for raw in complete if (line := _parse(raw))]

    def close(self):
        self.f.close()


def _inode(p: Path) -> int | None:
    try:
        return p.stat().st_ino
    except FileNotFoundError:
        return None


def _open_all(base: Path) -> list[_Reader]:
    """Opens every log file, oldest first, as one consistent snapshot: the shim may rotate
    while we open them one by one, so retry until the names point at the same files before
    and after (a rotation is rare next to a few opens)."""
    for _ in range(20):
        files = log_files(base)
        before = [_inode(p) for p in files]
        readers = []
        for p in files:
            try:
                readers.append(_Reader(open(p, "rb")))
            except FileNotFoundError:
                break
        if len(readers) == len(files) and [r.inode for r in readers] == before == [_inode(p) for p in files] \
                and log_files(base) == files:
            return readers
        for r in readers:
            r.close()
        time.sleep(0.005)
    raise ContainerError(f"{base}: log files keep rotating under the reader; try again")


def _follow(name, base: Path, state_dir, reader: _Reader | None, poll_interval: float,
            follow_timeout: float | None, idle_marks: bool = False):
    deadline = None if follow_timeout is None else time.monotonic() + follow_timeout
    try:
        while True:
            new = reader.lines() if reader else []
            yield from new
            if new:
                continue
            current = _inode(base)
            if current is not None and (reader is None or current != reader.inode):
                # Rotated (or created): finish our file, then every newer one in order.
                if reader:
                    yield from reader.lines()
                snapshot = _open_all(base)
                inodes = [r.inode for r in snapshot]
                if reader is not None and reader.inode in inodes:
                    cut = inodes.index(reader.inode) + 1
                    for r in snapshot[:cut]:
                        r.close()
                    snapshot = snapshot[cut:]
                # else: our file already fell off the end (the reader lagged more than
                # max-files rotations); what was in between is gone, as with Docker.
                if not snapshot:
                    continue  # base changed again under us; look again
                if reader:
                    reader.close()
                for r in snapshot[:-1]:
                    yield from r.lines()
                    r.close()
                reader = snapshot[-1]
                continue
            from . import supervise

            if not supervise.status(name, state_dir, base.parent).shim_alive:
                if reader:
                    yield from reader.lines()
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            if idle_marks:
                yield None
            time.sleep(poll_interval)
    finally:
        if reader:
            reader.close()


class Attached:
    """The log of a run about to start, held open from the moment the supervisor creates it (the
    Engine API's attach: a `run --rm` container may be gone — its directory removed with the log —
    a moment after it exits, so the reader must hold the file before then)."""

    def __init__(self, name: str, log_dir: str | os.PathLike, state_dir: str | os.PathLike):
        from . import supervise

        self.name, self.state_dir = name, state_dir
        self.base = supervise.ShimPaths.of(name, log_dir, state_dir).log
        self.reader: _Reader | None = None

    def open(self) -> bool:
        """True once the log is open (False: not there yet)."""
        if self.reader is None:
            try:
                self.reader = _Reader(open(self.base, "rb"))
            except FileNotFoundError:
                return False
        return True

    def follow(self, since: str, poll_interval: float = 0.02) -> Iterator[LogLine]:
        """Lines written at `since` or later, until the supervisor is gone."""
        for line in _follow(self.name, self.base, self.state_dir, self.reader, poll_interval, None):
            if line.time >= since:
                yield line
        self.reader = None

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
