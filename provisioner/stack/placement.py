"""Which services run on which host: a stack's `hosts[].services`, checked before anything is launched.

A service runs on exactly one host, and what it links to or depends on runs on the same host
(links and depends_on are host-local, as in Docker: another host's service is reached through
its published ports instead).
"""
from __future__ import annotations

from ..errors import StackError
from .model import Stack


def check_placement(stack: Stack) -> None:
    owner: dict[str, str] = {}
    for h in stack.hosts:
        for s in h.services:
            if s in owner:
                raise StackError(f"service {s!r} is placed on hosts {owner[s]!r} and {h.name!r}; place it on one "
                                 "(run a second copy as a second service)", stack.path, h.line)
            owner[s] = h.name
    for name, spec in stack.services.items():
        if name not in owner:
            raise StackError(f"service {name!r} is placed on no host (add it to a host's services:)", stack.path,
                             spec.line)
        for dep in spec.dependencies():
            if owner.get(dep) != owner[name]:
                raise StackError(f"service {name!r} on host {owner[name]!r} links to or depends on {dep!r}, which "
                                 f"runs on {owner.get(dep)!r}; links and depends_on stay on one host (reach another "
                                 "host's service through its published ports)", stack.path, spec.line)


def for_host(stack: Stack, host: str) -> Stack:
    """The stack with only the services placed on `host`, in dependency order."""
    try:
        placed = set(stack.host(host).services)
    except KeyError:
        known = ", ".join(h.name for h in stack.hosts)
        raise StackError(f"host {host!r} is not in stack {stack.name!r} (hosts: {known})", stack.path) from None
    check_placement(stack)
    return stack.only(placed)
