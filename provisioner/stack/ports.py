"""Compose `ports:` entries -> the host ports a service publishes (what the firewall must open).

Short syntax: "[IP:]HOST:CONTAINER[/PROTO]" (HOST and CONTAINER may be ranges "8000-8010"), or just
"CONTAINER" (a random host port: nothing fixed to open). Long syntax: {target, published, protocol,
host_ip}. A port bound to a loopback IP is not reachable from outside, so it opens nothing.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

PROTOCOLS = ("tcp", "udp")
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


@dataclass(frozen=True, order=True)
class PublishedPort:
    protocol: str
    first: int
    last: int

    def __str__(self) -> str:
        span = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        return f"{span}/{self.protocol}"


class PortSyntaxError(ValueError):
    """Raised with a message; the stack loader adds file:line."""


def _range(text: str, what: str) -> tuple[int, int]:
    m = _RANGE.match(text.strip())
    if not m:
        raise PortSyntaxError(f"{what} {text!r} is not a port or port range")
    first = int(m.group(1))
    last = int(m.group(2) or first)
    if not (1 <= first <= last <= 65535):
        raise PortSyntaxError(f"{what} {text!r} is out of range 1-65535")
    return first, last


def _loopback(ip: str) -> bool:
    ip = ip.strip("[]")
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        raise PortSyntaxError(f"host IP {ip!r} is not an IP address") from None


def parse_port(entry) -> PublishedPort | None:
    """One compose ports entry -> the published host port range, or None when nothing is published."""
    if isinstance(entry, bool):
        raise PortSyntaxError(f"port {entry!r} must be a string like \"8080:80\"")
    if isinstance(entry, int):
        _range(str(entry), "container port")
        return None
    if isinstance(entry, dict):
        return _parse_long(entry)
    if not isinstance(entry, str):
        raise PortSyntaxError(f"port {entry!r} must be a string like \"8080:80\"")
    text, _, proto = entry.partition("/")
    proto = proto or "tcp"
    if proto not in PROTOCOLS:
        raise PortSyntaxError(f"port {entry!r}: protocol must be tcp or udp")
    # IPv6 host IPs come bracketed: "[::1]:8080:80"
    ip = None
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1:close + 2] != ":":
            raise PortSyntaxError(f"port {entry!r}: bad bracketed IP")
        ip, text = text[1:close], text[close + 2:]
    parts = text.split(":")
    if ip is None and len(parts) == 3:
        ip, parts = parts[0], parts[1:]
    if len(parts) == 1:
        _range(parts[0], "container port")
        return None
    if len(parts) != 2:
        raise PortSyntaxError(f"port {entry!r} is not \"[IP:]HOST:CONTAINER[/PROTO]\"")
    host, container = parts
    cfirst, clast = _range(container, "container port")
    if not host:  # "IP::80": random host port
        if ip is not None:
            _loopback(ip)
        return None
    first, last = _range(host, "host port")
    if (last - first) != (clast - cfirst) and first != last:
        raise PortSyntaxError(f"port {entry!r}: host and container ranges differ in length")
    if ip and _loopback(ip):
        return None
    return PublishedPort(proto, first, last)


def _parse_long(entry: dict) -> PublishedPort | None:
    unknown = set(entry) - {"target", "published", "protocol", "host_ip", "mode", "name", "app_protocol"}
    if unknown:
        raise PortSyntaxError(f"unknown port key(s): {', '.join(sorted(map(str, unknown)))}")
    if "target" not in entry:
        raise PortSyntaxError("long-syntax port needs 'target'")
    _range(str(entry["target"]), "container port")
    proto = entry.get("protocol", "tcp")
    if proto not in PROTOCOLS:
        raise PortSyntaxError(f"port protocol {proto!r} must be tcp or udp")
    if entry.get("published") in (None, ""):
        return None
    first, last = _range(str(entry["published"]), "published port")
    if entry.get("host_ip") and _loopback(str(entry["host_ip"])):
        return None
    return PublishedPort(proto, first, last)
