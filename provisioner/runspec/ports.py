"""Published ports: Docker's `-p` grammar and compose's `ports:` entries, one parser for both.

Accepted (as `docker run -p`):
  CONTAINER                      host port chosen from the ephemeral range, all addresses
  HOST:CONTAINER                 e.g. 8080:80
  IP:HOST:CONTAINER              e.g. 127.0.0.1:8080:80
  IP::CONTAINER                  chosen host port on IP
  ranges                         8000-8002:80-82 (same length), or 8000-8010:80: the first
                                 free host port of the range (as Docker)
  any of them + /tcp or /udp     default tcp
Compose adds a bare integer (a container port) and the long syntax {target, published,
protocol, host_ip, mode, name, app_protocol}. IPv6 host addresses ([::1]:80:80) are refused:
the container network is IPv4 only.

`PublishedPort` is the other view of the same entries: the host port ranges a firewall opens.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ..errors import ConfigError

WILDCARD = "0.0.0.0"
PROTOCOLS = ("tcp", "udp")
_PORT_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
_LONG_KEYS = {"target", "published", "protocol", "host_ip", "mode", "name", "app_protocol"}


@dataclass(frozen=True, order=True)
class PublishedPort:
    """A host port range open to others: what the host and cloud firewalls let in."""

    protocol: str
    first: int
    last: int

    def __str__(self) -> str:
        span = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        return f"{span}/{self.protocol}"


@dataclass(frozen=True)
class PortMapping:
    host_ip: str          # "0.0.0.0" for all addresses
    host_port: int        # 0: choose one at connect time…
    container_port: int
    proto: str = "tcp"
    choose_from: tuple[int, int] | None = None  # …from this range (else the ephemeral range)

    def __str__(self) -> str:
        """The `-p` text that parses back to this mapping."""
        if self.choose_from and not self.host_port:
            host = f"{self.choose_from[0]}-{self.choose_from[1]}"
        else:
            host = str(self.host_port) if self.host_port else ""
        if self.host_ip != WILDCARD:
            return f"{self.host_ip}:{host}:{self.container_port}/{self.proto}"
        return f"{host}:{self.container_port}/{self.proto}" if host else f"{self.container_port}/{self.proto}"

    def published(self) -> "PublishedPort | None":
        """The host ports others can reach (what a firewall opens): none for a loopback address
        or a host port picked at random when the container starts."""
        if ipaddress.ip_address(self.host_ip).is_loopback:
            return None
        if self.host_port:
            return PublishedPort(self.proto, self.host_port, self.host_port)
        if self.choose_from:
            return PublishedPort(self.proto, *self.choose_from)
        return None

    def to_json(self) -> dict:
        return {"host_ip": self.host_ip, "host_port": self.host_port,
                "container_port": self.container_port, "proto": self.proto}

    @classmethod
    def from_json(cls, d: Mapping) -> "PortMapping":
        return cls(str(d["host_ip"]), int(d["host_port"]), int(d["container_port"]), str(d.get("proto", "tcp")))


def _range(text: str, spec: str, what: str) -> list[int]:
    m = _PORT_RANGE.fullmatch(text)
    if not m:
        raise ConfigError(f"bad port mapping {spec!r}: {what} {text!r} is not a port or a range")
    lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    for p in (lo, hi):
        if not (1 <= p <= 65535):
            raise ConfigError(f"bad port mapping {spec!r}: {what} {p} is outside 1-65535")
    if hi < lo:
        raise ConfigError(f"bad port mapping {spec!r}: {what} range {text} runs backwards")
    return list(range(lo, hi + 1))


def parse_port(spec: str) -> list[PortMapping]:
    """One `-p` value → its mappings (a range gives several)."""
    text = spec.strip()
    proto = "tcp"
    if "/" in text:
        text, proto = text.rsplit("/", 1)
        proto = proto.lower()
        if proto not in PROTOCOLS:
            raise ConfigError(f"bad port mapping {spec!r}: protocol must be tcp or udp, not {proto!r}")
    if text.startswith("["):
        raise ConfigError(f"bad port mapping {spec!r}: IPv6 host addresses are not supported (IPv4 network)")
    parts = text.split(":")
    if len(parts) == 1:
        ip, host, cont = WILDCARD, "", parts[0]
    elif len(parts) == 2:
        ip, (host, cont) = WILDCARD, parts
    elif len(parts) == 3:
        ip, host, cont = parts
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            raise ConfigError(f"bad port mapping {spec!r}: {ip!r} is not an IP address") from None
        if addr.version != 4:
            raise ConfigError(f"bad port mapping {spec!r}: IPv6 host addresses are not supported (IPv4 network)")
        ip = str(addr)
    else:
        raise ConfigError(f"bad port mapping {spec!r} (want [IP:]HOST:CONTAINER[/udp] or CONTAINER)")
    cports = _range(cont, spec, "container port")
    if host == "":
        hports = [0] * len(cports)
    else:
        hports = _range(host, spec, "host port")
        if len(cports) == 1 and len(hports) > 1:
            return [PortMapping(ip, 0, cports[0], proto, (hports[0], hports[-1]))]
        if len(hports) != len(cports):
            raise ConfigError(f"bad port mapping {spec!r}: host and container ranges differ in length")
    return [PortMapping(ip, h, c, proto) for h, c in zip(hports, cports)]


def parse_ports(specs: Iterable[str]) -> list[PortMapping]:
    out: list[PortMapping] = []
    for spec in specs:
        out.extend(parse_port(spec))
    return out


def parse_compose_port(entry: Any) -> list[PortMapping]:
    """One compose `ports:` entry: a `-p` string, a bare container port, or the long syntax."""
    if isinstance(entry, bool) or not isinstance(entry, (str, int, dict)):
        raise ConfigError(f"bad port mapping {entry!r}: want a string like \"8080:80\" or a mapping")
    if isinstance(entry, int):
        return parse_port(str(entry))
    if isinstance(entry, str):
        return parse_port(entry)
    unknown = set(map(str, entry)) - _LONG_KEYS
    if unknown:
        raise ConfigError(f"bad port mapping: unknown key(s) {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(sorted(_LONG_KEYS))})")
    if entry.get("target") in (None, ""):
        raise ConfigError("bad port mapping: the long syntax needs 'target'")
    proto = str(entry.get("protocol") or "tcp")
    text = str(entry["target"])
    if entry.get("published") not in (None, ""):
        text = f"{entry['published']}:{text}"
    if entry.get("host_ip"):
        text = f"{entry['host_ip']}:{text}" if ":" in text else f"{entry['host_ip']}::{text}"
    return parse_port(f"{text}/{proto}")


def published(mappings: Iterable[PortMapping]) -> list[PublishedPort]:
    """The host port ranges `mappings` open to others, sorted, contiguous ports merged."""
    ports = sorted({p for m in mappings if (p := m.published()) is not None})
    out: list[PublishedPort] = []
    for p in ports:
        if out and out[-1].protocol == p.protocol and p.first <= out[-1].last + 1:
            out[-1] = PublishedPort(p.protocol, out[-1].first, max(out[-1].last, p.last))
        else:
            out.append(p)
    return out
