"""User-defined networks of this host (compose's networks, `provision network create`), beside the
default bridge: each one a bridge, a subnet and an nftables table of its own — a NetworkConfig,
named after the default's (bridge `<bridge>-<hash>`, table `<table>_<hash>`), recorded in
<root>/network/networks/<name>.json with its labels. Its bridge and table are made by the first
container that joins it (as the default's are) and removed with the network.

A subnet is the one asked for, or the first free block of the pool (NetworkConfig.pool, blocks of
pool_prefixlen) that overlaps no other network and no address of this host's interfaces.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ConfigError, ContainerError
from ..fsutil import atomic_write
from . import ipam
from .model import DEFAULT_NETWORK, NetworkConfig


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    subnet: str | None = None
    gateway: str | None = None
    ip_range: str | None = None
    internal: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    attachable: bool = False   # the Engine API's flag: recorded and reported (a bridge is always attachable)


@dataclass(frozen=True)
class Network:
    name: str
    config: NetworkConfig
    labels: tuple[tuple[str, str], ...] = ()
    id: str = ""            # 64 hex digits, new for each network made (the Engine API's Id)
    created: float = 0.0    # when it was made (seconds since the epoch; 0: before this was recorded)
    attachable: bool = False

    def __post_init__(self):
        if not self.id:   # the default bridge, and records made before ids were: one from the name
            object.__setattr__(self, "id", hashlib.sha256(f"provisioner-network:{self.name}".encode()).hexdigest())

    def to_json(self) -> dict:
        return {"name": self.name, "config": self.config.to_json(), "labels": dict(self.labels), "id": self.id,
                "created": self.created, **({"attachable": True} if self.attachable else {})}


def _dir(root) -> Path:
    return ipam.state_dir(root) / "networks"


def _path(root, name: str) -> Path:
    return _dir(root) / f"{name}.json"


def names_for(cfg: NetworkConfig, name: str) -> tuple[str, str]:
    """(bridge, table) of user network `name`: derived from the default's, so a host's (or a test's)
    prefixes cover every network it makes."""
    h = hashlib.sha256(name.encode()).hexdigest()
    return f"{cfg.bridge[:7]}-{h[:7]}", f"{cfg.table[:20]}_{h[:10]}"


def get(root, cfg: NetworkConfig, name: str) -> Network | None:
    if name == DEFAULT_NETWORK:
        return Network(DEFAULT_NETWORK, cfg)
    try:
        d = json.loads(_path(root, name).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ContainerError(f"{_path(root, name)}: unreadable network record ({exc})") from exc
    return Network(d["name"], NetworkConfig(**d["config"]), tuple(sorted((d.get("labels") or {}).items())),
                   d.get("id") or "", float(d.get("created") or 0.0), bool(d.get("attachable")))


def require(root, cfg: NetworkConfig, name: str) -> Network:
    net = get(root, cfg, name)
    if net is None:
        raise ContainerError(f"network {name} not found (create it with `provision network create {name}`)")
    return net


def all_networks(root, cfg: NetworkConfig) -> dict[str, Network]:
    out = {DEFAULT_NETWORK: Network(DEFAULT_NETWORK, cfg)}
    d = _dir(root)
    if d.is_dir():
        for p in sorted(d.glob("*.json")):
            if not p.name.endswith(".ipam.json"):
                net = get(root, cfg, p.stem)
                if net is not None:
                    out[net.name] = net
    return out


def _host_networks(runner) -> list[ipaddress.IPv4Network]:
    addrs = json.loads(runner.run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]")
    return [ipaddress.IPv4Interface(f"{a['local']}/{a.get('prefixlen', 32)}").network
            for link in addrs for a in link.get("addr_info", []) if a.get("local")
            and not ipaddress.IPv4Address(a["local"]).is_loopback]


def ensure(root, cfg: NetworkConfig, spec: NetworkSpec, *, runner) -> Network:
    """The network `spec.name`, created when missing; an existing one must match what is asked."""
    if spec.name == DEFAULT_NETWORK:
        return Network(DEFAULT_NETWORK, cfg)
    with ipam.lock(root):
        existing = get(root, cfg, spec.name)
        if existing is not None:
            c = existing.config
            if (spec.subnet and spec.subnet != c.subnet) or spec.internal != c.internal:
                raise ContainerError(f"network {spec.name} exists with subnet {c.subnet}"
                                     f"{' (internal)' if c.internal else ''}; remove it first to change it")
            return existing
        taken = [ipaddress.IPv4Network(n.config.subnet) for n in all_networks(root, cfg).values()]
        taken += _host_networks(runner)
        subnet = _choose(cfg, spec, taken)
        bridge, table = names_for(cfg, spec.name)
        try:
            config = replace(cfg, bridge=bridge, table=table, subnet=subnet, internal=spec.internal,
                             gateway_ip=spec.gateway, ip_range=spec.ip_range)
        except ConfigError as exc:
            raise ContainerError(f"network {spec.name}: {exc.message}") from None
        net = Network(spec.name, config, tuple(sorted(spec.labels)), secrets.token_hex(32), time.time(),
                      spec.attachable)
        _dir(root).mkdir(parents=True, exist_ok=True)
        atomic_write(_path(root, spec.name), json.dumps(net.to_json(), indent=2) + "\n", mode=0o644)
        return net


def _choose(cfg: NetworkConfig, spec: NetworkSpec, taken: list[ipaddress.IPv4Network]) -> str:
    if spec.subnet:
        want = ipaddress.IPv4Network(spec.subnet)
        clash = next((t for t in taken if t.overlaps(want)), None)
        if clash is not None:
            raise ContainerError(f"network {spec.name}: subnet {want} overlaps {clash}, already in use on this host")
        return str(want)
    for block in ipaddress.IPv4Network(cfg.pool).subnets(new_prefix=cfg.pool_prefixlen):
        if not any(block.overlaps(t) for t in taken):
            return str(block)
    raise ContainerError(f"network {spec.name}: no free /{cfg.pool_prefixlen} left in the pool {cfg.pool}")


def forget(root, name: str) -> None:
    """Drops the record and its address allocations (the caller removed its bridge and table)."""
    _path(root, name).unlink(missing_ok=True)
    (_dir(root) / f"{name}.ipam.json").unlink(missing_ok=True)


def in_use(eps, name: str) -> list[str]:
    return sorted(e.name for e in eps.values() if e.on(name) is not None)


def labelled(root, cfg: NetworkConfig, key: str, value: str) -> list[Network]:
    return [n for n in all_networks(root, cfg).values() if (key, value) in n.labels]
