"""Published ports on this host: the conflict rules, choosing free host ports, and the
sockets the host already listens on. The `-p` grammar itself is runspec.ports."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import ContainerError
from ..runspec.ports import WILDCARD, PortMapping



@dataclass(frozen=True)
class Listener:
    """A socket on the host: TCP in LISTEN, or a bound UDP socket."""

    proto: str
    ip: str
    port: int


def _overlap(a: str, b: str) -> bool:
    return a == WILDCARD or b == WILDCARD or a == b


def check_conflicts(name: str, wanted: Iterable[PortMapping],
                    published: Mapping[str, Iterable[PortMapping]],
                    listeners: Iterable[Listener], local_addresses: Iterable[str] | None = None) -> None:
    """Raises one ContainerError naming the first clash; `published` is container → its ports."""
    wanted = list(wanted)
    local = set(local_addresses) if local_addresses is not None else None
    seen: list[PortMapping] = []
    for m in wanted:
        if m.host_port == 0:
            continue
        if local is not None and m.host_ip != WILDCARD and m.host_ip not in local:
            raise ContainerError(f"cannot publish {m} for {name}: {m.host_ip} is not an address of this host")
        for s in seen:
            if s.proto == m.proto and s.host_port == m.host_port and _overlap(s.host_ip, m.host_ip):
                raise ContainerError(f"port {m.host_port}/{m.proto} is published twice for {name}")
        seen.append(m)
        for other, ports in sorted(published.items()):
            if other == name:
                continue
            for p in ports:
                if p.proto == m.proto and p.host_port == m.host_port and _overlap(p.host_ip, m.host_ip):
                    raise ContainerError(
                        f"port {m.host_port}/{m.proto} is already published by container {other}")
        for lis in listeners:
            if lis.proto == m.proto and lis.port == m.host_port and _overlap(lis.ip, m.host_ip):
                raise ContainerError(
                    f"port {m.host_port}/{m.proto} is already in use on this host "
                    f"(a process listens on {lis.ip}:{lis.port})")


def assign_host_ports(name: str, wanted: Iterable[PortMapping], published: Mapping[str, Iterable[PortMapping]],
                      listeners: Iterable[Listener], port_range: tuple[int, int]) -> list[PortMapping]:
    """Gives each mapping with host port 0 the lowest free port of its own range, or else of
    `port_range` (Docker picks from the ephemeral range too)."""
    wanted = list(wanted)
    taken = {(m.proto, m.host_port) for m in wanted if m.host_port}
    taken |= {(p.proto, p.host_port) for other, ports in published.items() if other != name for p in ports}
    taken |= {(lis.proto, lis.port) for lis in listeners}
    out = []
    for m in wanted:
        if m.host_port == 0:
            lo, hi = m.choose_from or port_range
            port = next((p for p in range(lo, hi + 1) if (m.proto, p) not in taken), None)
            if port is None:
                raise ContainerError(f"no free host port in {lo}-{hi} for {m.container_port}/{m.proto} of {name}")
            taken.add((m.proto, port))
            m = PortMapping(m.host_ip, port, m.container_port, m.proto)
        out.append(m)
    return out


# -- reading the host's sockets (facts) ------------------------------------------------------

def _hex_ip(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # /proc/net/*6 stores four little-endian 32-bit words
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    addr = ipaddress.IPv6Address(words)
    if addr.ipv4_mapped:
        return str(addr.ipv4_mapped)
    return WILDCARD if addr == ipaddress.IPv6Address("::") else str(addr)


def host_listeners(proc: str | Path = "/proc") -> list[Listener]:
    """Listening TCP and bound UDP sockets of this network namespace. An IPv6 wildcard socket
    counts as all addresses (it takes IPv4 too unless V6ONLY); other IPv6 addresses cannot
    clash with an IPv4 DNAT rule and are left out."""
    out = []
    for fname, proto, state in (("tcp", "tcp", "0A"), ("tcp6", "tcp", "0A"), ("udp", "udp", "07"), ("udp6", "udp", "07")):
        try:
            lines = (Path(proc) / "net" / fname).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 4 or f[3] != state:
                continue
            ip_hex, port_hex = f[1].split(":")
            ip = _hex_ip(ip_hex)
            if ":" in ip:
                continue
            out.append(Listener(proto, ip, int(port_hex, 16)))
    return out


def ephemeral_range(proc: str | Path = "/proc") -> tuple[int, int]:
    try:
        lo, hi = (Path(proc) / "sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999
