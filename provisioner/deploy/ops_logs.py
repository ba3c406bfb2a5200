"""`provision logs STACK [SERVICE] --cloud C`: every host's and service's logs merged in time order,
each line prefixed with host/service (as docker compose and Kamal print them).

Per host and service, the host's agent prints the container's records as JSON lines
(`provision --json container logs [--since T] [--tail N] [-f] NAME`, the shim's {"log", "stream",
"time"}); here they are merged by their time. Without -f every stream ends, so the merge is a
sort. With -f the streams never end: a line is printed once every other stream has shown a later
line, or after `lag` seconds at most — so lines from different hosts come out in time order
unless a host is more than `lag` behind (clock skew between hosts shows as it is).
"""
from __future__ import annotations

import heapq
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from paramiko import SSHException

from ..compose.names import container_name
from ..errors import ConfigError, ProvisionerError
from ..remote.deliver import AGENT
from ..stack import Stack
from .inventory import HostRecord

LAG = 0.5


@dataclass(frozen=True)
class Stream:
    host: str          # the host's name in the stack
    service: str
    container: str
    replica: str = ""  # which of a service's several containers ("" for a service's only one)

    @property
    def prefix(self) -> str:
        return f"{self.host}/{self.service}{'/' + self.replica if self.replica else ''}"


@dataclass(frozen=True, order=True)
class Event:
    time: str          # the shim's UTC stamp (fixed width: compares as a string)
    seq: int           # arrival order, for equal times
    stream: Stream = field(compare=False)
    text: str = field(compare=False)
    stderr: bool = field(compare=False, default=False)


def streams(stack: Stack, records: Iterable[HostRecord], service: str | None,
            running: dict[str, dict[str, list[str]]] | None = None) -> list[Stream]:
    """What to read on each host: its placed services (or only `service`), each from the
    containers the host says run it (`running`: host -> service -> containers), else from the
    name `up` gives a service's first container."""
    if service is not None and service not in stack.services:
        raise ConfigError(f"unknown service {service!r} in stack {stack.name} "
                          f"(services: {', '.join(sorted(stack.services))})", stack.path)
    out = []
    for rec in records:
        try:
            placed = stack.host(rec.host).services
        except KeyError:
            continue
        for s in placed:
            if service is None or s == service:
                names = ((running or {}).get(rec.host) or {}).get(s) or [container_name(stack.name, s)]
                for name in names:
                    out.append(Stream(rec.host, s, name, name if len(names) > 1 else ""))
    if service is not None and not out:
        raise ConfigError(f"service {service!r} is not placed on any deployed host of stack {stack.name}", stack.path)
    return out


def remote_argv(container: str, *, follow: bool = False, tail: int | None = None, since: str | None = None,
                agent: str = AGENT) -> list[str]:
    argv = [agent, "--json", "container", "logs"]
    if follow:
        argv.append("--follow")
    if tail is not None:
        if tail < 0:
            raise ConfigError(f"--tail must be 0 or more, not {tail}")
        argv += ["--tail", str(tail)]
    if since is not None:
        argv += ["--since", since]
    return [*argv, container]


def parse(raw: bytes) -> tuple[str, str, bool] | None:
    """(time, text, is stderr) of one JSON line; None for anything else (a pty's noise)."""
    try:
        rec = json.loads(raw.decode("utf-8", errors="replace").strip("\r\n"))
        return str(rec["time"]), str(rec["log"]), rec.get("stream") == "stderr"
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class Merger:
    """Lines from several streams, handed out in time order (see the module docstring)."""

    def __init__(self, keys: Iterable[Stream], lag: float = LAG, clock: Callable[[], float] = time.monotonic):
        self.lag, self.clock = lag, clock
        self.latest: dict[Stream, str | None] = {k: None for k in keys}
        self.done: set[Stream] = set()
        self.heap: list[tuple[Event, float]] = []
        self.seq = 0
        self.lock = threading.Lock()

    def push(self, stream: Stream, time_: str, text: str, stderr: bool = False) -> None:
        with self.lock:
            self.seq += 1
            heapq.heappush(self.heap, (Event(time_, self.seq, stream, text, stderr), self.clock()))
            if self.latest.get(stream) is None or time_ > self.latest[stream]:
                self.latest[stream] = time_

    def end(self, stream: Stream) -> None:
        with self.lock:
            self.done.add(stream)

    @property
    def finished(self) -> bool:
        with self.lock:
            return len(self.done) == len(self.latest) and not self.heap

    def ready(self) -> list[Event]:
        """The lines that can go out now, in order: all of them once every stream ended; else those
        no later than every live stream's latest line, and any that waited `lag` seconds."""
        out = []
        with self.lock:
            now = self.clock()
            live = [t for k, t in self.latest.items() if k not in self.done]
            mark = min(live) if live and None not in live else None
            while self.heap:
                ev, arrived = self.heap[0]
                if live and not (mark is not None and ev.time <= mark) and now - arrived < self.lag:
                    break
                heapq.heappop(self.heap)
                out.append(ev)
        return out


class _Sink:
    """A stream's stdout: JSON lines into the merger; anything else (an error the agent printed,
    merged in by a pty) kept for the report."""

    def __init__(self, merger: Merger, stream: Stream):
        self.merger, self.stream, self.buf, self.other = merger, stream, b"", []

    def write(self, data: bytes) -> None:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for raw in lines:
            self._line(raw)

    def _line(self, raw: bytes) -> None:
        got = parse(raw)
        if got is not None:
            self.merger.push(self.stream, *got)
        elif raw.strip():
            self.other.append(raw.decode("utf-8", errors="replace").strip())

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.buf:
            self._line(self.buf)
            self.buf = b""


class _Err:
    def __init__(self):
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def flush(self) -> None:
        pass


def read(clients: dict, wanted: list[Stream], *, follow: bool, tail: int | None, since: str | None,
         emit: Callable[[Event], None], lag: float = LAG) -> list[str]:
    """Reads every stream (`clients`: host name -> a Runner on that host), hands the merged lines to
    `emit` in time order; returns one problem line per stream that failed."""
    merger = Merger(wanted, lag)
    problems: list[str] = []

    def one(stream: Stream) -> None:
        sink, err = _Sink(merger, stream), _Err()
        try:
            rc = clients[stream.host].stream(remote_argv(stream.container, follow=follow, tail=tail, since=since),
                                             stdout=sink, stderr=err, sudo=True, pty=follow)
            sink.close()
            if rc != 0:
                why = (err.data.decode(errors="replace").strip().splitlines() or sink.other or [f"exit {rc}"])[-1]
                problems.append(f"{stream.prefix}: {why.removeprefix('error: ')}")
        except (ProvisionerError, OSError, EOFError, SSHException) as exc:   # one host's failure stops no other
            problems.append(f"{stream.prefix}: {exc}")
        finally:
            merger.end(stream)

    threads = [threading.Thread(target=one, args=(s,), daemon=True) for s in wanted]
    for t in threads:
        t.start()
    while not merger.finished:
        for ev in merger.ready():
            emit(ev)
        time.sleep(0.05)
    return sorted(problems)


def format_line(ev: Event, width: int, timestamps: bool) -> str:
    text = ev.text if ev.text.endswith("\n") else ev.text + "\n"
    return f"{ev.stream.prefix.ljust(width)} | " + (f"{ev.time} " if timestamps else "") + text
