"""/networks/...: the host's container network as Docker's "bridge" network. User-defined networks
(create, remove, connect, disconnect) answer with Docker-style errors until provisioner's own
user-defined bridges are there to map them to."""
from __future__ import annotations

import hashlib

from .containers import parse_filters
from .http import not_found, not_supported

BRIDGE = "bridge"
USER_NETWORKS = "user-defined networks are not available on this host yet (only the default bridge)"


def _id(name: str) -> str:
    return hashlib.sha256(f"provisioner-network:{name}".encode()).hexdigest()


def bridge_json(eng, with_containers: bool) -> dict:
    net = eng.manager.net
    out = {"Name": BRIDGE, "Id": _id(BRIDGE), "Created": "0001-01-01T00:00:00Z", "Scope": "local",
           "Driver": "bridge", "EnableIPv6": False,
           "IPAM": {"Driver": "default", "Options": None, "Config": [{"Subnet": net.subnet,
                                                                      "Gateway": str(net.gateway)}]},
           "Internal": False, "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""},
           "ConfigOnly": False, "Containers": {},
           "Options": {"com.docker.network.bridge.name": net.bridge}, "Labels": {}}
    if with_containers:
        for d in eng.ps(False):
            if d.get("address"):
                out["Containers"][d["id"]] = {"Name": d["name"], "EndpointID": "", "MacAddress": "",
                                              "IPv4Address": f"{d['address']}/{eng.prefixlen}", "IPv6Address": ""}
    return out


def _find(eng, ref: str) -> dict:
    if ref in (BRIDGE, _id(BRIDGE)) or (len(ref) >= 3 and _id(BRIDGE).startswith(ref)):
        return bridge_json(eng, True)
    raise not_found(f"network {ref} not found")


def list_networks(eng, req, conn):
    f = parse_filters(req, {"name", "id", "driver", "label", "type", "scope", "dangling"})
    b = bridge_json(eng, False)
    if "name" in f and not any(n in BRIDGE for n in f["name"]):
        return 200, []
    if "id" in f and not any(b["Id"].startswith(i) for i in f["id"]):
        return 200, []
    if "driver" in f and "bridge" not in f["driver"]:
        return 200, []
    if "label" in f or ("type" in f and "builtin" not in f["type"]):
        return 200, []
    return 200, [b]


def inspect_network(eng, req, conn, id):
    return 200, _find(eng, id)


def create_network(eng, req, conn):
    body = req.json_object()
    raise not_supported(f"creating network {body.get('Name')!r}", USER_NETWORKS)


def remove_network(eng, req, conn, id):
    _find(eng, id)
    raise not_supported("removing the default bridge network")


def connect_network(eng, req, conn, id):
    _find(eng, id)
    body = req.json_object()
    eng.container(str(body.get("Container") or ""))
    raise not_supported("connecting a container to a network", USER_NETWORKS)


def disconnect_network(eng, req, conn, id):
    _find(eng, id)
    body = req.json_object()
    eng.container(str(body.get("Container") or ""))
    raise not_supported("disconnecting a container from its network", USER_NETWORKS)


def prune_networks(eng, req, conn):
    parse_filters(req, {"label", "until"})
    return 200, {"NetworksDeleted": None}


def register(router) -> None:
    router.add("GET", "/networks", list_networks)
    router.add("POST", "/networks/create", create_network)
    router.add("POST", "/networks/prune", prune_networks)
    router.add("GET", "/networks/{id}", inspect_network)
    router.add("DELETE", "/networks/{id}", remove_network)
    router.add("POST", "/networks/{id}/connect", connect_network)
    router.add("POST", "/networks/{id}/disconnect", disconnect_network)
