"""How a container is networked, as typed values: the networks it joins (with aliases and a
fixed address), or another mode (host, none, another container's); extra /etc/hosts lines; DNS.

Docker's flags: --network NAME|host|none|container:NAME, --network-alias, --ip, --add-host
NAME:IP (IP `host-gateway`: the gateway of the container's network), --dns, --dns-search,
--dns-option. Compose's `networks:`, `network_mode:` (also service:NAME), `extra_hosts:`, `dns:`,
`dns_search:`, `dns_opt:` give the same values.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Iterable

from ..errors import ConfigError

HOST_GATEWAY = "host-gateway"
NETWORK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})")


@dataclass(frozen=True)
class NetworkAttachment:
    network: str                          # the network's name on the host
    aliases: tuple[str, ...] = ()         # further names others on it resolve to this container
    ipv4_address: str | None = None       # a fixed address in the network's subnet

    def to_json(self) -> dict:
        return {"network": self.network, "aliases": list(self.aliases), "ipv4_address": self.ipv4_address}

    @classmethod
    def from_json(cls, d) -> "NetworkAttachment":
        return cls(str(d["network"]), tuple(d.get("aliases") or ()), d.get("ipv4_address"))


@dataclass(frozen=True)
class NetworkMode:
    """Not on networks of its own: `host`, `none`, or `container:NAME` (another's namespace)."""

    kind: str                             # host | none | container
    container: str | None = None

    def __str__(self) -> str:
        return f"container:{self.container}" if self.kind == "container" else self.kind


def parse_network_mode(text: str) -> NetworkMode | None:
    """--network's special values; None for a network name (bridge included)."""
    text = str(text).strip()
    if text in ("host", "none"):
        return NetworkMode(text)
    if text.startswith("container:"):
        name = text.split(":", 1)[1]
        if not name:
            raise ConfigError(f"bad network mode {text!r} (want container:NAME)")
        return NetworkMode("container", name)
    return None


def check_network_name(name: str) -> str:
    if not NETWORK_NAME.fullmatch(name):
        raise ConfigError(f"bad network name {name!r} (letters, digits, '_', '.', '-')")
    return name


def check_alias(alias: str) -> str:
    if not _HOSTNAME.fullmatch(alias):
        raise ConfigError(f"bad network alias {alias!r} (a host name: letters, digits, '.', '-', '_')")
    return alias


def check_ipv4(text: str, what: str = "address") -> str:
    try:
        addr = ipaddress.ip_address(str(text))
    except ValueError:
        raise ConfigError(f"bad {what} {text!r}: not an IP address") from None
    if addr.version != 4:
        raise ConfigError(f"bad {what} {text!r}: container networks are IPv4")
    return str(addr)


@dataclass(frozen=True)
class ExtraHost:
    name: str
    address: str          # an IPv4/IPv6 address, or HOST_GATEWAY

    def __str__(self) -> str:
        return f"{self.name}:{self.address}"


def parse_extra_host(text: str) -> ExtraHost:
    """NAME:IP or NAME=IP (compose's newer spelling); IPv6 addresses may be bracketed."""
    text = str(text).strip()
    if "=" in text:
        name, _, addr = text.partition("=")
    else:
        name, _, addr = text.partition(":")
    addr = addr.strip().strip("[]")
    if not name or not addr:
        raise ConfigError(f"bad extra host {text!r} (want NAME:IP)")
    if not _HOSTNAME.fullmatch(name):
        raise ConfigError(f"bad extra host {text!r}: {name!r} is not a host name")
    if addr != HOST_GATEWAY:
        try:
            addr = str(ipaddress.ip_address(addr))
        except ValueError:
            raise ConfigError(f"bad extra host {text!r}: {addr!r} is not an IP address (or host-gateway)") from None
    return ExtraHost(name, addr)


@dataclass(frozen=True)
class DnsConfig:
    servers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def is_default(self) -> bool:
        return not (self.servers or self.search or self.options)


def parse_dns(servers: Iterable[str] = (), search: Iterable[str] = (), options: Iterable[str] = ()) -> DnsConfig:
    out_servers = []
    for s in servers:
        try:
            out_servers.append(str(ipaddress.ip_address(str(s).strip())))
        except ValueError:
            raise ConfigError(f"bad DNS server {s!r}: not an IP address") from None
    for d in search:
        if not _HOSTNAME.fullmatch(str(d)) and str(d) != ".":
            raise ConfigError(f"bad DNS search domain {d!r}")
    for o in options:
        if not re.fullmatch(r"[a-z0-9_-]+(:\d+)?", str(o)):
            raise ConfigError(f"bad DNS option {o!r} (e.g. ndots:2, timeout:1, rotate)")
    return DnsConfig(tuple(out_servers), tuple(str(d) for d in search), tuple(str(o) for o in options))
