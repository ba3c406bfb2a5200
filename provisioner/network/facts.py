"""Reading the system for the network planner: plain data, no decisions."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ..errors import ContainerError
from .balance import parse_table
from .model import NetworkConfig

RULE_TAG = "prov:"  # comment prefix of every per-container rule: "prov:<name>|<mapping>"


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
    rules: Mapping[str, tuple[tuple[int, str], ...]] = field(default_factory=dict)  # container → ((handle, mapping), ...)
    local_addresses: frozenset[str] = frozenset()
    interface_networks: tuple[tuple[str, str], ...] = ()  # (ifname, "10.0.0.5/24") of every IPv4 address
    balanced: Mapping[str, tuple[tuple[int, str], ...]] = field(default_factory=dict)  # group → ((handle, mapping), …)
    lb_maps: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # map name → addresses, in order


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


def parse_nft_table(text: str, chain: str = "ports") -> dict[str, tuple[tuple[int, str], ...]]:
    """`nft -j -a list table ...` → our tagged rules in `chain`, by container."""
    try:
        items = json.loads(text).get("nftables", [])
    except ValueError as exc:
        raise ContainerError(f"unreadable `nft -j` output: {exc}") from exc
    out: dict[str, list[tuple[int, str]]] = {}
    for item in items:
        rule = item.get("rule")
        if not rule or rule.get("chain") != chain:
            continue
        tag = parse_rule_comment(rule.get("comment") or "")
        if tag:
            out.setdefault(tag[0], []).append((int(rule["handle"]), tag[1]))
    return {k: tuple(v) for k, v in out.items()}


def parse_nft_state(text: str) -> tuple[bool, frozenset[str]]:
    """`nft -j list table ...` → (has this version's guard chain and metadata set, the set's addresses)."""
    try:
        items = json.loads(text).get("nftables", [])
    except ValueError as exc:
        raise ContainerError(f"unreadable `nft -j` output: {exc}") from exc
    guard = any((i.get("chain") or {}).get("name") == "guard" for i in items)
    sets = [i["set"] for i in items if (i.get("set") or {}).get("name") == "metadata_ok"]
    elems = frozenset(e for s in sets for e in s.get("elem", []) if isinstance(e, str))
    return guard and bool(sets), elems


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
    balanced, lb_maps = {}, {}
    if table.returncode == 0:
        try:
            balanced, lb_maps = parse_table(json.loads(table.stdout).get("nftables", []))
        except ValueError:
            pass   # parse_nft_table below says it
    return NetFacts(
        balanced=balanced, lb_maps=lb_maps,
        links=frozenset(link["ifname"] for link in links),
        bridged=frozenset(link["ifname"] for link in links if link.get("master") == cfg.bridge),
        netns=netns,
        ip_forward=_read(sysnet / "ip_forward") or "0",
        route_localnet=_read(sysnet / "conf" / cfg.bridge / "route_localnet"),
        table_exists=table.returncode == 0,
        rules=parse_nft_table(table.stdout) if table.returncode == 0 else {},
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
