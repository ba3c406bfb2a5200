"""/networks/...: the host's networks as Docker's — the default bridge ("bridge") and the
user-defined networks of network.registry (`provision network create`, a stack's networks,
`docker network create`, compose's `<project>_default`: one namespace, one implementation).

Each user-defined network is a bridge, a subnet and an nftables table of its own, isolated from
the others; its members find each other by container name and alias (/etc/hosts, kept current by
the network manager). A subnet, gateway and IP range are honoured, and `internal`; what the
registry cannot do (IPv6, another driver, driver options, auxiliary addresses, several pools) is
a 400 naming the parameter. connect/disconnect change a container's record and, while it runs,
its namespace at once (network.join: a veth on the network's bridge); a container's first network
stays while it runs, and the default bridge is not combined with user-defined networks.
"""
from __future__ import annotations

import ipaddress

from ..errors import ConfigError, ContainerError
from ..network import DEFAULT_NETWORK, NetworkSpec
from ..runspec.netopts import NETWORK_NAME, NetworkAttachment
from .create import endpoint_attachment
from .http import ApiError, bad_request, conflict, not_found, not_supported, parse_filters
from .views import rfc3339

BRIDGE = DEFAULT_NETWORK
PREDEFINED = ("bridge", "host", "none", "default")


def user_networks(eng) -> dict:
    """name → network.registry.Network, the user-defined ones."""
    return {n: net for n, net in eng.networks().items() if n != BRIDGE}


def record_networks(rec) -> list[tuple[str, list[str]]]:
    """The networks a container record is on, with its aliases on each: its user-defined networks,
    else its network mode (host, none; another container's: none of its own), else the bridge."""
    mode = rec.config.get("network_mode")
    if mode:
        return [(mode, [])] if mode in ("host", "none") else []
    nets = [NetworkAttachment.from_json(a) for a in rec.config.get("networks") or []]
    return [(a.network, list(a.aliases)) for a in nets] or [(BRIDGE, [])]


def resolve(eng, ref: str) -> str:
    """A network's name from its name, id or unique id prefix ("bridge" included); 404 if none."""
    nets = eng.networks()
    if ref in nets:
        return ref
    ids = {net.id: name for name, net in nets.items()}
    if ref in ids:
        return ids[ref]
    hits = {name for i, name in ids.items() if len(ref) >= 3 and i.startswith(ref)}
    if len(hits) == 1:
        return hits.pop()
    if hits:
        raise bad_request(f"network {ref} is ambiguous ({len(hits)} matches found based on ID prefix)")
    raise not_found(f"network {ref} not found")


# -- JSON ------------------------------------------------------------------------------------------
def _members(eng, name: str) -> dict:
    """The running containers on network `name` (their endpoints' attachments there)."""
    out = {}
    for d in eng.ps(False):
        info = (d.get("networks") or {}).get(name)
        if info and info.get("address"):
            addr = info["address"]
            out[d["id"]] = {"Name": d["name"], "EndpointID": "", "MacAddress": _mac(addr),
                            "IPv4Address": f"{addr}/{info.get('prefixlen') or 0}", "IPv6Address": ""}
    return out


def _mac(addr: str) -> str:
    return "02:42:" + ":".join(f"{int(b):02x}" for b in addr.split("."))


def network_json(eng, name: str, with_containers: bool) -> dict:
    net = eng.networks().get(name)
    if net is None:
        raise not_found(f"network {name} not found")
    c = net.config
    pool = {"Subnet": c.subnet, "Gateway": str(c.gateway), **({"IPRange": c.ip_range} if c.ip_range else {})}
    out = {"Name": name, "Id": net.id, "Created": rfc3339(net.created) if net.created else "0001-01-01T00:00:00Z",
           "Scope": "local", "Driver": "bridge", "EnableIPv6": False,
           "IPAM": {"Driver": "default", "Options": None, "Config": [pool]}, "Internal": bool(c.internal),
           "Attachable": net.attachable, "Ingress": False, "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
           "Containers": _members(eng, name) if with_containers else {},
           "Options": {"com.docker.network.bridge.name": c.bridge}, "Labels": dict(net.labels)}
    return out


def bridge_json(eng, with_containers: bool) -> dict:
    return network_json(eng, BRIDGE, with_containers)


def _used(eng) -> set[str]:
    """The networks some container (running or not) is on."""
    return {n for rec in eng.manager.records.all() for n, _ in record_networks(rec)}


# -- handlers --------------------------------------------------------------------------------------
def list_networks(eng, req, conn):
    f = parse_filters(req, {"name", "id", "driver", "label", "type", "scope", "dangling"})
    used = _used(eng) if "dangling" in f else set()
    out = []
    for name in eng.networks():
        j = network_json(eng, name, False)
        if "name" in f and not any(x in name for x in f["name"]):
            continue
        if "id" in f and not any(j["Id"].startswith(i) for i in f["id"]):
            continue
        if "driver" in f and "bridge" not in f["driver"]:
            continue
        if "scope" in f and "local" not in f["scope"]:
            continue
        if "type" in f and ("builtin" if name == BRIDGE else "custom") not in f["type"]:
            continue
        if "label" in f and not all(_label_ok(j["Labels"], w) for w in f["label"]):
            continue
        if "dangling" in f and (f["dangling"][0] in ("true", "1")) != (name != BRIDGE and name not in used):
            continue
        out.append(j)
    return 200, out


def _label_ok(labels: dict, wanted: str) -> bool:
    k, sep, v = wanted.partition("=")
    return k in labels and (not sep or labels[k] == v)


def inspect_network(eng, req, conn, id):
    if req.arg("scope") not in (None, "", "local"):
        raise not_found(f"network {id} not found")
    return 200, network_json(eng, resolve(eng, id), True)


def _ipam(body: dict) -> dict:
    """IPAM's one IPv4 pool: subnet, gateway, ip_range (each optional)."""
    ipam = body.get("IPAM") or {}
    if not isinstance(ipam, dict):
        raise bad_request("IPAM must be an object")
    if (ipam.get("Driver") or "default") != "default":
        raise not_supported(f"IPAM.Driver {ipam['Driver']!r}", "the default allocator only")
    if ipam.get("Options"):
        raise not_supported("IPAM.Options")
    pools = ipam.get("Config") or []
    if not isinstance(pools, list) or not all(isinstance(p, dict) for p in pools):
        raise bad_request("IPAM.Config must be a list of objects")
    if len(pools) > 1:
        raise not_supported("IPAM.Config with more than one pool", "a network here has one IPv4 subnet")
    pool = pools[0] if pools else {}
    for k, v in pool.items():
        if k not in ("Subnet", "Gateway", "IPRange") and v not in (None, "", {}):
            raise not_supported(f"IPAM.Config.{k}")
    out = {}
    for k, key in (("Subnet", "subnet"), ("Gateway", "gateway"), ("IPRange", "ip_range")):
        v = pool.get(k)
        if not v:
            continue
        try:
            ip = ipaddress.ip_network(v, strict=False) if k != "Gateway" else ipaddress.ip_address(v)
        except ValueError:
            raise bad_request(f"IPAM.Config.{k} {v!r} is not valid") from None
        if ip.version != 4:
            raise not_supported(f"IPAM.Config.{k} {v!r}", "container networks are IPv4")
        out[key] = str(ip)
    if ("gateway" in out or "ip_range" in out) and "subnet" not in out:
        raise bad_request("IPAM.Config: a gateway or an IP range needs a Subnet")
    return out


def create_network(eng, req, conn):
    body = req.json_object()
    name = body.get("Name")
    if not isinstance(name, str) or not name:
        raise bad_request("network Name is missing")
    if not NETWORK_NAME.fullmatch(name) or len(name) > 64:
        raise bad_request(f"invalid network name {name!r}: letters, digits, '_', '.', '-', at most 64")
    if name in PREDEFINED:
        raise ApiError(403, f"{name} is a pre-defined network and cannot be created")
    if (body.get("Driver") or "bridge") != "bridge":
        raise not_supported(f"network Driver {body['Driver']!r}", "bridge networks only")
    for key, why in (("EnableIPv6", "container networks are IPv4"), ("Ingress", ""), ("ConfigOnly", ""),
                     ("Options", "bridge driver options are not taken"), ("ConfigFrom", ""), ("Scope", "")):
        v = body.get(key)
        if key == "Scope" and v == "local" or key == "ConfigFrom" and v in ({}, {"Network": ""}):
            continue
        if v not in (None, False, "", {}, []):
            raise not_supported(f"network {key}", why)
    internal = body.get("Internal")
    if internal not in (None, True, False):
        raise bad_request("network Internal must be a boolean")
    ipam = _ipam(body)
    labels = body.get("Labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise bad_request("network Labels must be an object of strings")
    attachable = body.get("Attachable")
    if attachable not in (None, True, False):
        raise bad_request("network Attachable must be a boolean")
    spec = NetworkSpec(name, internal=bool(internal), labels=tuple(sorted(labels.items())),
                       attachable=bool(attachable), **ipam)
    with eng.lock:
        if name in eng.networks():
            raise conflict(f"network with name {name} already exists")
        try:
            net = eng.manager.ensure_network(spec)
        except (ContainerError, ConfigError) as exc:
            raise bad_request(f"IPAM.Config: {exc}" if ipam else str(exc)) from None
    return 201, {"Id": net.id, "Warning": ""}


def remove_network(eng, req, conn, id):
    name = resolve(eng, id)
    if name == BRIDGE:
        raise ApiError(403, "bridge is a pre-defined network and cannot be removed")
    with eng.lock:
        active = _members(eng, name)
        if active or not eng.manager.remove_network_if_unused(name):
            users = sorted(c["Name"] for c in active.values()) or ["a container"]
            raise ApiError(403, f"error while removing network: network {name} id {eng.networks()[name].id} "
                                f"has active endpoints ({', '.join(users)})")
    return 204, None


def prune_networks(eng, req, conn):
    f = parse_filters(req, {"label", "until"})
    if "until" in f:
        raise not_supported("the network prune filter 'until'")
    deleted = []
    with eng.lock:
        used = _used(eng)
        for name, net in user_networks(eng).items():
            if name in used or not all(_label_ok(dict(net.labels), w) for w in f.get("label", [])):
                continue
            if eng.manager.remove_network_if_unused(name):
                deleted.append(name)
    return 200, {"NetworksDeleted": deleted or None}


def connect_network(eng, req, conn, id):
    name = resolve(eng, id)
    body = req.json_object()
    rec = eng.container(str(body.get("Container") or ""))
    att = endpoint_attachment(body.get("EndpointConfig"), name, "EndpointConfig")
    nets = [n for n, _ in record_networks(rec)]
    if name in nets:
        raise ApiError(403, f"endpoint with name {rec.name} already exists in network {name}")
    if name == BRIDGE or BRIDGE in nets:
        raise not_supported("connecting a container to the default bridge and a user-defined network",
                            "a container here is on the default bridge or on user-defined networks")
    if not nets:
        raise not_supported(f"connecting a container with network mode {rec.config.get('network_mode')}")
    try:
        eng.manager.connect_network(rec.id, NetworkAttachment(name, att.aliases, att.ipv4_address))
    except (ContainerError, ConfigError) as exc:
        raise bad_request(str(exc)) from None
    return 200, None


def disconnect_network(eng, req, conn, id):
    name = resolve(eng, id)
    body = req.json_object()
    rec = eng.container(str(body.get("Container") or ""))
    nets = [n for n, _ in record_networks(rec)]
    if name not in nets:
        raise ApiError(403, f"container {rec.id} is not connected to network {name}")
    if name == BRIDGE:
        raise not_supported("disconnecting a container from the bridge network", "it would have no network")
    try:
        eng.manager.disconnect_network(rec.id, name)
    except ContainerError as exc:
        raise bad_request(str(exc)) from None
    return 200, None


def register(router) -> None:
    router.add("GET", "/networks", list_networks)
    router.add("POST", "/networks/create", create_network)
    router.add("POST", "/networks/prune", prune_networks)
    router.add("GET", "/networks/{id}", inspect_network)
    router.add("DELETE", "/networks/{id}", remove_network)
    router.add("POST", "/networks/{id}/connect", connect_network)
    router.add("POST", "/networks/{id}/disconnect", disconnect_network)
