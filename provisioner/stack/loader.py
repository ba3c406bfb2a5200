"""`load_stack(path) -> Stack`: read a stack file once, validate all of it, point errors at file:line.

Top-level keys: name, hosts, services, volumes. `services:` entries are compose service entries
(services.py), `hosts:` say where they run (hosts.py). A file without `hosts:` is a stack to
bring up on this machine (`provision up`); deploying and launching need hosts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import yamlutil
from ..errors import ConfigError, StackError
from .fields import Fields
from .hosts import NAME_HINT, NAME_RE, parse_host
from .model import Stack
from .services import parse_services

TOP_KEYS = {"name", "hosts", "services", "volumes"}


def load_stack(path: str | Path, *, hosts_required: bool = True) -> Stack:
    path = str(path)
    try:
        doc = yamlutil.load(path)
    except StackError:
        raise
    except ConfigError as err:
        raise StackError(err.message.split(": ", 1)[-1] if err.path else err.message, err.path, err.line) from None
    return parse_stack(doc, path, hosts_required=hosts_required)


def parse_stack(doc: Any, path: str, *, hosts_required: bool = True) -> Stack:
    f = Fields(path)
    if not isinstance(doc, dict):
        raise StackError("a stack file must be a mapping with keys name, hosts, services", path,
                         yamlutil.line_of(doc) if doc is not None else None)
    f.keys(doc, TOP_KEYS, "the stack")
    if doc.get("name") is None:
        raise f.fail(f"the stack needs a 'name' ({NAME_HINT})", doc)
    f.string(doc, "name", "stack", pattern=NAME_RE, hint=NAME_HINT)
    raw = doc.get("services")
    if isinstance(raw, dict):
        for sname in raw:
            if not isinstance(sname, str) or not NAME_RE.fullmatch(sname):
                raise f.fail(f"service name {sname!r} is not valid (lowercase letters, digits, '-')", raw, sname)
    hosts_raw = doc.get("hosts")
    if hosts_raw is None and not hosts_required:
        hosts_raw = []
    elif not isinstance(hosts_raw, list) or not hosts_raw:
        raise f.fail("'hosts' must be a non-empty list of hosts", doc, "hosts" if "hosts" in doc else None)
    hosts, seen = [], set()
    for i, h in enumerate(hosts_raw):
        if not isinstance(h, dict):
            raise f.fail(f"hosts[{i}] must be a mapping", hosts_raw, i)
        host = parse_host(f, h, raw if isinstance(raw, dict) else {})
        if host.name in seen:
            raise f.fail(f"duplicate host name {host.name!r}", h, "name")
        seen.add(host.name)
        hosts.append(host)
    services, order, volumes = parse_services(f, raw, doc.get("volumes"))
    stack = Stack(name=doc["name"], path=path, hosts=tuple(hosts), services=services, order=order, volumes=volumes)
    for host in stack.hosts:
        _metrics_port_free(f, stack, host)
    return stack


def _metrics_port_free(f: Fields, stack: Stack, host) -> None:
    """The metrics port is the agent's own listener: not SSH's, not a published service port."""
    if host.metrics is None:
        return
    port = host.metrics.port
    taken = [f"{p}" for p in stack.published_ports(host) if p.protocol == "tcp" and p.first <= port <= p.last]
    if port == 22 or taken:
        what = "SSH" if port == 22 else f"published port {taken[0]}"
        raise StackError(f"hosts.{host.name}.metrics.port: {port} is already the host's {what}; pick another",
                         f.path, host.metrics.line)
