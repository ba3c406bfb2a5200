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
from ..runspec.kernel import Ulimit
from ..runspec.mounts import VolumeSpec
from ..runspec.netopts import DnsConfig, ExtraHost
from ..runspec.ports import PortMapping, PublishedPort, published
from ..runspec.privileges import Privileges
from ..runspec.process import LogConfig, Platform
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
class ServiceNetwork:
    """A service's place on one of the file's networks (`services.X.networks`)."""

    network: str                       # the key under the top-level `networks:` ("default" for the default)
    aliases: tuple[str, ...] = ()
    ipv4_address: str | None = None
    priority: int = 0                  # compose: the highest-priority network is the primary one


@dataclass(frozen=True)
class NetworkDef:
    """A top-level `networks:` entry; `name` is what it is called on the host."""

    key: str
    name: str
    internal: bool = False
    external: bool = False
    subnet: str | None = None
    gateway: str | None = None
    ip_range: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    line: int | None = None


@dataclass(frozen=True)
class FileRef:
    """A service's use of a top-level secret or config (short form: just the name)."""

    source: str
    target: str                        # absolute path in the container
    uid: int = 0
    gid: int = 0
    mode: int = 0o444


@dataclass(frozen=True)
class FileDef:
    """A top-level `secrets:` / `configs:` entry: where its content comes from."""

    kind: str                          # secret | config
    name: str
    file: str | None = None            # absolute path on this machine
    environment: str | None = None     # a variable of the project's environment
    content: str | None = None         # configs: inline content
    line: int | None = None


@dataclass(frozen=True)
class UpdateConfig:
    """deploy.update_config / rollback_config, kept for the day-2 switch (issue 13)."""

    parallelism: int = 1
    delay: float = 0.0
    failure_action: str = "pause"
    monitor: float = 0.0
    max_failure_ratio: float = 0.0
    order: str | None = None      # None: not said — provisioner's default (compose/switch.py)


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
    # -- the compose keys of issue 17 (defaults: compose's); see runspec/ for each value's meaning
    container_name: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    expose: tuple[tuple[int, str], ...] = ()            # (port, proto): documentation, as in compose
    privileges: Privileges = Privileges()
    read_only: bool = False
    ulimits: tuple[Ulimit, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()
    pids_limit: int | None = None
    shm_size: int | None = None
    memory_reservation: int | None = None
    cpu_shares: int | None = None
    init: bool = False
    tty: bool = False
    stdin_open: bool = False
    stop_signal: str | None = None
    stop_grace_period: float | None = None
    platform: Platform | None = None
    pull_policy: str = "missing"
    log: LogConfig = LogConfig()
    extra_hosts: tuple[ExtraHost, ...] = ()
    dns: DnsConfig = DnsConfig()
    group_add: tuple[str, ...] = ()
    networks: tuple[ServiceNetwork, ...] = ()           # (): the project's default network
    network_mode: str | None = None                     # host | none | service:NAME | container:NAME
    secrets: tuple[FileRef, ...] = ()
    configs: tuple[FileRef, ...] = ()
    replicas: int = 1
    deploy_labels: tuple[tuple[str, str], ...] = ()
    update_config: UpdateConfig | None = None
    rollback_config: UpdateConfig | None = None
    depends_restart: tuple[str, ...] = ()               # depends_on.X.restart: recreated with X
    profiles: tuple[str, ...] = ()

    def dependencies(self) -> list[str]:
        deps = {d for d, _ in self.depends_on} | {t for t, _ in self.links}
        if self.network_mode and self.network_mode.startswith("service:"):
            deps.add(self.network_mode.split(":", 1)[1])
        return sorted(deps)

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
    networks: dict[str, NetworkDef] = field(default_factory=dict)   # by key; "default" always there
    secrets: dict[str, FileDef] = field(default_factory=dict)
    configs: dict[str, FileDef] = field(default_factory=dict)
    notices: tuple[str, ...] = ()        # "file:line: text": what was accepted but ignored or defaulted
    variables: dict[str, str] = field(default_factory=dict, repr=False)  # the interpolation values used
    env_files: tuple[str, ...] = ()      # the .env files read for interpolation
    implicit_hosts: bool = False         # no hosts: section: one host ("main") runs every service

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
