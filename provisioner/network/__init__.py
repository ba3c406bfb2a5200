"""Container networking: a bridge, a veth pair per container in its own network namespace,
addresses from a persisted allocator, NAT for egress, published ports as nftables DNAT rules behind verdict maps,
Docker-style --link (/etc/hosts lines + env vars), user networks' names and aliases in /etc/hosts and a working resolv.conf.

Layout (house style: facts → pure plan → apply):
  model.py   plain data shared by the rest (NetworkConfig, Endpoint)
  ipam.py    address allocations persisted under <root>/network/ (locked, atomic)
  ports.py   "-p [IP:]HOST:CONTAINER[/udp]" parsing and conflict checks
  hosts.py   /etc/hosts, resolv.conf and link env var rendering
  facts.py   reads the system (links, netns, sysctls, nft rules, listening sockets)
  plan.py    pure: facts + desired endpoint → actions
  apply.py   actions → `ip`, `nft`, `sysctl` through the Runner
  manage.py  connect / disconnect / reconnect / relink / takeover: the entry points the container code calls
  conntrack.py  the kernel's connection tracking entries of an endpoint: flushed and drained at a switch
"""
from .model import Endpoint, NetworkConfig
from .manage import (connect, disconnect, endpoint, endpoints, normalize_groups, reconnect, regroup, relink,
                     takeover, teardown)

__all__ = ["Endpoint", "NetworkConfig", "connect", "disconnect", "endpoint", "endpoints", "normalize_groups",
           "reconnect", "regroup", "relink", "takeover", "teardown"]
