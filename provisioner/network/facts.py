"""Reading the system for the network planner: plain data, no decisions."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ..errors import ContainerError
from .balance import parse_table
from .chains import BOUND_MAP, PORT_CHAIN, WILD_MAP
from .model import NetworkConfig

RULE_TAG = "prov:"  # comment prefix of every per-container rule: "prov:<name>|<mapping>"


@dataclass(frozen=True)
class LegacyRule:
    """A DNAT rule an earlier version put in the `ports` chain itself (before the port maps)."""

    container: str
    mapping: str
    address: str
    port: int


@dataclass(frozen=True)
class NetFacts:
    links: frozenset[str] = frozenset()
    bridged: frozenset[str] = frozenset()            # links whose master is the bridge
    netns: frozenset[str] = frozenset()              # names under /run/netns
    ip_forward: str = "0"
    route_localnet: str | None = None                # of the bridge; None if no bridge
    table_exists: bool = False
    table_current: bool = False                      # it has what this version's table_script makes
    metadata_ok: frozenset[str] = frozenset()        # addresses allowed the instance metadata service
    rules: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)  # container → ((chain, mapping), ...)
    legacy: tuple[LegacyRule, ...] = ()               # an older table's rules, carried over by its upgrade
    local_addresses: frozenset[str] = frozenset()
    interface_networks: tuple[tuple[str, str], ...] = ()  # (ifname, "10.0.0.5/24") of every IPv4 address
    balanced: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)  # group → ((chain, mapping), …)
    lb_maps: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # map name → addresses, in order
    legacy_balanced: tuple[tuple[str, str], ...] = ()   # (group, mapping): an older table's balanced rules


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def rule_comment(container: str, mapping: str) -> str:
    return f"{RULE_TAG}{container}|{mapping}"


def parse_rule_comment(comment: str) -> tuple[str, str] | None:
    if not comment.startswith(RULE_TAG) or "|" not in comment:
        return None
    name, mapping = comment[len(RULE_TAG):].split("|", 1)
    return name, mapping


def _nft_items(text: str) -> list[dict]:
    try:
        return json.loads(text).get("nftables", [])
    except ValueError as exc:
        raise ContainerError(f"unreadable `nft -j` output: {exc}") from exc


def parse_nft_table(text: str) -> dict[str, tuple[tuple[str, str], ...]]:
    """`nft -j -a list table ...` → the published ports' chains, by the container their DNAT rule
    is tagged with: container → ((chain, mapping), ...)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for item in _nft_items(text):
        rule = item.get("rule")
        if not rule or not str(rule.get("chain", "")).startswith(PORT_CHAIN):
            continue
        tag = parse_rule_comment(rule.get("comment") or "")
        if tag:
            out.setdefault(tag[0], []).append((rule["chain"], tag[1]))
    return {k: tuple(v) for k, v in out.items()}


def parse_legacy_rules(text: str) -> tuple[LegacyRule, ...]:
    """The tagged DNAT rules directly in the `ports` chain: what tables before the port maps had."""
    out = []
    for item in _nft_items(text):
        rule = item.get("rule")
        if not rule or rule.get("chain") != "ports":
            continue
        tag = parse_rule_comment(rule.get("comment") or "")
        dnat = next((e["dnat"] for e in rule.get("expr", []) if isinstance(e, dict) and "dnat" in e), None)
        if tag and dnat and "addr" in dnat and "port" in dnat:
            out.append(LegacyRule(tag[0], tag[1], str(dnat["addr"]), int(dnat["port"])))
    return tuple(out)


def parse_nft_state(text: str) -> tuple[bool, frozenset[str]]:
    """`nft -j list table ...` → (has this version's guard chain and metadata set, the set's addresses)."""
    items = _nft_items(text)
    guard = any((i.get("chain") or {}).get("name") == "guard" for i in items)
    sets = [i["set"] for i in items if (i.get("set") or {}).get("name") == "metadata_ok"]
    maps = {(i.get("map") or {}).get("name") for i in items}
    elems = frozenset(e for s in sets for e in s.get("elem", []) if isinstance(e, str))
    legacy = parse_legacy_rules(text) or parse_table(items)[2]
    return guard and bool(sets) and {BOUND_MAP, WILD_MAP} <= maps and not legacy, elems


def read_facts(runner, cfg: NetworkConfig, *, proc: str | os.PathLike = "/proc",
               netns_dir: str | os.PathLike = "/run/netns") -> NetFacts:
    links = json.loads(runner.run(["ip", "-j", "link", "show"]).stdout or "[]")
    addrs = json.loads(runner.run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]")
    local = {a["local"] for link in addrs for a in link.get("addr_info", []) if a.get("local")}
    networks = tuple((link.get("ifname", "?"), f"{a['local']}/{a.get('prefixlen', 32)}")
                     for link in addrs for a in link.get("addr_info", []) if a.get("local"))
    table = runner.run(["nft", "-j", "-a", "list", "table", "ip", cfg.table], check=False)
    try:
        netns = frozenset(os.listdir(netns_dir))
    except FileNotFoundError:
        netns = frozenset()
    sysnet = Path(proc) / "sys" / "net" / "ipv4"
    balanced, lb_maps, legacy_balanced = {}, {}, ()
    if table.returncode == 0:
        try:
            balanced, lb_maps, legacy_balanced = parse_table(json.loads(table.stdout).get("nftables", []))
        except ValueError:
            pass   # parse_nft_table below says it
    return NetFacts(
        balanced=balanced, lb_maps=lb_maps, legacy_balanced=legacy_balanced,
        links=frozenset(link["ifname"] for link in links),
        bridged=frozenset(link["ifname"] for link in links if link.get("master") == cfg.bridge),
        netns=netns,
        ip_forward=_read(sysnet / "ip_forward") or "0",
        route_localnet=_read(sysnet / "conf" / cfg.bridge / "route_localnet"),
        table_exists=table.returncode == 0,
        rules=parse_nft_table(table.stdout) if table.returncode == 0 else {},
        legacy=parse_legacy_rules(table.stdout) if table.returncode == 0 else (),
        **(dict(zip(("table_current", "metadata_ok"), parse_nft_state(table.stdout))) if table.returncode == 0 else {}),
        local_addresses=frozenset(local),
        interface_networks=networks,
    )


REQUIRED_TOOLS = {"ip": "iproute2", "nft": "nftables", "sysctl": "procps", "nsenter": "util-linux"}


def preflight(runner, *, proc: str | os.PathLike = "/proc") -> list[str]:
    """What would stop container networking here, one line each (for `provision doctor`)."""
    problems = [f"{tool} not found (install {pkg})" for tool, pkg in REQUIRED_TOOLS.items() if not runner.which(tool)]
    if os.geteuid() != 0:
        problems.append("container networking needs root (netns, veth, nftables)")
    if not (Path(proc) / "sys" / "net" / "ipv4" / "ip_forward").exists():
        problems.append("no IPv4 networking in this kernel (/proc/sys/net/ipv4 missing)")
    return problems
