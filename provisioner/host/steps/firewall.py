"""The host firewall: nftables table `inet provisioner_host`, an input chain that accepts
established traffic, loopback, ICMP (PMTU discovery, IPv6 neighbour discovery), DHCP replies,
SSH (from `ssh_cidr` when given), exactly the host's published ports, and the agent's metrics
port from `metrics.allow_from` only (not at all without it), and drops the rest.
Only that table is ours: other tables (the containers' NAT table, the distribution's) are untouched.

Applied atomically with `nft -f`: one transaction that creates, deletes and re-creates the table,
so there is no moment without rules and a syntax error applies nothing. Published container
ports are DNAT-ed in prerouting (provisioner/network) and pass through forward, not input; the
input rules cover listeners on the host itself.

Idempotence: after applying, nft's own listing of the table is saved next to the source in
<root>/host/firewall.json; the plan is empty while the source is unchanged and the live listing
still equals the saved one (a reboot empties the ruleset, so the first boot run re-applies).
"""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from ...fsutil import atomic_write
from . import Outcome, StepContext, read_text

FAMILY, TABLE = "inet", "provisioner_host"
RULES_FILE = "/etc/provisioner/firewall.nft"
STATE_FILE = "host/firewall.json"


@dataclass(frozen=True)
class Facts:
    live: str | None         # `nft list table` output, None when the table does not exist
    applied: dict | None     # {"source", "listing"} saved by the last apply


@dataclass(frozen=True)
class ApplyRuleset:
    path: str
    source: str

    def describe(self) -> str:
        return f"nft -f {self.path} (table {FAMILY} {TABLE})"


def _set(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def render(config) -> str:
    rules = [
        "ct state established,related accept",
        "ct state invalid drop",
        'iif "lo" accept',
        "meta l4proto { icmp, ipv6-icmp } accept",
        "udp sport 67 udp dport 68 accept",
        "udp sport 547 udp dport 546 accept",
    ]
    ssh = f"tcp dport {config.ssh_port} accept"
    if config.ssh_cidr:
        net = ipaddress.ip_network(config.ssh_cidr)
        ssh = f"{'ip' if net.version == 4 else 'ip6'} saddr {net} {ssh}"
    rules.append(ssh)
    metrics = config.metrics
    if metrics is not None and metrics.allow_from:
        net = ipaddress.ip_network(metrics.allow_from)
        rules.append(f"{'ip' if net.version == 4 else 'ip6'} saddr {net} tcp dport {metrics.port} accept")
    for proto in ("tcp", "udp"):
        spans = [str(p).split("/")[0] for p in config.ports if p.protocol == proto]
        if spans:
            rules.append(f"{proto} dport {_set(spans)} accept")
    body = "".join(f"        {r}\n" for r in rules)
    # "table X" then "delete table X": the delete cannot fail on a first run, and the whole file
    # is one transaction, so the old table is replaced without a gap.
    return (f"# Managed by provisioner (provision host boot): the host's input firewall.\n"
            f"table {FAMILY} {TABLE}\n"
            f"delete table {FAMILY} {TABLE}\n"
            f"table {FAMILY} {TABLE} {{\n"
            f"    chain input {{\n"
            f"        type filter hook input priority filter; policy drop;\n"
            f"{body}"
            f"    }}\n"
            f"}}\n")


def list_table(runner) -> str | None:
    res = runner.run(["nft", "list", "table", FAMILY, TABLE], check=False)
    return res.stdout if res.returncode == 0 else None


def facts(ctx: StepContext) -> Facts:
    live = list_table(ctx.runner)
    try:
        applied = json.loads(read_text(ctx.root / STATE_FILE) or "null")
    except ValueError:
        applied = None
    return Facts(live, applied if isinstance(applied, dict) else None)


def plan(f: Facts, source: str, path: str) -> tuple:
    converged = (f.live is not None and f.applied is not None and f.applied.get("source") == source
                 and f.applied.get("listing") == f.live)
    return () if converged else (ApplyRuleset(path, source),)


def apply(ctx: StepContext, actions) -> None:
    for a in actions:
        atomic_write(a.path, a.source, mode=0o644)
        ctx.runner.run(["nft", "-f", a.path])
        listing = list_table(ctx.runner)
        atomic_write(ctx.root / STATE_FILE, json.dumps({"source": a.source, "listing": listing}, indent=1) + "\n")


def run(ctx: StepContext, dry_run: bool = False) -> Outcome:
    source = render(ctx.config)
    f = facts(ctx)
    actions = plan(f, source, str(ctx.path(RULES_FILE)))
    if not dry_run:
        apply(ctx, actions)
    opened = ", ".join(str(p) for p in ctx.config.ports) or "no published ports"
    m = ctx.config.metrics
    if m is not None and m.allow_from:
        opened += f"; metrics {m.port}/tcp from {m.allow_from}"
    ssh = f"ssh {ctx.config.ssh_port}/tcp" + (f" from {ctx.config.ssh_cidr}" if ctx.config.ssh_cidr else "")
    return Outcome(tuple(a.describe() for a in actions), f"{ssh}; {opened}")
