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


@dataclass(frozen=True)
class NetworkConfig:
    """The one container network of a host. Every name is a parameter so tests (and hosts
    already using 10.88/16, e.g. podman) can run their own beside it."""

    bridge: str = "prov0"
    subnet: str = "10.88.0.0/16"
    table: str = "provisioner"  # nftables `table ip <table>`: ours alone, so teardown is exact
    netns_prefix: str = "prov-"
    veth_prefix: str = "pv"
    inner_ifname: str = "eth0"

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

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.network.network_address + 1

    def veth_name(self, container: str) -> str:
        """Host-side veth name: prefix + a hash of the container name (IFNAMSIZ is 16)."""
        return self.veth_prefix + hashlib.sha256(container.encode()).hexdigest()[: 15 - len(self.veth_prefix)]

    def netns_name(self, container: str) -> str:
        return self.netns_prefix + container

    def to_json(self) -> dict:
        return asdict(self)


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
    # Docker user-defined networks it is on, with its aliases on each: every member of one of
    # them finds the others by name and alias in /etc/hosts (they share the host's bridge)
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    env: dict = field(default_factory=dict, compare=False)  # link env vars rendered at connect

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
        d["groups"] = [[g, list(aliases)] for g, aliases in self.groups]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Endpoint":
        d = dict(d)
        d["ports"] = tuple(PortMapping.from_json(p) for p in d.get("ports", ()))
        d["exposed"] = tuple((int(p), str(proto)) for p, proto in d.get("exposed", ()))
        d["links"] = tuple((str(n), str(a)) for n, a in d.get("links", ()))
        d["groups"] = tuple((str(g), tuple(str(a) for a in aliases)) for g, aliases in d.get("groups", ()))
        d["env"] = dict(d.get("env") or {})
        return cls(**d)
