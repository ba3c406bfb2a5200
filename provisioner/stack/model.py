"""The parsed stack: plain frozen data, no behaviour beyond small lookups.

One stack file parses into one `Stack`: its hosts (where it runs, on which cloud, with which
disks) and its services (what runs, as typed container options). Every consumer — deploy, the
clouds, `provision up/down/ps`, the host's boot hook — takes this model, never the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..images.registryconf import RegistriesConf
from ..runspec.health import Healthcheck
from ..runspec.mounts import VolumeSpec
from ..runspec.ports import PortMapping, PublishedPort, published
from ..runspec.restart import RestartPolicy
from ..runspec.seccomp import SecurityOpts


@dataclass(frozen=True)
class RootDisk:
    size_gb: int | None = None
    type: str | None = None
    encrypted: bool = True      # AWS: `encrypted: false` opts out (GCE encrypts every disk anyway)
    kms_key: str | None = None  # AWS KMS key id/ARN/alias; GCE Cloud KMS key name (CMEK)


@dataclass(frozen=True)
class CloudSettings:
    """One host's settings for one cloud (`aws:` or `gce:` under the host)."""

    cloud: str
    instance_type: str          # AWS instance type / GCE machine type
    image: str                  # AMI id / GCE image (name, URL or "family/NAME")
    region: str | None          # AWS region (GCE: derived from zone)
    zone: str | None
    subnet: str | None
    network: str | None         # GCE network (AWS: unused)
    tags: dict[str, str]        # AWS tags / GCE labels (user-supplied; ours are added on top)
    spot: bool                  # spot / preemptible, falling back to on-demand
    root_disk: RootDisk
    line: int | None = None
    options: dict = field(default_factory=dict)  # local cloud: style (aws|gce), memory_mb, cpus, os
    identity: dict | None = None  # aws: {instance_profile}; gce: {service_account, scopes}: attached at launch


@dataclass(frozen=True)
class CloudVolume:
    """The cloud-facing part of a `disks.volumes` entry (the disk layer owns the rest)."""

    name: str
    size_gb: int
    type: str | None
    encrypted: bool
    keep: bool
    iops: int | None
    kms_key: str | None = None  # as RootDisk.kms_key


@dataclass(frozen=True)
class EphemeralSpec:
    count: int | None
    interface: str | None       # nvme | scsi (GCE local SSD)


@dataclass(frozen=True)
class MetricsSpec:
    """`metrics:` of a host: the agent's Prometheus endpoint, and an optional Graphite push."""

    port: int = 9100
    allow_from: str | None = None     # CIDR the host and cloud firewalls open `port` to (None: closed)
    graphite: tuple[str, int] | None = None   # (host, port) to push the same series to, plaintext
    interval: float = 10.0            # seconds between Graphite pushes
    prefix: str = "provisioner"       # the Graphite path's first component(s)
    line: int | None = None

    def to_json(self) -> dict:
        return {"port": self.port, "allow_from": self.allow_from,
                "graphite": list(self.graphite) if self.graphite else None, "interval": self.interval,
                "prefix": self.prefix}


@dataclass(frozen=True)
class LoggingSpec:
    """`logging:` of a host: where the agent ships every container's output (RFC 5424 over RFC 6587)."""

    scheme: str                       # tcp | tls
    host: str
    port: int
    buffer_bytes: int = 64 << 20      # the on-disk buffer's bound while the collector is away
    ca: str | None = None             # tls: a CA certificate file (absolute), else the system's
    line: int | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def to_json(self) -> dict:
        return {"ship_to": self.url, "buffer_bytes": self.buffer_bytes, "ca": self.ca}


@dataclass(frozen=True)
class Host:
    name: str
    clouds: dict[str, CloudSettings]
    services: tuple[str, ...]
    ssh_cidr: str | None
    volumes: tuple[CloudVolume, ...]
    ephemeral: EphemeralSpec | None
    disks: Any = None            # provisioner.disks.config.DisksConfig, when the host has `disks:`
    registries: RegistriesConf = field(default_factory=RegistriesConf)  # where it pulls from (remaps, mirrors)
    line: int | None = None
    metrics: MetricsSpec | None = None
    logging: LoggingSpec | None = None


@dataclass(frozen=True)
class ServiceSpec:
    """One service, as typed container options (the values `provision container run` takes)."""

    name: str
    image: str
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()                 # "K=V", in file order
    env_files: tuple[str, ...] = ()           # absolute paths
    ports: tuple[PortMapping, ...] = ()
    volumes: tuple[VolumeSpec, ...] = ()      # named volumes by their name in the stack
    links: tuple[tuple[str, str], ...] = ()   # (service, alias)
    depends_on: tuple[tuple[str, str], ...] = ()  # (service, condition)
    restart: RestartPolicy = RestartPolicy()
    healthcheck: Healthcheck | None = None
    health_disabled: bool = False             # healthcheck: {disable: true} or test: ["NONE"]: not the image's either
    memory: int | None = None                 # bytes (mem_limit)
    cpu_quota: int | None = None              # µs per runspec.resources.CPU_PERIOD (cpus)
    user: str | None = None
    working_dir: str | None = None
    hostname: str | None = None
    security: SecurityOpts = SecurityOpts()
    cloud_metadata: bool = False              # may reach the instance metadata service (169.254.169.254)
    line: int | None = None

    def dependencies(self) -> list[str]:
        return sorted({d for d, _ in self.depends_on} | {t for t, _ in self.links})

    def published(self) -> list[PublishedPort]:
        return published(self.ports)


@dataclass(frozen=True)
class Stack:
    name: str
    path: str
    hosts: tuple[Host, ...]
    services: dict[str, ServiceSpec]
    order: tuple[str, ...] = ()          # service names, dependencies first (by depth)
    volumes: tuple[str, ...] = ()        # top-level named volumes

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def published_ports(self, host: Host) -> list[PublishedPort]:
        """The ports to open on `host`: the union of its services' published ports."""
        return published(m for s in host.services for m in self.services[s].ports)

    def only(self, names: set[str] | tuple[str, ...]) -> "Stack":
        """The same stack with only the services named (in dependency order)."""
        return replace(self, services={n: s for n, s in self.services.items() if n in names},
                       order=tuple(n for n in self.order if n in names))
