"""Container networking: a bridge, a veth pair per container in its own network namespace,
addresses from a persisted allocator, NAT for egress, published ports as nftables DNAT rules behind verdict maps,
Docker-style --link (/etc/hosts lines + env vars) and a working resolv.conf.

Layout (house style: facts → pure plan → apply):
  model.py   plain data shared by the rest (NetworkConfig, Endpoint)
  ipam.py    address allocations persisted under <root>/network/ (locked, atomic)
  ports.py   "-p [IP:]HOST:CONTAINER[/udp]" parsing and conflict checks
  hosts.py   /etc/hosts, resolv.conf and link env var rendering
  facts.py   reads the system (links, netns, sysctls, nft rules, listening sockets)
  plan.py    pure: facts + desired endpoint → actions
  apply.py   actions → `ip`, `nft`, `sysctl` through the Runner
  registry.py user-defined networks: a bridge, subnet and table each, recorded with their labels
  names.py   what /etc/hosts says: links, and every container on a shared network, kept current
  balance.py a replicated service's published ports, over a map of its ready replicas' addresses
  join.py    a running container joins / leaves one more user-defined network (network connect)
  manage.py  connect / disconnect / reconnect / relink / takeover / remove_network: what the container code calls
  conntrack.py  the kernel's connection tracking entries of an endpoint: flushed and drained at a switch
"""
from .model import DEFAULT_NETWORK, Endpoint, NetworkConfig
from .manage import (
    connect, disconnect, endpoint, endpoints, reconnect, relink, remove_network, set_balance, takeover, teardown,
)
from .registry import NetworkSpec, all_networks, ensure
from .join import join, leave

__all__ = ["DEFAULT_NETWORK", "Endpoint", "NetworkConfig", "NetworkSpec", "all_networks", "connect", "disconnect",
           "endpoint", "endpoints", "ensure", "join", "leave", "reconnect", "relink", "remove_network", "set_balance",
           "takeover", "teardown"]
