"""The kernel's connection tracking entries of one container address, around a start-first
switch (`conntrack` from conntrack-tools, through the Runner).

After takeover() repoints a published port, new connections reach the new container — but an
existing conntrack entry keeps its NAT: a client reusing a source port whose entry is still in
TIME_WAIT (or any UDP "connection") would be sent to the old container's address, and once that
container is gone, nowhere (the outage issue 13 measured: 50 s without answer). So the entries
whose reply comes from the old address and that are not established TCP are deleted at once, as
Docker does for a removed endpoint; established ones are left to finish (drained), up to the
service's stop grace period.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from ..errors import CommandError

TCP_STATES = ("SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE",
              "LISTEN", "NONE")


@dataclass(frozen=True)
class Entry:
    proto: str      # tcp | udp | ...
    state: str      # the TCP state; "" for other protocols


def parse_entries(text: str) -> list[Entry]:
    """`conntrack -L` lines: "tcp      6 117 TIME_WAIT src=… dst=… sport=… …"."""
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) < 4 or not f[1].isdigit():
            continue
        state = f[3] if f[0] == "tcp" and f[3] in TCP_STATES else ""
        out.append(Entry(f[0], state))
    return out


def entries(runner, address: str) -> list[Entry]:
    """The entries whose reply comes from `address` (connections to it, DNAT-ed ones included)."""
    try:
        res = runner.run(["conntrack", "-L", "--reply-src", address], check=False)
    except CommandError as exc:   # conntrack-tools missing: say so once, where it matters
        raise CommandError(exc.argv, exc.returncode, stderr=f"{exc.stderr} (install conntrack)") from exc
    return parse_entries(res.stdout) if res.returncode == 0 else []


def flush_stale(runner, address: str) -> int:
    """Deletes every entry to `address` but established TCP ones; returns how many kinds went."""
    found = entries(runner, address)
    states = sorted({e.state for e in found if e.proto == "tcp" and e.state and e.state != "ESTABLISHED"})
    commands = [["conntrack", "-D", "-p", "tcp", "--reply-src", address, "--state", s] for s in states]
    others = sorted({e.proto for e in found if e.proto != "tcp"})
    commands += [["conntrack", "-D", "-p", proto, "--reply-src", address] for proto in others]
    for argv in commands:
        runner.run(argv, check=False)   # 1: none left (they may expire meanwhile)
    return len(commands)


def established(runner, address: str) -> int:
    return sum(1 for e in entries(runner, address) if e.proto == "tcp" and e.state == "ESTABLISHED")


def drain(runner, address: str, grace: float, *, poll: float = 0.2, now: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> int:
    """Waits up to `grace` seconds for the established TCP connections to `address` to end;
    returns how many were still open when it stopped waiting (0: drained)."""
    deadline = now() + grace
    while True:
        left = established(runner, address)
        if left == 0 or now() >= deadline:
            return left
        sleep(min(poll, max(0.0, deadline - now())))
