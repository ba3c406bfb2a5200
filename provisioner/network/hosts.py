"""What a container sees of names: /etc/hosts, /etc/resolv.conf, /etc/hostname and the
environment variables of Docker's legacy --link.

Docker's --link NAME:ALIAS gives the linking container
  - an /etc/hosts line "<addr of NAME>\t<ALIAS> <NAME>", rewritten when NAME's address changes;
  - <ALIAS>_NAME=/<linker>/<ALIAS>, <ALIAS>_PORT=<proto>://<addr>:<lowest port>, and per exposed
    port <ALIAS>_PORT_<p>_<PROTO>=<proto>://<addr>:<p> with _ADDR, _PORT and _PROTO;
  - a run of consecutive exposed ports also gets _START/_END and _PORT_START/_PORT_END;
  - <ALIAS>_ENV_<K>=<V> for the linked container's own environment (minus HOME and PATH).
ALIAS in variable names is upper-cased with "-" turned into "_"; ports sort TCP first.
Env vars are fixed when the linker starts (a process environment cannot change); the allocator
keeps a container's address across restarts so they stay right, and the hosts line is
rewritten whenever it does change.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from ..fsutil import atomic_write

# Docker's fallback when the host has only loopback resolvers left (libnetwork resolvconf).
DEFAULT_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
# Where systemd-resolved keeps the real upstream servers when /etc/resolv.conf says 127.0.0.53.
RESOLVED_UPSTREAM = "/run/systemd/resolve/resolv.conf"

_BASE_HOSTS = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


@dataclass(frozen=True)
class LinkTarget:
    name: str       # the linked container
    alias: str
    address: str
    ports: tuple[tuple[int, str], ...] = ()   # its exposed ports
    env: Mapping[str, str] | None = None      # its environment, for <ALIAS>_ENV_*


def render_hosts(hostname: str, address: str, links: Iterable[LinkTarget] = (),
                 extra: Iterable[tuple[str, str]] = (), peers: Iterable[tuple[str, Iterable[str]]] = ()) -> str:
    """`extra`: --add-host lines; `peers`: (address, names) of the containers on the same
    user-defined networks (their names, service names and aliases), kept current by the manager."""
    lines = [_BASE_HOSTS]
    for host, ip in extra:
        lines.append(f"{ip}\t{host}\n")
    for link in links:
        names = [link.alias] if link.alias == link.name else [link.alias, link.name]
        lines.append(f"{link.address}\t{' '.join(names)}\n")
    for ip, names in peers:
        lines.append(f"{ip}\t{' '.join(names)}\n")
    if address:
        lines.append(f"{address}\t{hostname}\n")
    return "".join(lines)


def apply_dns(text: str, servers=(), search=(), options=()) -> str:
    """--dns/--dns-search/--dns-option (compose dns, dns_search, dns_opt) over a rendered resolv.conf:
    each given part replaces the host's."""
    keep_servers, keep_search, keep_options = [], [], []
    for line in text.splitlines():
        f = line.split()
        if f and f[0] == "nameserver":
            keep_servers.append(line)
        elif f and f[0] in ("search", "domain"):
            keep_search.append(line)
        elif f and f[0] == "options":
            keep_options.append(line)
    out = [f"nameserver {s}" for s in servers] if servers else keep_servers
    out += [f"search {' '.join(search)}"] if search else keep_search
    out += [f"options {' '.join(options)}"] if options else keep_options
    return "\n".join(out) + "\n"


def env_prefix(alias: str) -> str:
    """Docker: upper-cased, '-' → '_' (nothing else is changed)."""
    return alias.upper().replace("-", "_")


def _port_order(pp: tuple[int, str]) -> tuple[int, str, int]:
    port, proto = pp
    return (0 if proto == "tcp" else 1, proto, port)  # TCP first, then by number


def link_env(linker: str, link: LinkTarget) -> dict[str, str]:
    """The env vars Docker gives a container for `--link <link.name>:<link.alias>`."""
    p = env_prefix(link.alias)
    ip = link.address
    env: dict[str, str] = {}
    ports = sorted(set(link.ports), key=_port_order)
    start = end = None
    for i, (port, proto) in enumerate(ports):
        if i == 0:
            env[f"{p}_PORT"] = f"{proto}://{ip}:{port}"
            start = end = (port, proto)
        base = f"{p}_PORT_{port}_{proto.upper()}"
        env[base] = f"{proto}://{ip}:{port}"
        env[f"{base}_ADDR"] = ip
        env[f"{base}_PORT"] = str(port)
        env[f"{base}_PROTO"] = proto
        if i > 0 and port == end[0] + 1 and proto == end[1]:
            end = (port, proto)  # consecutive ports of one protocol form a range
            if i < len(ports) - 1:
                continue
        if end != start:
            rbase = f"{p}_PORT_{start[0]}_{start[1].upper()}"
            env[f"{rbase}_START"] = f"{start[1]}://{ip}:{start[0]}"
            env[f"{rbase}_PORT_START"] = str(start[0])
            env[f"{rbase}_END"] = f"{end[1]}://{ip}:{end[0]}"
            env[f"{rbase}_PORT_END"] = str(end[0])
        start = end = (port, proto)
    env[f"{p}_NAME"] = f"/{linker}/{link.alias}"
    for k, v in (link.env or {}).items():
        if k not in ("HOME", "PATH"):
            env[f"{p}_ENV_{k}"] = v
    return env


def render_resolv_conf(host_text: str, upstream_text: str | None = None) -> tuple[str, str | None]:
    """The container's resolv.conf from the host's: loopback nameservers cannot work from
    another network namespace, so they are dropped (as are IPv6 ones: the network is IPv4).
    If none is left, the systemd-resolved upstream list is used when given; failing that,
    Docker's public fallback. Returns (text, note) where note says when a fallback was used."""

    def usable(text: str) -> tuple[list[str], list[str]]:
        servers, other = [], []
        for line in text.splitlines():
            f = line.split()
            if not f or f[0].startswith(("#", ";")):
                continue
            if f[0] == "nameserver" and len(f) > 1:
                try:
                    addr = ipaddress.ip_address(f[1].split("%")[0])
                except ValueError:
                    continue
                if addr.version == 4 and not addr.is_loopback:
                    servers.append(str(addr))
            elif f[0] in ("search", "domain", "options"):
                other.append(" ".join(f))
        return servers, other

    servers, other = usable(host_text)
    note = None
    if not servers and upstream_text:
        servers, _ = usable(upstream_text)
        if servers:
            note = "host resolv.conf has only loopback nameservers; using systemd-resolved's upstream servers"
    if not servers:
        servers = list(DEFAULT_NAMESERVERS)
        note = ("host resolv.conf has no usable (non-loopback IPv4) nameserver; "
                f"using Docker's default {', '.join(DEFAULT_NAMESERVERS)}")
    text = "".join(f"nameserver {s}\n" for s in servers) + "".join(f"{o}\n" for o in other)
    return text, note


def read_host_resolv(path: str | os.PathLike = "/etc/resolv.conf",
                     upstream: str | os.PathLike = RESOLVED_UPSTREAM) -> tuple[str, str | None]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        text = ""
    try:
        up = Path(upstream).read_text()
    except OSError:
        up = None
    return text, up


def write_file(path: str | os.PathLike, text: str) -> None:
    """Writes a file the runtime bind-mounts into a container. A new file is written
    atomically; an existing one is rewritten in place, because a rename would leave the
    container's bind mount on the old inode (Docker rewrites /etc/hosts in place too)."""
    path = Path(path)
    if not path.exists():
        atomic_write(path, text, mode=0o644)
        return
    data = text.encode()
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
