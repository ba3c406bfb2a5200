"""What a container's /etc/hosts says, kept current: its own name, its --add-host lines, its
--link targets, and on every user-defined network it is on, every container there (itself
included) under its container name and its aliases (a compose service's name is one) — the names
Docker's embedded DNS would answer. The default bridge resolves no names, as Docker's.

Whenever an endpoint comes, goes or changes, the hosts files of the endpoints that share a
network with it or link to it are rewritten in place (bench/RESULTS.md: measured against an
embedded resolver, this is what was chosen).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from . import hosts
from .model import DEFAULT_NETWORK, Endpoint


def link_targets(eps: dict[str, Endpoint], ep: Endpoint) -> list[hosts.LinkTarget]:
    out = []
    for target, alias in ep.links:
        t = eps.get(target)
        if t is not None:
            out.append(hosts.LinkTarget(target, alias, t.address, t.exposed))
    return out


def network_lines(eps: dict[str, Endpoint], network: str) -> list[tuple[str, list[str]]]:
    """(address, names) of every container on `network`, by name."""
    out = []
    for other in sorted(eps.values(), key=lambda e: e.name):
        o = other.on(network)
        if o is not None:
            out.append((o.address, list(dict.fromkeys([*o.aliases, other.name]))))
    return out


def peers(eps: dict[str, Endpoint], ep: Endpoint, cache: dict | None = None) -> list[tuple[str, list[str]]]:
    """The lines of `ep`'s user-defined networks; `cache` (network → lines) shares them between the
    files one refresh rewrites, so a change costs one pass over the endpoints, not one per file."""
    cache = {} if cache is None else cache
    out: list[tuple[str, list[str]]] = []
    for att in ep.attachments:
        if att.network == DEFAULT_NETWORK:
            continue
        if att.network not in cache:
            cache[att.network] = network_lines(eps, att.network)
        out += cache[att.network]
    return out


def render(eps: dict[str, Endpoint], ep: Endpoint, cache: dict | None = None) -> str:
    return hosts.render_hosts(ep.hostname, ep.address, link_targets(eps, ep), ep.extra_hosts, peers(eps, ep, cache))


def write_files(ep: Endpoint, eps: dict[str, Endpoint], resolv: str) -> None:
    d = Path(ep.files_dir)
    d.mkdir(parents=True, exist_ok=True)
    hosts.write_file(d / "hosts", render(eps, ep))
    hosts.write_file(d / "resolv.conf", hosts.apply_dns(resolv, *ep.dns) if any(ep.dns) else resolv)
    hosts.write_file(d / "hostname", ep.hostname + "\n")


def affected(eps: dict[str, Endpoint], name: str, networks: Iterable[str]) -> list[Endpoint]:
    """The endpoints whose hosts files mention `name` (on `networks`, or by a link)."""
    nets = {n for n in networks if n != DEFAULT_NETWORK}
    return [e for e in eps.values()
            if any(t == name for t, _ in e.links) or any(a.network in nets for a in e.attachments)]


def refresh(eps: dict[str, Endpoint], name: str, networks: Iterable[str]) -> list[str]:
    """Rewrites (in place) the hosts files that mention `name`; returns whose."""
    changed = []
    cache: dict = {}
    for e in affected(eps, name, networks):
        if e.name != name and Path(e.files_dir).is_dir():
            hosts.write_file(Path(e.files_dir) / "hosts", render(eps, e, cache))
            changed.append(e.name)
    return changed
