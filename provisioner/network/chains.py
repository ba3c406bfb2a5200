"""The names in our nftables table that the planner, the balancer and the applier agree on
(apply.table_script has the table): a published port's own chain, p_<proto>_<addr|any>_<port>,
and the element of a verdict map that jumps to it — @bound4 (address . proto . port) for a port
published on one address, @wild4 (proto . port) for one published on every address.

A port's chain holds exactly one rule: a container's DNAT (tagged "prov:<name>|<mapping>",
plan.PortRule) or a replicated service's numgen DNAT over its ready replicas (tagged
"prov-lb:<group>|<mapping>", balance.py). Either way, moving the port — to another container,
or to another set of replicas — is that chain flushed and given its new rule in one transaction.
"""
from __future__ import annotations

from ..runspec.ports import WILDCARD

PORT_CHAIN = "p_"
BOUND_MAP = "bound4"
WILD_MAP = "wild4"


def port_chain(proto: str, host_ip: str, host_port: int) -> str:
    where = "any" if host_ip == WILDCARD else host_ip
    return f"{PORT_CHAIN}{proto}_{where}_{host_port}"


def map_key(proto: str, host_ip: str, host_port: int) -> tuple[str, str]:
    """(the verdict map, the element's key) that leads to the port's chain."""
    if host_ip == WILDCARD:
        return WILD_MAP, f"{proto} . {host_port}"
    return BOUND_MAP, f"{host_ip} . {proto} . {host_port}"


def key_of_chain(chain: str) -> tuple[str, str]:
    """The map element that jumps to a port chain (the inverse of port_chain)."""
    proto, where, port = chain[len(PORT_CHAIN):].split("_")
    return map_key(proto, WILDCARD if where == "any" else where, int(port))
