"""A replicated service behind its published ports: each port one DNAT rule whose target is a
named nftables map from a round-robin counter to the addresses of the replicas that are ready,

    map lb_<hash> { typeof numgen inc mod 2 : ip daddr; elements = { 0 : 10.89.1.2, 1 : 10.89.1.3 } }
    tcp dport 8080 dnat to numgen inc mod 2 map @lb_<hash> : 80 comment "prov-lb:<group>|8080:80/tcp"

so new connections take the ready replicas in turn (conntrack keeps a connection on its replica).
A change of the ready set — a replica healthy, unhealthy, stopped, gone — rewrites the map's
elements and the rule (whose modulus is the count) in one `nft -f` transaction: a connection
arriving meanwhile sees the old set or the new, never none. No ready replica: no rule (the port
refuses, as a swarm service with no healthy task does). The replicas' endpoints share a group
name; their per-container port rules are not made.

The day-2 switch (issue 13) will repoint a port through the same map.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from ..runspec.ports import WILDCARD, PortMapping

LB_TAG = "prov-lb:"


def map_name(group: str, mapping: str) -> str:
    return "lb_" + hashlib.sha256(f"{group}|{mapping}".encode()).hexdigest()[:12]


def lb_comment(group: str, mapping: str) -> str:
    return f"{LB_TAG}{group}|{mapping}"


def parse_lb_comment(comment: str) -> tuple[str, str] | None:
    if not comment.startswith(LB_TAG) or "|" not in comment:
        return None
    group, mapping = comment[len(LB_TAG):].split("|", 1)
    return group, mapping


@dataclass(frozen=True)
class ReplaceBalance:
    """One nft transaction: the group's maps refilled, its rules replaced (handles deleted, new
    ones added), maps no rule uses any more deleted."""

    table: str
    group: str
    ports: tuple[PortMapping, ...]
    addresses: tuple[str, ...]        # the ready replicas, in map order
    delete: tuple[int, ...] = ()      # rule handles
    drop_maps: tuple[str, ...] = ()

    def describe(self) -> str:
        to = ", ".join(self.addresses) or "no replica (ports closed)"
        return f"nft table {self.table}: {self.group}'s ports {', '.join(str(p) for p in self.ports)} → {to}"

    def script(self) -> str:
        t = self.table
        lines = []
        n = len(self.addresses)
        for m in self.ports if n else ():
            name = map_name(self.group, str(m))
            elements = ", ".join(f"{i} : {a}" for i, a in enumerate(self.addresses))
            lines += [f"add map ip {t} {name} {{ typeof numgen inc mod 2 : ip daddr; }}",
                      f"flush map ip {t} {name}",
                      f"add element ip {t} {name} {{ {elements} }}"]
        lines += [f"delete rule ip {t} ports handle {h}" for h in self.delete]
        for m in self.ports if n else ():
            match = "" if m.host_ip == WILDCARD else f"ip daddr {m.host_ip} "
            lines.append(f"add rule ip {t} ports {match}{m.proto} dport {m.host_port} dnat to numgen inc mod {n} "
                         f'map @{map_name(self.group, str(m))} : {m.container_port} comment '
                         f'"{lb_comment(self.group, str(m))}"')
        lines += [f"delete map ip {t} {name}" for name in self.drop_maps]
        return "\n".join(lines) + "\n"


def plan_balance(table: str, group: str, ports: Sequence[PortMapping], addresses: Iterable[str],
                 rules: Mapping[str, Sequence[tuple[int, str]]], maps: Mapping[str, tuple[str, ...]]
                 ) -> ReplaceBalance | None:
    """`rules`: the table's balanced rules by group ((handle, mapping), ...); `maps`: its lb maps
    and their addresses. None when the table already says what is wanted."""
    addresses = tuple(addresses)
    have = tuple(rules.get(group, ()))
    wanted = {map_name(group, str(m)) for m in ports} if addresses else set()
    mine = {map_name(group, m) for _, m in have} | {map_name(group, str(m)) for m in ports}
    current = all(maps.get(name) == addresses for name in wanted) and \
        sorted(m for _, m in have) == (sorted(str(m) for m in ports) if addresses else [])
    stale = tuple(sorted(n for n in mine if n in maps and n not in wanted))
    if current and not stale:
        return None
    return ReplaceBalance(table, group, tuple(ports), addresses, tuple(h for h, _ in have), stale)


def parse_table(items: list[dict]) -> tuple[dict[str, tuple[tuple[int, str], ...]], dict[str, tuple[str, ...]]]:
    """From `nft -j -a list table`: the balanced rules by group, and the lb maps' addresses."""
    rules: dict[str, list[tuple[int, str]]] = {}
    maps: dict[str, tuple[str, ...]] = {}
    for item in items:
        rule = item.get("rule")
        if rule and rule.get("chain") == "ports":
            tag = parse_lb_comment(rule.get("comment") or "")
            if tag:
                rules.setdefault(tag[0], []).append((int(rule["handle"]), tag[1]))
        m = item.get("map")
        if m and str(m.get("name", "")).startswith("lb_"):
            elems = sorted((int(k), str(v)) for k, v in (m.get("elem") or []))
            maps[m["name"]] = tuple(v for _, v in elems)
    return {k: tuple(v) for k, v in rules.items()}, maps
