"""Address allocations for the container subnet, persisted in <root>/network/ipam.json.

Every change happens under an exclusive flock on <root>/network/.lock (the same lock the
network manager holds for a whole connect/disconnect, so the file and the system agree) and is
written atomically. Allocation is by container name and idempotent: a container that
reconnects (a restart) gets its old address back while it holds the allocation, which keeps
its linkers' env vars right. New addresses are handed out after the last one given, wrapping
around, so a just-freed address is not reused at once (stale ARP entries, hosts files).
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError, ContainerError
from ..fsutil import atomic_write, private_dir


def state_dir(root: str | os.PathLike) -> Path:
    # absolute: the hosts/resolv.conf paths under it end up in the runtime's config.json
    return Path(root).absolute() / "network"


@contextmanager
def lock(root: str | os.PathLike) -> Iterator[None]:
    """The network lock: one connect/disconnect/allocation at a time on this host."""
    d = private_dir(state_dir(root), 0o700)   # endpoints hold linked containers' environments
    fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass
class Allocations:
    subnet: ipaddress.IPv4Network
    by_name: dict[str, str] = field(default_factory=dict)
    last: str | None = None

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 1

    def get(self, name: str) -> ipaddress.IPv4Address | None:
        addr = self.by_name.get(name)
        return ipaddress.IPv4Address(addr) if addr else None

    def allocate(self, name: str) -> ipaddress.IPv4Address:
        if name in self.by_name:
            return ipaddress.IPv4Address(self.by_name[name])
        used = set(self.by_name.values())
        first = int(self.gateway) + 1
        last = int(self.subnet.broadcast_address) - 1
        size = last - first + 1
        if size <= 0:
            raise ContainerError(f"container subnet {self.subnet} has no room for containers")
        start = int(ipaddress.IPv4Address(self.last)) + 1 if self.last else first
        for i in range(size):
            cand = first + (start - first + i) % size
            text = str(ipaddress.IPv4Address(cand))
            if text not in used:
                self.by_name[name] = text
                self.last = text
                return ipaddress.IPv4Address(cand)
        raise ContainerError(f"no free address left in {self.subnet} ({len(used)} in use)")

    def release(self, name: str) -> bool:
        return self.by_name.pop(name, None) is not None

    def to_json(self) -> dict:
        return {"subnet": str(self.subnet), "last": self.last, "allocations": dict(sorted(self.by_name.items()))}


def _path(root) -> Path:
    return state_dir(root) / "ipam.json"


def load(root: str | os.PathLike, subnet: str) -> Allocations:
    """Reads the allocations (call under `lock`). A subnet change with live allocations is refused."""
    net = ipaddress.IPv4Network(subnet)
    path = _path(root)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return Allocations(net)
    except (OSError, ValueError) as exc:
        raise ContainerError(f"{path}: unreadable address allocations ({exc})") from exc
    stored = ipaddress.IPv4Network(data.get("subnet", subnet))
    allocs = {str(k): str(v) for k, v in (data.get("allocations") or {}).items()}
    if stored != net:
        if allocs:
            raise ConfigError(f"container subnet is {stored} with {len(allocs)} address(es) in use; "
                              f"cannot switch to {net} until they are released", str(path))
        return Allocations(net)
    return Allocations(net, allocs, data.get("last"))


def save(root: str | os.PathLike, allocs: Allocations) -> None:
    atomic_write(_path(root), json.dumps(allocs.to_json(), indent=2) + "\n", mode=0o644)


@contextmanager
def transaction(root: str | os.PathLike, subnet: str, *, locked: bool = False) -> Iterator[Allocations]:
    """Load, change, save atomically; takes the lock unless the caller already holds it."""
    if locked:
        allocs = load(root, subnet)
        yield allocs
        save(root, allocs)
        return
    with lock(root):
        allocs = load(root, subnet)
        yield allocs
        save(root, allocs)
