"""Plain data for container networking."""
from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import asdict, dataclass, field

from ..errors import ConfigError
from ..runspec.ports import PortMapping

_IFNAME = re.compile(r"^[A-Za-z0-9_-]{1,15}$")  # no '.': sysctl keys use it as separator
_NFT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")


DEFAULT_NETWORK = "bridge"   # Docker's name for the host's default bridge: no name resolution, --link only


@dataclass(frozen=True)
class NetworkConfig:
    """A container network of a host: its bridge, subnet and nftables table. The host's default
    one ("bridge") is read from <root>/containers/network.json; it also names the pool user-defined
    networks take their subnets from and the prefixes of everything made. Every name is a
    parameter so tests (and hosts already using 10.88/16, e.g. podman) can run their own beside it."""

    bridge: str = "prov0"
    subnet: str = "10.88.0.0/16"
    table: str = "provisioner"  # nftables `table ip <table>`: ours alone, so teardown is exact
    netns_prefix: str = "prov-"
    veth_prefix: str = "pv"
    inner_ifname: str = "eth0"
    pool: str = "10.89.0.0/16"  # user-defined networks' subnets come from here…
    pool_prefixlen: int = 24    # …this big each
    internal: bool = False      # no way out: no NAT, nothing forwarded off the bridge
    gateway_ip: str | None = None   # the bridge's address (default: the subnet's first)
    ip_range: str | None = None     # containers' addresses from this part of the subnet only

    def __post_init__(self):
        try:
            net = ipaddress.IPv4Network(self.subnet, strict=True)
        except ValueError as exc:
            raise ConfigError(f"bad container subnet {self.subnet!r}: {exc}") from exc
        if net.prefixlen > 30:
            raise ConfigError(f"container subnet {self.subnet} is too small (want /30 or larger)")
        if not _IFNAME.fullmatch(self.bridge):
            raise ConfigError(f"bad bridge name {self.bridge!r} (1-15 of letters, digits, '_', '-')")
        if not _NFT_NAME.fullmatch(self.table):
            raise ConfigError(f"bad nftables table name {self.table!r}")
        if len(self.veth_prefix) > 5:
            raise ConfigError(f"veth prefix {self.veth_prefix!r} is longer than 5 characters")
        try:
            pool = ipaddress.IPv4Network(self.pool, strict=True)
        except ValueError as exc:
            raise ConfigError(f"bad network pool {self.pool!r}: {exc}") from exc
        if not pool.prefixlen <= self.pool_prefixlen <= 29:
            raise ConfigError(f"pool_prefixlen {self.pool_prefixlen} must be within {pool} and at most 29")
        if self.gateway_ip and ipaddress.IPv4Address(self.gateway_ip) not in net:
            raise ConfigError(f"gateway {self.gateway_ip} is not in {self.subnet}")
        if self.ip_range and not ipaddress.IPv4Network(self.ip_range).subnet_of(net):
            raise ConfigError(f"ip_range {self.ip_range} is not inside {self.subnet}")

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(self.gateway_ip) if self.gateway_ip else self.network.network_address + 1

    def veth_name(self, container: str) -> str:
        """Host-side veth name: prefix + a hash of the container name (IFNAMSIZ is 16)."""
        return self.veth_prefix + hashlib.sha256(container.encode()).hexdigest()[: 15 - len(self.veth_prefix)]

    def netns_name(self, container: str) -> str:
        return self.netns_prefix + container

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Attachment:
    """A container on one network: its address there and the names others on it resolve."""

    network: str               # the network's name (DEFAULT_NETWORK: the host's default bridge)
    address: str
    prefixlen: int
    gateway: str
    veth: str                  # host side, on the network's bridge
    ifname: str                # inside the container: eth0, eth1, … (eth0 holds the default route)
    aliases: tuple[str, ...] = ()

    def to_json(self) -> dict:
        d = asdict(self)
        d["aliases"] = list(self.aliases)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Attachment":
        return cls(str(d["network"]), str(d["address"]), int(d["prefixlen"]), str(d["gateway"]), str(d["veth"]),
                   str(d["ifname"]), tuple(d.get("aliases") or ()))


@dataclass(frozen=True)
class Endpoint:
    """One container's attachment, as persisted under <root>/network/endpoints/<name>.json."""

    name: str
    address: str              # e.g. "10.88.0.2"
    prefixlen: int
    gateway: str
    veth: str                 # host side; the inner end is cfg.inner_ifname in the netns
    netns_path: str           # /run/netns/<name> or a path the caller gave (/proc/PID/ns/net)
    owns_netns: bool          # we created it (named) and so delete it on disconnect
    hostname: str
    ports: tuple[PortMapping, ...] = ()
    exposed: tuple[tuple[int, str], ...] = ()  # container ports (port, proto) for link env vars
    links: tuple[tuple[str, str], ...] = ()    # (linked container, alias)
    files_dir: str = ""        # holds hosts, resolv.conf, hostname for the runtime to bind-mount
    metadata: bool = False     # may reach the instance metadata service (run --cloud-metadata)
    standby: bool = False      # its ports are recorded but not published yet: it stands by to take
                               # them over from the container it replaces (manage.takeover)
    env: dict = field(default_factory=dict, compare=False)  # link env vars rendered at connect
    # the networks it is on, the primary (default route, published ports) first; empty in records
    # made before user-defined networks: then the fields above are its one attachment, on the default
    extra: tuple[Attachment, ...] = ()
    extra_hosts: tuple[tuple[str, str], ...] = ()   # (name, address) lines of its own /etc/hosts
    dns: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] = ((), (), ())  # servers, search, options
    group: str | None = None   # a replicated service: its ports are the group's, balanced (balance.py)

    @property
    def attachments(self) -> tuple[Attachment, ...]:
        if self.extra:
            return self.extra
        return (Attachment(DEFAULT_NETWORK, self.address, self.prefixlen, self.gateway, self.veth, "eth0"),)

    def on(self, network: str) -> Attachment | None:
        return next((a for a in self.attachments if a.network == network), None)

    @property
    def netns_name(self) -> str | None:
        return self.netns_path.rsplit("/", 1)[1] if self.owns_netns else None

    def oci_namespace(self) -> dict:
        """The runtime-spec linux.namespaces entry that joins this endpoint's netns."""
        return {"type": "network", "path": self.netns_path}

    def oci_mounts(self) -> list[dict]:
        """Runtime-spec mounts for /etc/hosts, /etc/resolv.conf and /etc/hostname. Bind mounts
        of the files themselves: relink() rewrites hosts in place, so a running container sees
        a linked container's new address (as Docker's /etc/hosts does)."""
        return [{"destination": f"/etc/{f}", "type": "bind", "source": f"{self.files_dir}/{f}",
                 "options": ["rbind", "rprivate"]} for f in ("hosts", "resolv.conf", "hostname")]

    def to_json(self) -> dict:
        d = asdict(self)
        d["ports"] = [p.to_json() for p in self.ports]
        d["exposed"] = [list(e) for e in self.exposed]
        d["links"] = [list(link) for link in self.links]
        for k in ("extra", "extra_hosts", "dns", "group"):
            d.pop(k)
        if self.group:
            d["group"] = self.group
        if self.extra:
            d["networks"] = [a.to_json() for a in self.extra]
        if self.extra_hosts:
            d["extra_hosts"] = [list(h) for h in self.extra_hosts]
        if any(self.dns):
            d["dns"] = [list(x) for x in self.dns]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Endpoint":
        d = dict(d)
        d["ports"] = tuple(PortMapping.from_json(p) for p in d.get("ports", ()))
        d["exposed"] = tuple((int(p), str(proto)) for p, proto in d.get("exposed", ()))
        d["links"] = tuple((str(n), str(a)) for n, a in d.get("links", ()))
        d["env"] = dict(d.get("env") or {})
        d["extra"] = tuple(Attachment.from_json(a) for a in d.pop("networks", ()) or ())
        d["extra_hosts"] = tuple((str(n), str(a)) for n, a in d.get("extra_hosts") or ())
        dns = d.get("dns") or ((), (), ())
        d["dns"] = tuple(tuple(str(x) for x in part) for part in dns)
        return cls(**d)
