"""Log shipping on a host: every container's output, and the agent's own logs, to one collector.

Two threads. The reader, every `poll` seconds, follows each source (tail.py) — the shim's JSON
lines of every container under `<root>/containers/`, and `<root>/logs/{agent,host-boot}.log` —
turns each new line into an RFC 5424 message (syslog.py) and appends it, framed, to the bounded
on-disk spool (spool.py); once the spool has them on disk it records how far each source was
read (`<root>/logship/cursors.json`). The sender (sender.py) delivers the spool in order.

While the collector is away the spool fills; at its bound a new line is dropped and counted
(`dropped`, served as provisioner_logship_dropped_lines_total), a warning goes to the agent's log,
and once lines fit again one message saying how many were dropped goes out in their place.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..compose.labels import service_labels
from ..fsutil import atomic_write
from . import syslog, tail
from .sender import Sender
from .spool import Spool

log = logging.getLogger(__name__)
DIR = "logship"
AGENT_LOGS = {"logs/agent.log": "provisioner-agent", "logs/host-boot.log": "provisioner-boot"}
SYNC_EVERY = 1.0
SOURCES_EVERY = 1.0
_LEVELS = {"WARNING": 4, "ERROR": 3, "CRITICAL": 2}


@dataclass(frozen=True)
class Source:
    key: str               # the cursor's key: the container id, or the agent log's path under root
    base: Path
    json: bool             # the shim's JSON lines, or plain text
    app_name: str
    sd: tuple[tuple[str, str], ...] = ()


class Shipper:
    def __init__(self, root: str | os.PathLike, scheme: str, host: str, port: int, *, buffer_bytes: int,
                 hostname: str | None = None, ca: str | None = None, poll: float = 0.2):
        self.root = Path(root)
        self.dir = self.root / DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.hostname = hostname or socket.gethostname()
        self.poll = poll
        self.target = f"{scheme}://{host}:{port}"
        self.spool = Spool(self.dir / "spool", buffer_bytes)
        self.sender = Sender(self.spool, scheme, host, port, ca=ca)
        self.cursors = self._load_cursors()
        self.lines = 0
        self.lost_sources = 0
        self._unreported_drops = 0
        self._last_sync = 0.0
        self._dirty = False
        self._names: dict[str, str] = {}
        self._sources: tuple[float, list[Source]] = (0.0, [])

    # -- state ---------------------------------------------------------------------------------------
    def _load_cursors(self) -> dict[str, tail.Cursor]:
        try:
            raw = json.loads((self.dir / "cursors.json").read_text())
        except (OSError, ValueError):
            return {}
        out = {}
        for k, v in (raw.items() if isinstance(raw, dict) else ()):
            c = tail.Cursor.from_json(v)
            if c is not None:
                out[k] = c
        return out

    def _save_cursors(self) -> None:
        atomic_write(self.dir / "cursors.json", json.dumps({k: c.to_json() for k, c in self.cursors.items()}) + "\n",
                     mode=0o600)

    # -- sources -------------------------------------------------------------------------------------
    def sources(self) -> list[Source]:
        """The containers' logs and the agent's, looked up again at most every SOURCES_EVERY seconds."""
        at, cached = self._sources
        if cached and time.monotonic() - at < SOURCES_EVERY:
            return cached
        out = self._find_sources()
        self._sources = (time.monotonic(), out)
        return out

    def _find_sources(self) -> list[Source]:
        out = []
        labels = service_labels(self.root)
        cdir = self.root / "containers"
        for d in sorted(cdir.iterdir()) if cdir.is_dir() else []:
            if len(d.name) != 64 or not d.is_dir():
                continue
            name = self._name(d)
            if name is None:
                continue
            stack, service = labels.get(name, ("", ""))
            sd = tuple((k, v) for k, v in (("stack", stack), ("service", service), ("container", name)) if v)
            out.append(Source(d.name, d / f"{d.name}.log", True, service or name, sd))
        for rel, app in AGENT_LOGS.items():
            out.append(Source(rel, self.root / rel, False, app))
        return out

    def _name(self, d: Path) -> str | None:
        if d.name not in self._names:   # an id's name never changes
            try:
                self._names[d.name] = json.loads((d / "container.json").read_text())["name"]
            except (OSError, ValueError, KeyError, TypeError):
                return None
        return self._names[d.name]

    # -- lines to messages ---------------------------------------------------------------------------
    def _frames(self, src: Source, lines: list[bytes]) -> list[bytes]:
        out = []
        for raw in lines:
            if src.json:
                try:
                    rec = json.loads(raw)
                    text, stream, stamp = rec["log"], rec["stream"], rec["time"]
                except (ValueError, KeyError, TypeError):
                    continue   # not a record (foreign junk): nothing to ship
                msg = syslog.Message(stamp, self.hostname, src.app_name, text, msgid=stream,
                                     severity=syslog.SEVERITY.get(stream, 6), sd=src.sd + (("stream", stream),))
            else:
                text = raw.decode("utf-8", errors="replace")
                stamp, _, rest = text.partition(" ")
                if syslog.timestamp(stamp) == syslog.NIL:
                    stamp, rest = _now(), text
                level = rest.split(" ", 1)[0]
                msg = syslog.Message(stamp, self.hostname, src.app_name, text, severity=_LEVELS.get(level, 6))
            out.append(syslog.frame(syslog.encode(msg)))
        return out

    def _own(self, text: str, severity: int = 4) -> bytes:
        return syslog.frame(syslog.encode(syslog.Message(_now(), self.hostname, "provisioner-agent", text,
                                                         severity=severity)))

    # -- the reader ----------------------------------------------------------------------------------
    def read_once(self) -> int:
        """One round over every source; returns the lines taken."""
        taken = 0
        for src in self.sources():
            chunk = tail.read_new(src.base, self.cursors.get(src.key))
            if chunk.lost:
                self.lost_sources += 1
                log.warning("%s: the reader fell behind the log's rotation; some lines were missed", src.base)
            if chunk.cursor is None or chunk.cursor == self.cursors.get(src.key):
                continue
            frames = self._frames(src, chunk.lines)
            if self._unreported_drops and frames and self.spool.pending + sum(map(len, frames)) < self.spool.limit:
                note = self._own(f"dropped {self._unreported_drops} log lines: the buffer was full "
                                 f"({self.spool.limit} bytes) while {self.target} could not take them")
                if not self.spool.append([note]):
                    self._unreported_drops = 0
            dropped = self.spool.append(frames)
            if dropped:
                if not self._unreported_drops:
                    log.warning("log buffer full (%d bytes): dropping lines until %s takes them", self.spool.limit,
                                self.target)
                self._unreported_drops += dropped
            self.cursors[src.key] = chunk.cursor
            self._dirty = True
            taken += len(chunk.lines)
        self.lines += taken
        if taken:
            self.sender.wake.set()
        self._sync()
        return taken

    def _sync(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._dirty and (force or now - self._last_sync >= SYNC_EVERY):
            self.spool.sync()          # the lines are on disk before the cursors say they were read
            known = {s.key for s in self.sources()}
            self.cursors = {k: c for k, c in self.cursors.items() if k in known}
            self._save_cursors()
            self._last_sync, self._dirty = now, False

    def run_reader(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.read_once()
            except OSError as exc:   # a disk error: say so, keep trying (the lines stay in the shim's files)
                log.warning("log reader: %s", exc)
            stop.wait(self.poll)
        self._sync(force=True)

    def start(self, stop: threading.Event) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.run_reader, args=(stop,), daemon=True, name="logship-reader"),
                   threading.Thread(target=self.sender.run, args=(stop,), daemon=True, name="logship-sender")]
        for t in threads:
            t.start()
        return threads

    def counters(self) -> dict[str, float]:
        return {"lines": self.lines, "dropped": self.spool.dropped, "buffered_bytes": self.spool.pending,
                "buffer_limit_bytes": self.spool.limit, "sent_bytes": self.spool.sent_bytes,
                "connected": 1 if self.sender.connected else 0, "lost_sources": self.lost_sources}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
