"""Turns network actions into `ip`, `nft` and `sysctl` commands, run through the Runner.

How published ports work (the nftables table is ours alone, `table ip <cfg.table>`, so its
deletion is an exact teardown and Docker/podman rules elsewhere are never touched):

  guard (filter, raw)       127.0.0.0/8 arriving by any interface but lo → drop: such a packet
                            is a martian, but the DNAT below runs before the kernel's martian
                            check, so without this a LAN neighbour routing 127.0.0.1 via this
                            host would reach ports published on 127.0.0.1 only (Docker 28 drops
                            these in its raw table too; so are containers' packets to it)
  prerouting (nat, dstnat)  fib daddr type local → jump ports   traffic from other hosts and
                                                                  from containers to the host
  output     (nat, -100)    fib daddr type local → jump ports   the host's own connections,
                                                                  127.0.0.1 included
  ports                     two verdict-map lookups: (address, proto, port) in @bound4 for
                            ports published on one address, (proto, port) in @wild4 for the
                            rest; each element jumps to the port's own chain p_<proto>_<addr|any>_<port>
                            holding its one DNAT rule, commented "prov:<name>|<mapping>" — or, for
                            a replicated service, "prov-lb:<group>|<mapping>": a numgen DNAT over
                            its ready replicas (balance.py). Moving a port to another container (a
                            start-first switch) or another set of replicas flushes that chain and
                            adds the new rule in one transaction: no packet sees it unpublished
  postrouting (nat, srcnat) subnet leaving by another interface → masquerade (egress NAT)
                            127.0.0.0/8 leaving by the bridge   → masquerade (see below)
                            DNAT-ed subnet traffic back into the bridge → masquerade (hairpin)
  input (filter)            drop new connections from a container to the host's 127.0.0.0/8,
                            which route_localnet would let in (CVE-2020-8558; kube-proxy's fix);
                            replies to DNAT-ed 127.0.0.1 traffic still pass; and drop a
                            container's packets to the metadata address (on this host) unless
                            it is in @metadata_ok
  forward (filter)          from the bridge: accepted, but not to the instance metadata address
                            (169.254.169.254: the cloud's credentials) unless the container opted
                            in (its address in the set @metadata_ok); to the bridge: only replies
                            and DNAT-ed (published) traffic, the rest dropped — a LAN host routing
                            the containers' subnet via this host reaches no unpublished port
                            (Docker 28 does the same). A drop in another table still wins.

We chose kernel DNAT over a userland proxy for 127.0.0.1: no process per port, no copying.
Linux refuses to route a packet with a 127.x source out of a non-loopback device unless that
device has route_localnet=1, so the bridge gets it (the plan sets it); the masquerade then
gives the packet the bridge address as source, so the container's reply comes back to the host
and conntrack un-NATs it. This mirrors Docker with `--userland-proxy=false` (which also puts
bridge ports in hairpin mode, as CreateVeth does here).
"""
from __future__ import annotations

import logging
from typing import Iterable

from ..errors import CommandError
from .balance import ReplaceBalance
from .plan import (
    Action, CreateBridge, CreateNetns, CreateTable, CreateVeth, DeleteLink, DeleteNetns, DeleteTable, PortRule,
    ReplacePortRules, SetMetadataAccess, SetSysctl, UpgradeTable,
)
from .chains import key_of_chain, map_key

log = logging.getLogger(__name__)


METADATA = "169.254.169.254"   # AWS, GCE and Azure: the instance metadata service
CHAINS = ("guard", "prerouting", "output", "postrouting", "input", "forward")   # all but `ports`


def table_script(table: str, bridge: str, subnet: str, internal: bool = False) -> str:
    """Also isolation, as Docker's DOCKER-ISOLATION chains give it: nothing reaches the bridge from
    another network or interface but replies, published ports and its own traffic (a drop in any
    table wins). An internal network has no NAT, and nothing leaves its bridge."""
    egress = "" if internal else f'    ip saddr {subnet} oifname != "{bridge}" masquerade\n'
    confined = f'    iifname "{bridge}" oifname != "{bridge}" drop\n' if internal else ""
    return f"""table ip {table} {{
  set metadata_ok {{
    type ipv4_addr;
  }}
  map bound4 {{
    type ipv4_addr . inet_proto . inet_service : verdict;
  }}
  map wild4 {{
    type inet_proto . inet_service : verdict;
  }}
  chain ports {{
    ip daddr . meta l4proto . th dport vmap @bound4
    meta l4proto . th dport vmap @wild4
  }}
  chain guard {{
    type filter hook prerouting priority raw; policy accept;
    iifname != "lo" ip daddr 127.0.0.0/8 drop
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local jump ports
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
    fib daddr type local jump ports
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
{egress}    oifname "{bridge}" ip saddr 127.0.0.0/8 masquerade
    oifname "{bridge}" ip saddr {subnet} ct status dnat masquerade
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "{bridge}" ip daddr 127.0.0.0/8 ct state {{ new, invalid, untracked }} drop
    iifname "{bridge}" ip daddr {METADATA} ip saddr != @metadata_ok drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{bridge}" ip daddr {METADATA} ip saddr != @metadata_ok drop
    oifname "{bridge}" ct state established,related accept
    oifname "{bridge}" ct status dnat accept
{confined}    iifname "{bridge}" accept
    oifname "{bridge}" drop
  }}
}}
"""


def upgrade_script(table: str, bridge: str, subnet: str, internal: bool = False, carry: Iterable[PortRule] = (),
                   balance: Iterable[ReplaceBalance] = ()) -> str:
    """An older version's table brought to this one in one transaction: its base chains and the
    `ports` chain emptied and filled again (chains and maps it lacks are created); the published
    ports' chains and the set's elements stay, and `carry` — the DNAT rules an older `ports` chain
    held itself — become port chains, as do `balance`'s (a replicated service's numgen rules)."""
    full = table_script(table, bridge, subnet, internal)
    # first every chain, set and map declared (created where missing, hooks included), then the
    # chains emptied, then the rules: a rule is never added twice, whatever the table had
    skeleton = "\n".join(line for line in full.splitlines()
                         if line.strip().startswith(("table ", "set ", "map ", "chain ", "type ", "}")))
    flush = "".join(f"flush chain ip {table} {c}\n" for c in (*CHAINS, "ports"))
    return (skeleton + "\n" + flush + full + ports_script(ReplacePortRules(table, (), tuple(carry)))
            + "".join(b.script() for b in balance))


def _quote(comment: str) -> str:
    return '"' + comment.replace("\\", "").replace('"', "") + '"'


def _map_key(r: PortRule) -> tuple[str, str]:
    return map_key(r.proto, r.host_ip, r.host_port)


def rule_text(table: str, r: PortRule) -> str:
    return (f"add rule ip {table} {r.chain} meta l4proto {r.proto} "
            f"dnat to {r.container_ip}:{r.container_port} comment {_quote(r.comment)}")


def ports_script(a: ReplacePortRules) -> str:
    """One `nft -f` transaction (see ReplacePortRules): unpublish, repoint, publish."""
    adding = {r.chain for r in a.add}
    lines = []
    for chain in a.delete:
        if chain in adding:
            lines.append(f"flush chain ip {a.table} {chain}")       # repointed below
            continue
        m, key = key_of_chain(chain)
        lines += [f"delete element ip {a.table} {m} {{ {key} }}", f"flush chain ip {a.table} {chain}",
                  f"delete chain ip {a.table} {chain}"]
    for r in a.add:
        if r.chain not in a.delete:
            m, key = _map_key(r)
            lines.append(f"add chain ip {a.table} {r.chain}")
            lines.append(rule_text(a.table, r))
            lines.append(f"add element ip {a.table} {m} {{ {key} : goto {r.chain} }}")
        else:
            lines.append(rule_text(a.table, r))
    return "\n".join(lines) + "\n" if lines else ""


def _in_ns(path: str, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net={path}", *argv]


def commands(action: Action) -> list[tuple[list[str], str | None]]:
    """The (argv, stdin) list that carries out one action."""
    a = action
    if isinstance(a, SetSysctl):
        return [(["sysctl", "-q", "-w", f"{a.key}={a.value}"], None)]
    if isinstance(a, CreateBridge):
        return [(["ip", "link", "add", a.name, "type", "bridge"], None),
                (["ip", "addr", "add", a.address, "dev", a.name], None),
                (["ip", "link", "set", a.name, "up"], None)]
    if isinstance(a, CreateTable):
        return [(["nft", "-f", "-"], table_script(a.table, a.bridge, a.subnet, a.internal))]
    if isinstance(a, UpgradeTable):
        return [(["nft", "-f", "-"], upgrade_script(a.table, a.bridge, a.subnet, a.internal, a.carry, a.balance))]
    if isinstance(a, SetMetadataAccess):
        verb = "add" if a.allow else "delete"
        return [(["nft", f"{verb} element ip {a.table} metadata_ok {{ {a.address} }}"], None)]
    if isinstance(a, CreateNetns):
        return [(["ip", "netns", "add", a.name], None)]
    if isinstance(a, CreateVeth):
        return [(["ip", "link", "add", a.host, "type", "veth", "peer", "name", a.inner, "netns", a.netns_path], None),
                (["ip", "link", "set", a.host, "master", a.bridge], None),
                # Hairpin: a container reaching its own published port comes back, DNAT-ed, out
                # of the very bridge port it came in by; the bridge drops that unless the port
                # is in hairpin mode (Docker sets it too when it runs without userland proxy).
                (["ip", "link", "set", a.host, "type", "bridge_slave", "hairpin", "on"], None),
                (["ip", "link", "set", a.host, "up"], None),
                (_in_ns(a.netns_path, ["ip", "link", "set", "lo", "up"]), None),
                (_in_ns(a.netns_path, ["ip", "addr", "add", a.address, "dev", a.inner]), None),
                (_in_ns(a.netns_path, ["ip", "link", "set", a.inner, "up"]), None)] + \
            ([(_in_ns(a.netns_path, ["ip", "route", "add", "default", "via", a.gateway]), None)] if a.gateway else [])
    if isinstance(a, ReplacePortRules):
        return [(["nft", "-f", "-"], ports_script(a))] if (a.delete or a.add) else []
    if isinstance(a, ReplaceBalance):
        return [(["nft", "-f", "-"], a.script())]
    if isinstance(a, DeleteLink):
        return [(["ip", "link", "del", a.name], None)]
    if isinstance(a, DeleteNetns):
        return [(["ip", "netns", "del", a.name], None)]
    if isinstance(a, DeleteTable):
        return [(["nft", "delete", "table", "ip", a.table], None)]
    raise TypeError(f"unknown network action {a!r}")


def apply(actions: Iterable[Action], runner, *, best_effort: bool = False) -> list[CommandError]:
    """Runs the actions in order. Stops at the first failure unless `best_effort` (teardown and
    rollback go on past a failure and return what failed)."""
    failures: list[CommandError] = []
    for action in actions:
        log.info("network: %s", action.describe())
        for argv, stdin in commands(action):
            try:
                runner.run(argv, input=stdin)
            except CommandError as exc:
                if isinstance(action, DeleteLink) and action.if_present and "Cannot find device" in exc.stderr:
                    continue
                if not best_effort:
                    raise
                log.warning("network teardown step failed: %s", exc)
                failures.append(exc)
                break
    return failures
