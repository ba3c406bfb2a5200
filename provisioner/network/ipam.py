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
    gateway_ip: str | None = None        # a network's own gateway (else the subnet's first address)
    ip_range: str | None = None          # hand out only from here

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(self.gateway_ip) if self.gateway_ip else self.subnet.network_address + 1

    def get(self, name: str) -> ipaddress.IPv4Address | None:
        addr = self.by_name.get(name)
        return ipaddress.IPv4Address(addr) if addr else None

    def allocate(self, name: str, want: str | None = None) -> ipaddress.IPv4Address:
        """`name`'s address: the one it holds, else `want` (a fixed address, which must be free),
        else the next free one."""
        if want is not None:
            addr = ipaddress.IPv4Address(want)
            holder = next((n for n, a in self.by_name.items() if a == str(addr) and n != name), None)
            if addr not in self.subnet or addr in (self.subnet.network_address, self.subnet.broadcast_address,
                                                   self.gateway):
                raise ContainerError(f"address {addr} is not usable in {self.subnet}")
            if holder is not None:
                raise ContainerError(f"address {addr} is already in use by {holder}")
            self.by_name[name] = str(addr)
            return addr
        if name in self.by_name:
            return ipaddress.IPv4Address(self.by_name[name])
        used = set(self.by_name.values())
        pool = ipaddress.IPv4Network(self.ip_range) if self.ip_range else self.subnet
        first = max(int(pool.network_address), int(self.subnet.network_address) + 1)
        last = min(int(pool.broadcast_address), int(self.subnet.broadcast_address) - 1)
        size = last - first + 1
        if size <= 0:
            raise ContainerError(f"container subnet {self.subnet} has no room for containers")
        start = int(ipaddress.IPv4Address(self.last)) + 1 if self.last else first
        for i in range(size):
            cand = first + (start - first + i) % size
            text = str(ipaddress.IPv4Address(cand))
            if text not in used and cand != int(self.gateway):
                self.by_name[name] = text
                self.last = text
                return ipaddress.IPv4Address(cand)
        raise ContainerError(f"no free address left in {self.subnet} ({len(used)} in use)")

    def release(self, name: str) -> bool:
        return self.by_name.pop(name, None) is not None

    def to_json(self) -> dict:
        return {"subnet": str(self.subnet), "last": self.last, "allocations": dict(sorted(self.by_name.items()))}


def _path(root, network: str | None = None) -> Path:
    if network is None:
        return state_dir(root) / "ipam.json"
    return state_dir(root) / "networks" / f"{network}.ipam.json"


def load(root: str | os.PathLike, subnet: str, network: str | None = None, *, gateway_ip: str | None = None,
         ip_range: str | None = None) -> Allocations:
    """Reads the allocations of the default network (or of user-defined `network`) (call under
    `lock`). A subnet change with live allocations is refused."""
    net = ipaddress.IPv4Network(subnet)
    path = _path(root, network)
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
        return Allocations(net, gateway_ip=gateway_ip, ip_range=ip_range)
    return Allocations(net, allocs, data.get("last"), gateway_ip, ip_range)


def save(root: str | os.PathLike, allocs: Allocations, network: str | None = None) -> None:
    path = _path(root, network)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(allocs.to_json(), indent=2) + "\n", mode=0o644)


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


@contextmanager
def transaction_for(root: str | os.PathLike, cfg, network: str | None = None) -> Iterator[Allocations]:
    """A transaction on the allocations of a network (`cfg` its NetworkConfig; `network` None for the
    default bridge); the caller holds the lock."""
    allocs = load(root, cfg.subnet, network, gateway_ip=cfg.gateway_ip, ip_range=cfg.ip_range)
    yield allocs
    save(root, allocs, network)
