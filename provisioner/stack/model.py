"""The parsed stack: plain frozen data, no behaviour beyond small lookups."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .ports import PublishedPort


@dataclass(frozen=True)
class RootDisk:
    size_gb: int | None = None
    type: str | None = None


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
    options: dict = field(default_factory=dict)  # local cloud: style (aws|gce), memory_mb, cpus


@dataclass(frozen=True)
class VolumeSpec:
    """The cloud-facing part of a `disks.volumes` entry (the disk layer owns the rest)."""

    name: str
    size_gb: int
    type: str | None
    encrypted: bool
    keep: bool
    iops: int | None


@dataclass(frozen=True)
class EphemeralSpec:
    count: int | None
    interface: str | None       # nvme | scsi (GCE local SSD)


@dataclass(frozen=True)
class Host:
    name: str
    clouds: dict[str, CloudSettings]
    services: tuple[str, ...]
    ssh_cidr: str | None
    volumes: tuple[VolumeSpec, ...]
    ephemeral: EphemeralSpec | None
    disks_raw: Any = None        # the raw `disks:` mapping (line-aware), for the host agent
    disks: Any = None            # provisioner.disks.config.parse_config() result, when available
    line: int | None = None


@dataclass(frozen=True)
class Service:
    name: str
    ports: tuple[PublishedPort, ...]
    raw: Any                     # the compose entry, line-aware (YDict), for the containers layer
    line: int | None = None


@dataclass(frozen=True)
class Stack:
    name: str
    path: str
    hosts: tuple[Host, ...]
    services: dict[str, Service]
    volumes: Any = field(default=None)   # compose top-level named volumes, raw

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def published_ports(self, host: Host) -> list[PublishedPort]:
        """The ports to open on `host`: the union of its services' published ports."""
        ports = {p for s in host.services for p in self.services[s].ports}
        return sorted(ports)
