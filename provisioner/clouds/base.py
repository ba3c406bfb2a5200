"""The cloud-neutral part: what a driver must do, and the pure planner (Stack -> LaunchPlan).

Tags are the state: every resource a launch creates carries the stack and host name, and
`status`/`destroy` find resources only by those tags (GCE firewalls, which cannot carry labels,
by their reserved name prefix plus a marker in their description).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import ConfigError
from ..runspec.ports import PublishedPort
from ..stack import CloudSettings, MetricsSpec, Stack
from .userdata import host_context, render_user_data

CLOUDS = ("aws", "gce", "local")
LOCAL_SSH_CIDR = "127.0.0.1/32"  # the local cloud forwards SSH on loopback only
# ...and inside the VM, qemu's user-mode network delivers that forward from its host address
LOCAL_GUEST_SSH_SOURCE = "10.0.2.2/32"


def host_ssh_cidr(cloud: str, cidr: str) -> str:
    """The range the host's own firewall allows SSH from: the cloud firewall's range, as the
    host sees it (the local cloud's loopback forward arrives from qemu's user-mode gateway)."""
    return LOCAL_GUEST_SSH_SOURCE if cloud == "local" else cidr


class _TagKeys(dict):
    """Tag / label key per cloud. GCE labels allow only [a-z0-9_-]: any cloud but AWS gets that
    spelling (so other drivers, e.g. the local qemu cloud, can reuse launch/destroy)."""

    def __init__(self, what: str):
        super().__init__(aws=f"provisioner:{what}", gce=f"provisioner-{what}")
        self.what = what

    def __missing__(self, cloud: str) -> str:
        return f"provisioner-{self.what}"


TAG_STACK, TAG_HOST, TAG_VOLUME, TAG_KEEP = (_TagKeys(w) for w in ("stack", "host", "volume", "keep"))
MAX_RESOURCE_NAME = 63 - len("provisioner-") - len("-ports")
AWS_VOLUME_DEVICES = [f"/dev/sd{c}" for c in "fghijklmnop"]
VOLUME_TYPES = {"aws": {"standard", "gp2", "gp3", "io1", "io2", "st1", "sc1"},
                "gce": {"pd-standard", "pd-balanced", "pd-ssd", "pd-extreme", "hyperdisk-balanced",
                        "hyperdisk-extreme", "hyperdisk-throughput"}}
VOLUME_TYPES["local"] = VOLUME_TYPES["aws"] | VOLUME_TYPES["gce"]  # a qcow2 file either way


@dataclass(frozen=True)
class FirewallRule:
    protocol: str        # tcp | udp
    first: int
    last: int
    cidr: str

    def __str__(self) -> str:
        span = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        return f"{span}/{self.protocol} from {self.cidr}"


@dataclass(frozen=True)
class VolumePlan:
    name: str
    size_gb: int
    type: str | None
    encrypted: bool
    keep: bool
    iops: int | None
    device: str          # AWS: /dev/sdX mapping; GCE: the device name (shows up as google-<name>)
    tags: dict[str, str]
    kms_key: str | None = None


@dataclass(frozen=True)
class HostPlan:
    stack: str
    host: str
    cloud: str
    resource_name: str   # "<stack>-<host>": instance, security group / firewall / network tag name
    settings: CloudSettings
    rules: tuple[FirewallRule, ...]
    volumes: tuple[VolumePlan, ...]
    ephemeral_count: int
    ephemeral_interface: str | None
    user_data: str
    tags: dict[str, str]
    ssh_public_key: str


@dataclass(frozen=True)
class LaunchPlan:
    stack: str
    cloud: str
    key_name: str
    public_key: str
    ssh_cidr: dict[str, str]           # host -> CIDR allowed to SSH
    ssh_cidr_source: dict[str, str]    # host -> where it came from (stack file / option / detected)
    hosts: tuple[HostPlan, ...]


@dataclass
class Resource:
    """One cloud resource found by tag (or created by this run)."""

    kind: str            # instance | volume | firewall | key | network (GCE: the stack's own)
    id: str
    name: str
    host: str | None = None
    state: str | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self):
        return {"kind": self.kind, "id": self.id, "name": self.name, "host": self.host, "state": self.state,
                **({"extra": self.extra} if self.extra else {})}


class CloudDriver(Protocol):
    name: str

    def check(self, plan: LaunchPlan) -> None:
        """Validate zone/region, instance type and image exist; create nothing."""

    def import_key(self, plan: LaunchPlan) -> Resource | None: ...
    # optional: `prepare(plan, existing) -> list[Resource]`, stack-wide resources made before the
    # hosts' (GCE: the stack's own network); what it returns is removed again if the launch fails
    def create_firewall(self, hp: HostPlan) -> Resource: ...
    def create_instance(self, hp: HostPlan, key: Resource | None, firewall: Resource) -> Resource: ...
    def instance_state(self, inst: Resource) -> Resource: ...
    def create_volume(self, hp: HostPlan, vp: VolumePlan, inst: Resource) -> Resource: ...
    def attach_volume(self, inst: Resource, vol: Resource, vp: VolumePlan) -> None: ...
    def console_output(self, inst: Resource) -> str: ...
    def find(self, stack: str) -> list[Resource]: ...
    def delete(self, res: Resource) -> None: ...
    def wait_deleted(self, res: Resource, timeout: float) -> bool: ...


def stack_tags(cloud: str, stack: str, host: str | None = None) -> dict[str, str]:
    tags = {TAG_STACK[cloud]: stack}
    if host:
        tags[TAG_HOST[cloud]] = host
    return tags


def firewall_rules(ports: list[PublishedPort], ssh_cidr: str, metrics: MetricsSpec | None = None
                   ) -> tuple[FirewallRule, ...]:
    """SSH from the operator's range, each published port from anywhere (they are the service), the
    agent's metrics port from `metrics.allow_from` only (not opened without it)."""
    rules = {FirewallRule("tcp", 22, 22, ssh_cidr)}
    for p in ports:
        rules.add(FirewallRule(p.protocol, p.first, p.last, "0.0.0.0/0"))
    if metrics is not None and metrics.allow_from:
        rules.add(FirewallRule("tcp", metrics.port, metrics.port, metrics.allow_from))
    return tuple(sorted(rules, key=lambda r: (r.protocol, r.first, r.last, r.cidr)))


def _aws_style(cloud: str, settings: CloudSettings) -> bool:
    return cloud == "aws" or (cloud == "local" and settings.options.get("style", "aws") == "aws")


def plan_launch(stack: Stack, cloud: str, public_key: str, *, ssh_cidr: str | None = None,
                detected_cidr: str | None = None, template_dir=None) -> LaunchPlan:
    """Pure: decide every resource to create. `ssh_cidr` (option) beats the stack file beats detection."""
    if cloud not in CLOUDS:
        raise ConfigError(f"unknown cloud {cloud!r} (expected one of: {', '.join(CLOUDS)})")
    if ssh_cidr:
        try:
            ssh_cidr = str(ipaddress.ip_network(ssh_cidr, strict=True))
        except ValueError as exc:
            raise ConfigError(f"--ssh-cidr: {exc}") from None
    hosts, cidrs, sources = [], {}, {}
    for h in stack.hosts:
        if len(f"{stack.name}-{h.name}") > MAX_RESOURCE_NAME:
            # GCE names are at most 63 characters: "provisioner-<stack>-<host>-ports" must fit
            raise ConfigError(f"host {h.name!r}: '<stack>-<host>' = '{stack.name}-{h.name}' is longer than "
                              f"{MAX_RESOURCE_NAME} characters; shorten the stack or host name", stack.path, h.line)
        settings = h.clouds.get(cloud)
        if settings is None:
            raise ConfigError(f"host {h.name!r} has no '{cloud}:' settings", stack.path, h.line)
        if ssh_cidr:
            cidr, source = ssh_cidr, "--ssh-cidr"
        elif h.ssh_cidr:
            cidr, source = h.ssh_cidr, "stack file"
        elif cloud == "local":
            cidr, source = LOCAL_SSH_CIDR, "local cloud (SSH is forwarded on 127.0.0.1 only)"
        elif detected_cidr:
            cidr, source = detected_cidr, "detected from the local route (set ssh_cidr to override)"
        else:
            raise ConfigError(f"host {h.name!r}: no ssh_cidr in the stack, none given with --ssh-cidr, and the "
                              "operator address could not be detected", stack.path, h.line)
        if cidr.endswith("/0"):
            raise ConfigError(f"host {h.name!r}: SSH from {cidr} would open it to everyone; name a range")
        cidrs[h.name], sources[h.name] = cidr, source
        base_tags = {**settings.tags, **stack_tags(cloud, stack.name, h.name)}
        if cloud == "aws":
            base_tags["Name"] = f"{stack.name}-{h.name}"
        if len(h.volumes) > len(AWS_VOLUME_DEVICES):
            raise ConfigError(f"host {h.name!r}: at most {len(AWS_VOLUME_DEVICES)} volumes", stack.path, h.line)
        for v in h.volumes:
            if v.type and v.type not in VOLUME_TYPES[cloud]:
                raise ConfigError(f"host {h.name!r}: volume {v.name!r}: {v.type!r} is not a {cloud} volume type "
                                  f"(one of: {', '.join(sorted(VOLUME_TYPES[cloud]))})", stack.path, h.line)
        volumes = tuple(
            VolumePlan(v.name, v.size_gb, v.type, v.encrypted, v.keep, v.iops,
                       AWS_VOLUME_DEVICES[i] if _aws_style(cloud, settings) else v.name,
                       {**base_tags, TAG_VOLUME[cloud]: v.name, TAG_KEEP[cloud]: "true" if v.keep else "false",
                        **({"Name": f"{stack.name}-{h.name}-{v.name}"} if cloud == "aws" else {})},
                       v.kms_key)
            for i, v in enumerate(h.volumes))
        vol_info = [{"name": v.name, "device": v.device, "size_gb": v.size_gb} for v in volumes]
        user_data = render_user_data(host_context(
            stack=stack.name, host=h.name, cloud=cloud, services=list(h.services), ssh_public_key=public_key,
            volumes=vol_info, ssh_cidr=host_ssh_cidr(cloud, cidr)), template_dir)
        eph = h.ephemeral
        hosts.append(HostPlan(
            stack=stack.name, host=h.name, cloud=cloud, resource_name=f"{stack.name}-{h.name}", settings=settings,
            rules=firewall_rules(stack.published_ports(h), cidr, h.metrics), volumes=volumes,
            ephemeral_count=(eph.count or 0) if eph else 0, ephemeral_interface=eph.interface if eph else None,
            user_data=user_data, tags=base_tags, ssh_public_key=public_key))
    return LaunchPlan(stack=stack.name, cloud=cloud, key_name=f"provisioner-{stack.name}", public_key=public_key,
                      ssh_cidr=cidrs, ssh_cidr_source=sources, hosts=tuple(hosts))
