"""Pure planning: facts + the desired endpoint → a list of frozen actions.

Nothing here touches the system; `apply.py` turns actions into commands. Planning against a
converged system returns an empty list (idempotence).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..errors import ContainerError

from ..runspec.ports import parse_port
from .balance import ReplaceBalance, map_name
from .chains import port_chain
from .facts import NetFacts, rule_comment
from .model import Endpoint, NetworkConfig


@dataclass(frozen=True)
class SetSysctl:
    key: str
    value: str

    def describe(self) -> str:
        return f"set sysctl {self.key}={self.value}"


@dataclass(frozen=True)
class CreateBridge:
    name: str
    address: str  # CIDR, e.g. 10.88.0.1/16

    def describe(self) -> str:
        return f"create bridge {self.name} with {self.address}"


@dataclass(frozen=True)
class CreateTable:
    table: str
    bridge: str
    subnet: str
    internal: bool = False      # no NAT, nothing forwarded off the bridge

    def describe(self) -> str:
        if self.internal:
            return f"create nftables table ip {self.table} ({self.subnet} on {self.bridge}, internal: no way out)"
        return f"create nftables table ip {self.table} (NAT for {self.subnet} via {self.bridge})"


@dataclass(frozen=True)
class UpgradeTable:
    table: str
    bridge: str
    subnet: str
    internal: bool = False
    carry: tuple["PortRule", ...] = ()           # an older table's published ports, moved to port chains
    balance: tuple[ReplaceBalance, ...] = ()     # and its balanced ones (replicated services)

    def describe(self) -> str:
        return f"upgrade nftables table ip {self.table} to this version's rules" + (
            f" ({len(self.carry)} published port(s) carried over)" if self.carry else "") + (
            f" ({len(self.balance)} balanced service(s) carried over)" if self.balance else "")


@dataclass(frozen=True)
class SetMetadataAccess:
    """A container's address in (allow) or out of the table's set @metadata_ok."""

    table: str
    address: str
    allow: bool

    def describe(self) -> str:
        return f"{'allow' if self.allow else 'deny'} {self.address} the instance metadata service"


@dataclass(frozen=True)
class CreateNetns:
    name: str

    def describe(self) -> str:
        return f"create network namespace {self.name}"


@dataclass(frozen=True)
class CreateVeth:
    host: str
    bridge: str
    netns_path: str
    inner: str
    address: str  # CIDR
    gateway: str  # "": no default route through this interface (a second network, an internal one)

    def describe(self) -> str:
        return f"create veth {self.host} on {self.bridge} ↔ {self.inner} {self.address} in {self.netns_path}"


@dataclass(frozen=True)
class PortRule:
    comment: str
    host_ip: str
    host_port: int
    proto: str
    container_ip: str
    container_port: int

    @property
    def chain(self) -> str:
        """The port's own chain, which the table's port maps jump to: p_<proto>_<address|any>_<port>."""
        return port_chain(self.proto, self.host_ip, self.host_port)


@dataclass(frozen=True)
class ReplacePortRules:
    """One nft transaction (all or nothing): the ports whose chains are in `delete` and not
    published again by `add` are unpublished; the others in `add` are published, or — when
    their chain is in `delete` too — repointed in place: the chain flushed and given its new
    DNAT rule, so no packet ever finds the port unpublished (a start-first switch)."""

    table: str
    delete: tuple[str, ...] = ()       # chain names (facts.rules)
    add: tuple[PortRule, ...] = ()

    def describe(self) -> str:
        parts = []
        moved = {r.chain for r in self.add} & set(self.delete)
        gone = [c for c in self.delete if c not in moved]
        if gone:
            parts.append(f"unpublish {len(gone)} port(s)")
        if self.add:
            parts.append(("repoint " if moved else "publish ") + ", ".join(
                f"{r.host_ip}:{r.host_port}/{r.proto}→{r.container_ip}:{r.container_port}" for r in self.add))
        return f"nft table {self.table}: " + "; ".join(parts)


@dataclass(frozen=True)
class DeleteLink:
    name: str
    if_present: bool = False   # a link the kernel may be removing by itself meanwhile

    def describe(self) -> str:
        return f"delete link {self.name}"


@dataclass(frozen=True)
class DeleteNetns:
    name: str

    def describe(self) -> str:
        return f"delete network namespace {self.name}"


@dataclass(frozen=True)
class DeleteTable:
    table: str

    def describe(self) -> str:
        return f"delete nftables table ip {self.table}"


Action = (SetSysctl | CreateBridge | CreateTable | UpgradeTable | CreateNetns | CreateVeth | ReplacePortRules
          | SetMetadataAccess | DeleteLink | DeleteNetns | DeleteTable | ReplaceBalance)


def port_rules(ep: Endpoint) -> tuple[PortRule, ...]:
    return tuple(PortRule(rule_comment(ep.name, str(m)), m.host_ip, m.host_port, m.proto, ep.address,
                          m.container_port) for m in ep.ports)


def check_subnet(facts: NetFacts, cfg: NetworkConfig) -> None:
    """Refuses a container subnet that overlaps an address on another interface (podman's
    default network is 10.88.0.0/16 too): routes would clash and traffic go astray."""
    for ifname, cidr in facts.interface_networks:
        if ifname == cfg.bridge:
            continue
        net = ipaddress.IPv4Interface(cidr).network
        if net.overlaps(cfg.network) and not net.is_loopback:
            raise ContainerError(f"container subnet {cfg.subnet} overlaps {cidr} on {ifname}; "
                                 f"choose another subnet for the container network")


def carry_balanced(facts: NetFacts, cfg: NetworkConfig) -> tuple[ReplaceBalance, ...]:
    """An older table's balanced rules (in its `ports` chain, which the upgrade empties) as port
    chains over the same lb maps: the replicas that were ready stay so, with no gap."""
    by_group: dict[str, list[str]] = {}
    for group, mapping in facts.legacy_balanced:
        by_group.setdefault(group, []).append(mapping)
    out = []
    for group, mappings in sorted(by_group.items()):
        addresses = facts.lb_maps.get(map_name(group, mappings[0]), ())
        ports = tuple(m for mapping in mappings for m in parse_port(mapping))
        if addresses:
            out.append(ReplaceBalance(cfg.table, group, ports, addresses))
    return tuple(out)


def plan_infrastructure(facts: NetFacts, cfg: NetworkConfig) -> list[Action]:
    actions: list[Action] = []
    if facts.ip_forward != "1":
        actions.append(SetSysctl("net.ipv4.ip_forward", "1"))
    if cfg.bridge not in facts.links:
        actions.append(CreateBridge(cfg.bridge, f"{cfg.gateway}/{cfg.network.prefixlen}"))
    if facts.route_localnet != "1":
        # Lets 127.0.0.1 → published port be DNAT-ed out of the bridge (see apply.table_script).
        actions.append(SetSysctl(f"net.ipv4.conf.{cfg.bridge}.route_localnet", "1"))
    if not facts.table_exists:
        actions.append(CreateTable(cfg.table, cfg.bridge, cfg.subnet, cfg.internal))
    elif not facts.table_current:
        carry = tuple(PortRule(rule_comment(r.container, r.mapping), m.host_ip, m.host_port, m.proto, r.address,
                               r.port) for r in facts.legacy for m in parse_port(r.mapping))
        actions.append(UpgradeTable(cfg.table, cfg.bridge, cfg.subnet, cfg.internal, carry,
                                    carry_balanced(facts, cfg)))
    return actions


def plan_connect(facts: NetFacts, cfg: NetworkConfig, ep: Endpoint) -> list[Action]:
    actions = plan_infrastructure(facts, cfg)
    new_netns = ep.owns_netns and ep.netns_name not in facts.netns
    if new_netns:
        actions.append(CreateNetns(ep.netns_name))
    veth = ep.veth in facts.links
    if veth and (new_netns or ep.veth not in facts.bridged):
        # A leftover, not this endpoint's link: its peer is in a namespace being torn down (the
        # kernel removes a deleted netns's links asynchronously, so the host end can outlive
        # `ip netns del` for a moment), or the bridge it was on is gone.
        actions.append(DeleteLink(ep.veth, if_present=True))
        veth = False
    if not veth:
        actions.append(CreateVeth(ep.veth, cfg.bridge, ep.netns_path, cfg.inner_ifname,
                                  f"{ep.address}/{ep.prefixlen}", ep.gateway))
    want = () if ep.standby else port_rules(ep)
    have = facts.rules.get(ep.name, ())
    if sorted(r.comment for r in want) != sorted(rule_comment(ep.name, m) for _, m in have):
        actions.append(ReplacePortRules(cfg.table, tuple(c for c, _ in have), want))
    if ep.metadata != (ep.address in facts.metadata_ok):   # an earlier holder's opt-in goes too
        actions.append(SetMetadataAccess(cfg.table, ep.address, ep.metadata))
    return actions


def plan_remove_network(facts: NetFacts, cfg: NetworkConfig) -> list[Action]:
    """A user-defined network with nobody on it: its table and bridge go."""
    actions: list[Action] = []
    if facts.table_exists:
        actions.append(DeleteTable(cfg.table))
    if cfg.bridge in facts.links:
        actions.append(DeleteLink(cfg.bridge, if_present=True))
    return actions


def plan_takeover(facts: NetFacts, cfg: NetworkConfig, new: Endpoint, old: str) -> list[Action]:
    """`new` (standing by with the same published ports) takes them over from container `old`:
    one transaction repointing each port's chain; ports only `old` had are unpublished."""
    have = tuple(c for c, _ in facts.rules.get(old, ()))
    return [ReplacePortRules(cfg.table, have, port_rules(new))] if have or new.ports else []


def plan_disconnect(facts: NetFacts, cfg: NetworkConfig, name: str, *, netns_name: str | None,
                    last: bool, veth: str | None = None, address: str | None = None) -> list[Action]:
    """Removes what `name` has, found from the facts (works after a half-done connect too).
    `netns_name`: the named netns we created for it (None when the caller gave a path).
    `last`: no other endpoint remains, so the bridge and table go too. `veth`: its host end on
    this network (default: the default network's name for it). `address`: its address on this
    network (its metadata opt-in goes with it)."""
    actions: list[Action] = []
    rules = facts.rules.get(name, ())
    if rules and not last:
        actions.append(ReplacePortRules(cfg.table, tuple(c for c, _ in rules)))
    if address in facts.metadata_ok and not last:
        actions.append(SetMetadataAccess(cfg.table, address, False))
    veth = veth or cfg.veth_name(name)
    if veth in facts.links:
        actions.append(DeleteLink(veth))  # takes the peer in the namespace with it
    if netns_name and netns_name in facts.netns:
        actions.append(DeleteNetns(netns_name))
    if last:
        if facts.table_exists:
            actions.append(DeleteTable(cfg.table))
        if cfg.bridge in facts.links:
            actions.append(DeleteLink(cfg.bridge))
    return actions
