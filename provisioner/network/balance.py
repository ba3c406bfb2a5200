"""A replicated service behind its published ports: each port has its own chain (chains.py),
as every published port does, and that chain's one rule is a DNAT whose target is a named
nftables map from a round-robin counter to the addresses of the replicas that are ready,

    map lb_<hash> { typeof numgen inc mod 2 : ip daddr; elements = { 0 : 10.89.1.2, 1 : 10.89.1.3 } }
    chain p_tcp_any_8080 {
      meta l4proto tcp dnat to numgen inc mod 2 map @lb_<hash> : 80 comment "prov-lb:<group>|8080:80/tcp"
    }
    (in @wild4: tcp . 8080 : goto p_tcp_any_8080)

so new connections take the ready replicas in turn (conntrack keeps a connection on its replica).
A change of the ready set — a replica healthy, unhealthy, stopped, gone — refills the map and
replaces the chain's rule (whose modulus is the count) in one `nft -f` transaction, as a
single container's port is repointed: a connection arriving meanwhile sees the old set or the
new, never none. No ready replica: the chain and its map element go (the port refuses, as a
swarm service with no healthy task does). The replicas' endpoints share a group name; their
per-container port rules are not made. A table from before the port chains had these rules in
the `ports` chain itself: its upgrade carries them into port chains (plan.UpgradeTable).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from ..runspec.ports import PortMapping
from .chains import PORT_CHAIN, key_of_chain, map_key, port_chain

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
    """One nft transaction: the group's maps refilled, its port chains given their new rule (or,
    with no ready replica or a port no longer published, removed with their map element), maps no
    rule uses any more deleted."""

    table: str
    group: str
    ports: tuple[PortMapping, ...]
    addresses: tuple[str, ...]        # the ready replicas, in map order
    delete: tuple[str, ...] = ()      # the group's port chains now (facts.balanced)
    drop_maps: tuple[str, ...] = ()

    def describe(self) -> str:
        to = ", ".join(self.addresses) or "no replica (ports closed)"
        return f"nft table {self.table}: {self.group}'s ports {', '.join(str(p) for p in self.ports)} → {to}"

    def script(self) -> str:
        t = self.table
        n = len(self.addresses)
        wanted = {port_chain(m.proto, m.host_ip, m.host_port): m for m in self.ports} if n else {}
        lines = []
        for m in wanted.values():
            name = map_name(self.group, str(m))
            elements = ", ".join(f"{i} : {a}" for i, a in enumerate(self.addresses))
            lines += [f"add map ip {t} {name} {{ typeof numgen inc mod 2 : ip daddr; }}",
                      f"flush map ip {t} {name}",
                      f"add element ip {t} {name} {{ {elements} }}"]
        for chain in self.delete:
            if chain in wanted:
                lines.append(f"flush chain ip {t} {chain}")       # given its new rule below
                continue
            vmap, key = key_of_chain(chain)
            lines += [f"delete element ip {t} {vmap} {{ {key} }}", f"flush chain ip {t} {chain}",
                      f"delete chain ip {t} {chain}"]
        for chain, m in wanted.items():
            if chain not in self.delete:
                lines.append(f"add chain ip {t} {chain}")
            lines.append(f"add rule ip {t} {chain} meta l4proto {m.proto} dnat to numgen inc mod {n} "
                         f'map @{map_name(self.group, str(m))} : {m.container_port} comment '
                         f'"{lb_comment(self.group, str(m))}"')
            if chain not in self.delete:
                vmap, key = map_key(m.proto, m.host_ip, m.host_port)
                lines.append(f"add element ip {t} {vmap} {{ {key} : goto {chain} }}")
        lines += [f"delete map ip {t} {name}" for name in self.drop_maps]
        return "\n".join(lines) + "\n" if lines else ""


def plan_balance(table: str, group: str, ports: Sequence[PortMapping], addresses: Iterable[str],
                 rules: Mapping[str, Sequence[tuple[str, str]]], maps: Mapping[str, tuple[str, ...]]
                 ) -> ReplaceBalance | None:
    """`rules`: the table's balanced port chains by group ((chain, mapping), ...); `maps`: its lb
    maps and their addresses. None when the table already says what is wanted."""
    addresses = tuple(addresses)
    have = tuple(rules.get(group, ()))
    wanted = {map_name(group, str(m)) for m in ports} if addresses else set()
    mine = {map_name(group, m) for _, m in have} | {map_name(group, str(m)) for m in ports}
    current = all(maps.get(name) == addresses for name in wanted) and \
        sorted(m for _, m in have) == (sorted(str(m) for m in ports) if addresses else [])
    stale = tuple(sorted(n for n in mine if n in maps and n not in wanted))
    if current and not stale:
        return None
    return ReplaceBalance(table, group, tuple(ports), addresses, tuple(dict.fromkeys(c for c, _ in have)), stale)


def parse_table(items: list[dict]) -> tuple[dict[str, tuple[tuple[str, str], ...]], dict[str, tuple[str, ...]],
                                             tuple[tuple[str, str], ...]]:
    """From `nft -j -a list table`: the balanced port chains by group ((chain, mapping), ...), the
    lb maps' addresses, and the balanced rules an older table kept in its `ports` chain itself
    ((group, mapping), ...: what its upgrade carries into port chains)."""
    rules: dict[str, list[tuple[str, str]]] = {}
    maps: dict[str, tuple[str, ...]] = {}
    legacy: list[tuple[str, str]] = []
    for item in items:
        rule = item.get("rule")
        if rule:
            tag = parse_lb_comment(rule.get("comment") or "")
            chain = str(rule.get("chain", ""))
            if tag and chain.startswith(PORT_CHAIN):
                rules.setdefault(tag[0], []).append((chain, tag[1]))
            elif tag and chain == "ports":
                legacy.append(tag)
        m = item.get("map")
        if m and str(m.get("name", "")).startswith("lb_"):
            elems = sorted((int(k), str(v)) for k, v in (m.get("elem") or []))
            maps[m["name"]] = tuple(v for _, v in elems)
    return {k: tuple(v) for k, v in rules.items()}, maps, tuple(legacy)
