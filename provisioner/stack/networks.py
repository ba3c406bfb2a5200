"""A stack's networks: the top-level `networks:`, each service's `networks:` and `network_mode:`.

As in compose: every project has a `default` network (`<project>_default`) that services without
`networks:` join; a declared network is `<project>_<key>` on the host unless it has a `name:`.
Networks are bridges on the host the services run on (a swarm `overlay` is a bridge on that one
host, with a notice). Services sharing a network reach each other by service name, container
name and alias; services sharing none cannot reach each other.
"""
from __future__ import annotations

import ipaddress
from typing import Any

from .. import yamlutil
from ..errors import ConfigError, StackError
from ..runspec.netopts import check_alias, check_ipv4, check_network_name
from .fields import Fields
from .model import NetworkDef, ServiceNetwork

TOP_KEYS = {"driver", "driver_opts", "attachable", "internal", "ipam", "enable_ipv6", "external", "name", "labels"}
SERVICE_KEYS = {"aliases", "ipv4_address", "priority"}
MODES = ("host", "none", "bridge")


def top_networks(f: Fields, raw: Any, project: str) -> dict[str, NetworkDef]:
    out = {"default": NetworkDef("default", f"{project}_default")}
    if raw is None:
        return out
    if not isinstance(raw, dict):
        raise StackError("'networks' must be a mapping of networks", f.path, yamlutil.line_of(raw))
    for key, v in raw.items():
        if not isinstance(key, str):
            raise f.fail(f"networks: {key!r} is not a network name", raw, key)
        where = f"networks.{key}"
        v = v if v is not None else {}
        if not isinstance(v, dict):
            raise f.fail(f"{where} must be empty or a mapping", raw, key)
        for k in v:
            if not str(k).startswith("x-") and k not in TOP_KEYS:
                raise f.fail(f"{where}: unsupported key {k!r} (supported: {', '.join(sorted(TOP_KEYS))})", v, k)
        driver = f.scalar(v, "driver", where)
        if driver == "overlay":
            f.notice(f"{where}.driver: overlay networks span a swarm's hosts; here it is a bridge on the host the "
                     "services run on", v, "driver")
        elif driver not in (None, "bridge", "default"):
            raise f.fail(f"{where}.driver: {driver!r} is not available (networks here are bridges)", v, "driver")
        if f.str_map(v, "driver_opts", where):
            raise f.fail(f"{where}.driver_opts: bridge options are not supported (provisioner names and configures "
                         "its bridges itself)", v, "driver_opts")
        if f.boolean(v, "enable_ipv6", where, False):
            raise f.fail(f"{where}.enable_ipv6: container networks here are IPv4 only", v, "enable_ipv6")
        f.boolean(v, "attachable", where, False)   # every network here can take `container run --network`
        name = f.string(v, "name", where) or f"{project}_{key}"
        try:
            check_network_name(name)
        except ConfigError as exc:
            raise f.config(exc, f"{where}.name", v, "name" if "name" in v else None) from None
        ext = v.get("external")
        external = bool(ext) if not isinstance(ext, dict) else True
        if isinstance(ext, dict):   # compose v2's legacy external: {name: N}
            name = f.string(ext, "name", f"{where}.external") or name
        subnet, gateway, ip_range = _ipam(f, v, where)
        out[key] = NetworkDef(key, name, internal=f.boolean(v, "internal", where, False), external=external,
                              subnet=subnet, gateway=gateway, ip_range=ip_range,
                              labels=tuple(f.pairs(v, "labels", where)), line=yamlutil.line_of(raw, key))
    return out


def _ipam(f: Fields, v: dict, where: str) -> tuple[str | None, str | None, str | None]:
    ipam = f.mapping(v, "ipam", where)
    if ipam is None:
        return None, None, None
    w = f"{where}.ipam"
    f.keys(ipam, {"driver", "config", "options"}, w)
    if f.scalar(ipam, "driver", w) not in (None, "default"):
        raise f.fail(f"{w}.driver: only the default address manager is available", ipam, "driver")
    if f.str_map(ipam, "options", w):
        raise f.fail(f"{w}.options: the default address manager takes no options", ipam, "options")
    configs = f.items(ipam, "config", w)
    if len(configs) > 1:
        raise f.fail(f"{w}.config: one subnet per network (IPv4 only)", ipam, "config")
    if not configs:
        return None, None, None
    c = configs[0]
    if not isinstance(c, dict):
        raise f.fail(f"{w}.config[0] must be a mapping with subnet", configs, 0)
    cw = f"{w}.config[0]"
    f.keys(c, {"subnet", "gateway", "ip_range", "aux_addresses"}, cw)
    try:
        net = ipaddress.IPv4Network(f.string(c, "subnet", cw, required=True), strict=True)
    except ValueError as exc:
        raise f.fail(f"{cw}.subnet: {exc} (an IPv4 subnet such as 172.20.0.0/24)", c, "subnet") from None
    if net.prefixlen > 29:
        raise f.fail(f"{cw}.subnet: {net} is too small (want /29 or larger)", c, "subnet")
    gateway = f.scalar(c, "gateway", cw)
    if gateway is not None:
        try:
            if ipaddress.IPv4Address(gateway) not in net:
                raise ValueError(f"{gateway} is not in {net}")
        except ValueError as exc:
            raise f.fail(f"{cw}.gateway: {exc}", c, "gateway") from None
    ip_range = f.scalar(c, "ip_range", cw)
    if ip_range is not None:
        try:
            r = ipaddress.IPv4Network(ip_range, strict=True)
            if not r.subnet_of(net):
                raise ValueError(f"{r} is not inside {net}")
        except ValueError as exc:
            raise f.fail(f"{cw}.ip_range: {exc}", c, "ip_range") from None
    if c.get("aux_addresses"):
        f.notice(f"{cw}.aux_addresses: nothing here takes those addresses; they are only kept out of no "
                 "allocation (ignored)", c, "aux_addresses")
    return str(net), gateway, ip_range


def service_networks(f: Fields, d: dict, where: str, nets: dict[str, NetworkDef]) -> dict[str, Any]:
    """`networks:` and `network_mode:` of one service → ServiceSpec fields."""
    mode = f.scalar(d, "network_mode", where)
    raw = d.get("networks")
    if mode is not None:
        if raw is not None:
            raise f.fail(f"{where}: network_mode and networks cannot be given together", d, "networks")
        if mode not in MODES and not mode.startswith(("service:", "container:")):
            raise f.fail(f"{where}.network_mode: {mode!r} is not host, none, bridge, service:NAME or "
                         "container:NAME", d, "network_mode")
        if mode.split(":", 1)[0] in ("service", "container") and not mode.split(":", 1)[1]:
            raise f.fail(f"{where}.network_mode: {mode!r} names no service", d, "network_mode")
        return {"network_mode": mode}
    if raw is None:
        return {}
    entries: list[ServiceNetwork] = []
    if isinstance(raw, list):
        for i, key in enumerate(raw):
            if not isinstance(key, str):
                raise f.fail(f"{where}.networks[{i}] must be a network name", raw, i)
            entries.append(_entry(f, key, None, raw, i, where, nets))
    elif isinstance(raw, dict):
        for key, opts in raw.items():
            entries.append(_entry(f, str(key), opts, raw, key, where, nets))
    else:
        raise f.fail(f"{where}.networks must be a list of network names or a mapping", d, "networks")
    # compose: the highest priority first (the primary network), then file order
    entries.sort(key=lambda e: -e.priority)
    return {"networks": tuple(entries)}


def _entry(f: Fields, key: str, opts: Any, container, at, where: str, nets: dict[str, NetworkDef]) -> ServiceNetwork:
    w = f"{where}.networks.{key}"
    if key not in nets:
        known = ", ".join(k for k in nets if k != "default") or "none declared"
        raise f.fail(f"{w}: network {key!r} is not declared under the top-level 'networks:' (declared: {known})",
                     container, at)
    if opts is None:
        return ServiceNetwork(key)
    if not isinstance(opts, dict):
        raise f.fail(f"{w} must be empty or a mapping with aliases, ipv4_address", container, at)
    for k in opts:
        if k not in SERVICE_KEYS:
            raise f.fail(f"{w}: unsupported key {k!r} (supported: {', '.join(sorted(SERVICE_KEYS))})", opts, k)
    try:
        aliases = tuple(check_alias(a) for a in f.strings(opts, "aliases", w, one_string=False))
    except ConfigError as exc:
        raise f.config(exc, f"{w}.aliases", opts, "aliases") from None
    addr = f.scalar(opts, "ipv4_address", w)
    if addr is not None:
        try:
            addr = check_ipv4(addr, "ipv4_address")
        except ConfigError as exc:
            raise f.config(exc, f"{w}.ipv4_address", opts, "ipv4_address") from None
        net = nets[key]
        if net.subnet is None:
            raise f.fail(f"{w}.ipv4_address: a fixed address needs the network's own subnet (networks.{key}.ipam."
                         "config: [{subnet: ...}])", opts, "ipv4_address")
        if ipaddress.IPv4Address(addr) not in ipaddress.IPv4Network(net.subnet):
            raise f.fail(f"{w}.ipv4_address: {addr} is not in the network's subnet {net.subnet}", opts, "ipv4_address")
    prio = f.integer(opts, "priority", w, -100000, 100000) or 0
    return ServiceNetwork(key, aliases, addr, prio)
