"""/networks/...: the host's container network as Docker's "bridge" network, and user-defined
networks (create, inspect, remove, connect, disconnect) for docker-compose's `<project>_default`
and `docker network create`.

A user network here is a name space on the host's one bridge, not a bridge of its own: its members
find each other by container name and alias (/etc/hosts, rewritten as members come and go:
network.manage's groups), as compose expects of service names. They share the bridge's subnet
and are not isolated from containers on other networks — inspect says so in Options, the README
too. Whatever would need a bridge of its own (a subnet, internal, IPv6, driver options) is a 400
naming it. Definitions are kept under <root>/api/networks/<name>.json.
"""
from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from pathlib import Path

from ..errors import ContainerError
from ..fsutil import atomic_write
from .http import ApiError, bad_request, conflict, not_found, not_supported, parse_filters
from .views import rfc3339

BRIDGE = "bridge"
PREDEFINED = ("bridge", "host", "none", "default")
SHARED = "provisioner.shared-bridge"      # the Option inspect shows on a user network: which bridge it shares
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def network_id(name: str) -> str:
    return hashlib.sha256(f"provisioner-network:{name}".encode()).hexdigest()


# -- the definitions -------------------------------------------------------------------------------
def _dir(eng) -> Path:
    return eng.root / "api" / "networks"


def user_networks(eng) -> dict[str, dict]:
    """name → definition (Name, Id, Created, Labels, Attachable)."""
    out = {}
    d = _dir(eng)
    if d.is_dir():
        for p in sorted(d.glob("*.json")):
            try:
                out[p.stem] = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
    return out


def resolve(eng, ref: str) -> str:
    """A network's name from its name, id or unique id prefix ("bridge" included); 404 if none."""
    nets = user_networks(eng)
    if ref in nets or ref == BRIDGE:
        return ref
    ids = {network_id(BRIDGE): BRIDGE, **{n["Id"]: name for name, n in nets.items()}}
    if ref in ids:
        return ids[ref]
    hits = {name for i, name in ids.items() if len(ref) >= 3 and i.startswith(ref)}
    if len(hits) == 1:
        return hits.pop()
    if hits:
        raise bad_request(f"network {ref} is ambiguous ({len(hits)} matches found based on ID prefix)")
    raise not_found(f"network {ref} not found")


def member_networks(rec) -> list[tuple[str, list[str]]]:
    """The user networks a container record is on, with its aliases on each."""
    return [(n, list(a)) for n, a in rec.config.get("networks") or []]


# -- JSON ------------------------------------------------------------------------------------------
def _members(eng, name: str) -> dict:
    out = {}
    for d in eng.ps(False):
        on = name == BRIDGE and not d.get("networks") or any(n == name for n, _ in d.get("networks") or [])
        if on and d.get("address"):
            out[d["id"]] = {"Name": d["name"], "EndpointID": "", "MacAddress": _mac(d["address"]),
                            "IPv4Address": f"{d['address']}/{eng.prefixlen}", "IPv6Address": ""}
    return out


def _mac(addr: str) -> str:
    return "02:42:" + ":".join(f"{int(b):02x}" for b in addr.split("."))


def network_json(eng, name: str, with_containers: bool) -> dict:
    net = eng.manager.net
    ipam = {"Driver": "default", "Options": None,
            "Config": [{"Subnet": net.subnet, "Gateway": str(net.gateway)}]}
    if name == BRIDGE:
        out = {"Name": BRIDGE, "Id": network_id(BRIDGE), "Created": "0001-01-01T00:00:00Z", "Labels": {},
               "Options": {"com.docker.network.bridge.name": net.bridge}, "Attachable": False}
    else:
        n = user_networks(eng).get(name)
        if n is None:
            raise not_found(f"network {name} not found")
        out = {"Name": name, "Id": n["Id"], "Created": rfc3339(n.get("Created")), "Labels": n.get("Labels") or {},
               "Options": {SHARED: net.bridge}, "Attachable": bool(n.get("Attachable"))}
    out.update({"Scope": "local", "Driver": "bridge", "EnableIPv6": False, "IPAM": ipam, "Internal": False,
                "Ingress": False, "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": {}})
    if with_containers:
        out["Containers"] = _members(eng, name)
    return out


def bridge_json(eng, with_containers: bool) -> dict:
    return network_json(eng, BRIDGE, with_containers)


# -- handlers --------------------------------------------------------------------------------------
def list_networks(eng, req, conn):
    f = parse_filters(req, {"name", "id", "driver", "label", "type", "scope", "dangling"})
    used = {n for d in eng.ps(True) for n, _ in d.get("networks") or []}
    out = []
    for name in [BRIDGE, *user_networks(eng)]:
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


def create_network(eng, req, conn):
    body = req.json_object()
    name = body.get("Name")
    if not isinstance(name, str) or not name:
        raise bad_request("network Name is missing")
    if not _NAME.fullmatch(name):
        raise bad_request(f"invalid network name {name!r}: letters, digits, '_', '.', '-', at most 64")
    if name in PREDEFINED:
        raise ApiError(403, f"{name} is a pre-defined network and cannot be created")
    if (body.get("Driver") or "bridge") != "bridge":
        raise not_supported(f"network driver {body['Driver']!r}", "user networks share the host's bridge")
    for key, why in (("Internal", "the host's bridge routes out"), ("EnableIPv6", "the bridge is IPv4 only"),
                     ("Ingress", ""), ("ConfigOnly", ""), ("Options", "user networks share the host's bridge"),
                     ("ConfigFrom", ""), ("Scope", "")):
        v = body.get(key)
        if key == "Scope" and v == "local" or key == "ConfigFrom" and v in ({}, {"Network": ""}):
            continue
        if v not in (None, False, "", {}, []):
            raise not_supported(f"network {key}", why)
    ipam = body.get("IPAM") or {}
    if not isinstance(ipam, dict):
        raise bad_request("IPAM must be an object")
    if (ipam.get("Driver") or "default") != "default" or ipam.get("Config") or ipam.get("Options"):
        raise not_supported("network IPAM settings (subnet, range, gateway, driver)",
                            f"user networks share the host bridge's subnet {eng.manager.net.subnet}")
    labels = body.get("Labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise bad_request("network Labels must be an object of strings")
    with eng.lock:
        if name in user_networks(eng):
            raise conflict(f"network with name {name} already exists")
        nid = hashlib.sha256(f"provisioner-network:{name}:{secrets.token_hex(8)}".encode()).hexdigest()
        data = {"Name": name, "Id": nid, "Created": time.time(), "Labels": labels,
                "Attachable": bool(body.get("Attachable"))}
        _dir(eng).mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(_dir(eng) / f"{name}.json", json.dumps(data, indent=2) + "\n", mode=0o600)
    return 201, {"Id": nid, "Warning": ""}


def remove_network(eng, req, conn, id):
    name = resolve(eng, id)
    if name == BRIDGE:
        raise ApiError(403, "bridge is a pre-defined network and cannot be removed")
    with eng.lock:
        active = _members(eng, name)
        if active:
            raise ApiError(403, f"error while removing network: network {name} id {_id_of(eng, name)} has active "
                                f"endpoints ({', '.join(sorted(c['Name'] for c in active.values()))})")
        (_dir(eng) / f"{name}.json").unlink(missing_ok=True)
    return 204, None


def _id_of(eng, name: str) -> str:
    return user_networks(eng).get(name, {}).get("Id", "")


def prune_networks(eng, req, conn):
    f = parse_filters(req, {"label", "until"})
    if "until" in f:
        raise not_supported("the network prune filter 'until'")
    used = {n for d in eng.ps(True) for n, _ in d.get("networks") or []}
    deleted = []
    with eng.lock:
        for name, n in user_networks(eng).items():
            if name in used or not all(_label_ok(n.get("Labels") or {}, w) for w in f.get("label", [])):
                continue
            (_dir(eng) / f"{name}.json").unlink(missing_ok=True)
            deleted.append(name)
    return 200, {"NetworksDeleted": deleted or None}


def _endpoint_config(body: dict, key: str, network: str) -> list[str]:
    """The aliases an EndpointConfig asks for; anything else it sets is refused."""
    ep = body.get(key) or {}
    if not isinstance(ep, dict):
        raise bad_request(f"{key} must be an object")
    for k, v in ep.items():
        if k in ("Aliases", "NetworkID", "EndpointID", "Gateway", "IPAddress", "MacAddress", "IPPrefixLen"):
            continue
        if k == "IPAMConfig" and not any((v or {}).values()):
            continue
        if v not in (None, "", 0, False, [], {}):
            raise not_supported(f"{key}.{k} on network {network}",
                                "addresses come from the host bridge's allocator" if k == "IPAMConfig" else "")
    aliases = ep.get("Aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise bad_request(f"{key}.Aliases must be a list of strings")
    if aliases and network == BRIDGE:
        raise bad_request("network-scoped alias is supported only for containers in user defined networks")
    return aliases


def endpoint_aliases(body: dict | None, network: str) -> list[str]:
    """For container create: the aliases NetworkingConfig.EndpointsConfig[network] asks for."""
    return _endpoint_config({"EndpointConfig": body or {}}, "EndpointConfig", network)


def connect_network(eng, req, conn, id):
    name = resolve(eng, id)
    body = req.json_object()
    rec = eng.container(str(body.get("Container") or ""))
    aliases = _endpoint_config(body, "EndpointConfig", name)
    nets = member_networks(rec)
    if name == BRIDGE:
        raise ApiError(403, f"endpoint with name {rec.name} already exists in network bridge "
                            "(every container here is on the host's bridge)")
    if any(n == name for n, _ in nets):
        raise ApiError(403, f"endpoint with name {rec.name} already exists in network {name}")
    try:
        eng.manager.set_networks(rec.id, nets + [(name, aliases)])
    except ContainerError as exc:
        raise bad_request(str(exc)) from None
    return 200, None


def disconnect_network(eng, req, conn, id):
    name = resolve(eng, id)
    body = req.json_object()
    rec = eng.container(str(body.get("Container") or ""))
    if name == BRIDGE:
        raise not_supported("disconnecting a container from the bridge network", "every container here is on it")
    nets = member_networks(rec)
    if not any(n == name for n, _ in nets):
        raise ApiError(403, f"container {rec.id} is not connected to network {name}")
    eng.manager.set_networks(rec.id, [(n, a) for n, a in nets if n != name])
    return 200, None


def register(router) -> None:
    router.add("GET", "/networks", list_networks)
    router.add("POST", "/networks/create", create_network)
    router.add("POST", "/networks/prune", prune_networks)
    router.add("GET", "/networks/{id}", inspect_network)
    router.add("DELETE", "/networks/{id}", remove_network)
    router.add("POST", "/networks/{id}/connect", connect_network)
    router.add("POST", "/networks/{id}/disconnect", disconnect_network)
