"""`load_stack(path) -> Stack`: read a stack file, validate it fully, point errors at file:line.

Top-level keys: name, hosts, services, volumes. `services:` entries stay raw (the containers layer
owns them); here we only check they are mappings, collect their published ports, and check that host
placements name known services. `disks:` is delegated to `provisioner.disks.config.parse_config`.
"""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

from .. import yamlutil
from ..errors import ConfigError, StackError
from .model import CloudSettings, EphemeralSpec, Host, RootDisk, Service, Stack, VolumeSpec
from .ports import PortSyntaxError, parse_port

TOP_KEYS = {"name", "hosts", "services", "volumes"}
HOST_KEYS = {"name", "aws", "gce", "local", "services", "disks", "ssh_cidr"}
LOCAL_KEYS = {"style", "memory", "cpus"}
CLOUD_KEYS = {
    "aws": {"instance_type", "image", "region", "zone", "subnet", "tags", "spot", "root_disk"},
    "gce": {"machine_type", "image", "zone", "network", "subnet", "labels", "preemptible", "root_disk"},
}
# Names end up in resource names, DNS labels and GCE labels: keep them to what all accept.
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$|^[a-z]$")
AMI_RE = re.compile(r"^ami-[0-9a-f]{8,17}$")


class _Ctx:
    """Error helper bound to one file."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, msg: str, container: Any = None, key: Any = None) -> StackError:
        return StackError(msg, self.path, yamlutil.line_of(container, key) if container is not None else None)

    def keys(self, d: dict, allowed: set[str], where: str) -> None:
        for k in d:
            if k not in allowed:
                raise self.fail(f"unknown key {k!r} in {where} (expected one of: {', '.join(sorted(allowed))})", d, k)

    def mapping(self, parent: Any, key: Any, where: str, required: bool = False) -> dict | None:
        v = parent.get(key) if isinstance(parent, dict) else None
        if v is None:
            if required:
                raise self.fail(f"{where}: missing required key {key!r}", parent)
            return None
        if not isinstance(v, dict):
            raise self.fail(f"{where}.{key} must be a mapping", parent, key)
        return v

    def string(self, d: dict, key: str, where: str, required: bool = False, pattern: re.Pattern | None = None,
               hint: str = "") -> str | None:
        if key not in d or d[key] is None:
            if required:
                raise self.fail(f"{where}: missing required key {key!r}", d)
            return None
        v = d[key]
        if not isinstance(v, str) or not v.strip():
            raise self.fail(f"{where}.{key} must be a non-empty string", d, key)
        if pattern and not pattern.match(v):
            raise self.fail(f"{where}.{key}: {v!r} is not valid{(' (' + hint + ')') if hint else ''}", d, key)
        return v

    def integer(self, d: dict, key: str, where: str, low: int = 1, high: int = 65536) -> int | None:
        if key not in d or d[key] is None:
            return None
        v = d[key]
        if isinstance(v, bool) or not isinstance(v, int) or not (low <= v <= high):
            raise self.fail(f"{where}.{key} must be an integer in {low}..{high}", d, key)
        return v

    def boolean(self, d: dict, key: str, where: str, default: bool) -> bool:
        if key not in d or d[key] is None:
            return default
        if not isinstance(d[key], bool):
            raise self.fail(f"{where}.{key} must be true or false", d, key)
        return d[key]

    def str_map(self, d: dict, key: str, where: str) -> dict[str, str]:
        m = self.mapping(d, key, where) or {}
        out = {}
        for k, v in m.items():
            if not isinstance(k, str) or isinstance(v, (dict, list)) or v is None:
                raise self.fail(f"{where}.{key}.{k} must map a string to a scalar", m, k)
            out[k] = str(v).lower() if isinstance(v, bool) else str(v)
        return out


def load_stack(path: str | Path) -> Stack:
    path = str(path)
    try:
        doc = yamlutil.load(path)
    except ConfigError as err:
        if isinstance(err, StackError):
            raise
        raise StackError(err.message.split(": ", 1)[-1] if err.path else err.message, err.path, err.line) from None
    return parse_stack(doc, path)


def parse_stack(doc: Any, path: str) -> Stack:
    c = _Ctx(path)
    if not isinstance(doc, dict):
        raise StackError("a stack file must be a mapping with keys name, hosts, services", path,
                         yamlutil.line_of(doc) if doc is not None else None)
    c.keys(doc, TOP_KEYS, "the stack")
    name = c.string(doc, "name", "stack", required=True, pattern=NAME_RE,
                    hint="lowercase letters, digits, '-', at most 32 characters")
    services = _services(c, doc)
    hosts_raw = doc.get("hosts")
    if not isinstance(hosts_raw, list) or not hosts_raw:
        raise c.fail("'hosts' must be a non-empty list of hosts", doc, "hosts" if "hosts" in doc else None)
    hosts = []
    seen: set[str] = set()
    for i, h in enumerate(hosts_raw):
        if not isinstance(h, dict):
            raise c.fail(f"hosts[{i}] must be a mapping", hosts_raw, i)
        host = _host(c, h, services)
        if host.name in seen:
            raise c.fail(f"duplicate host name {host.name!r}", h, "name")
        seen.add(host.name)
        hosts.append(host)
    volumes = doc.get("volumes")
    if volumes is not None and not isinstance(volumes, dict):
        raise c.fail("'volumes' must be a mapping of named volumes", doc, "volumes")
    from .services import parse_services  # each service's compose schema (what `provision up` runs)

    parse_services(doc.get("services"), volumes, path)
    return Stack(name=name, path=path, hosts=tuple(hosts), services=services, volumes=volumes)


def _services(c: _Ctx, doc: dict) -> dict[str, Service]:
    raw = c.mapping(doc, "services", "stack") or {}
    out = {}
    for sname, entry in raw.items():
        if not isinstance(sname, str) or not NAME_RE.match(sname):
            raise c.fail(f"service name {sname!r} is not valid (lowercase letters, digits, '-')", raw, sname)
        if not isinstance(entry, dict):
            raise c.fail(f"services.{sname} must be a mapping", raw, sname)
        ports_raw = entry.get("ports") or []
        if not isinstance(ports_raw, list):
            raise c.fail(f"services.{sname}.ports must be a list", entry, "ports")
        ports = []
        for i, p in enumerate(ports_raw):
            try:
                published = parse_port(p)
            except PortSyntaxError as exc:
                raise c.fail(f"services.{sname}.ports[{i}]: {exc}", ports_raw, i) from None
            if published:
                ports.append(published)
        out[sname] = Service(sname, tuple(ports), entry, yamlutil.line_of(raw, sname))
    return out


def _host(c: _Ctx, h: dict, services: dict[str, Service]) -> Host:
    c.keys(h, HOST_KEYS, "a host")
    name = c.string(h, "name", "host", required=True, pattern=NAME_RE,
                    hint="lowercase letters, digits, '-', at most 32 characters")
    where = f"hosts.{name}"
    clouds = {}
    for cloud in ("aws", "gce"):
        settings = c.mapping(h, cloud, where)
        if settings is not None:
            clouds[cloud] = _cloud(c, cloud, settings, f"{where}.{cloud}")
    local = c.mapping(h, "local", where)
    # Every host can go to the local cloud (qemu on this machine), with defaults when `local:` is absent.
    clouds["local"] = _local(c, local or {}, f"{where}.local", local is not None and yamlutil.line_of(local))
    placed = h.get("services") or []
    if not isinstance(placed, list) or not all(isinstance(s, str) for s in placed):
        raise c.fail(f"{where}.services must be a list of service names", h, "services")
    for i, s in enumerate(placed):
        if s not in services:
            known = ", ".join(sorted(services)) or "none defined"
            raise c.fail(f"{where}.services: unknown service {s!r} (known: {known})", placed, i)
    ssh_cidr = c.string(h, "ssh_cidr", where)
    if ssh_cidr is not None:
        try:
            net = ipaddress.ip_network(ssh_cidr, strict=True)
        except ValueError as exc:
            raise c.fail(f"{where}.ssh_cidr: {exc}", h, "ssh_cidr") from None
        if net.prefixlen == 0:
            raise c.fail(f"{where}.ssh_cidr: {ssh_cidr} opens SSH to the whole internet; name your range", h,
                         "ssh_cidr")
    disks_raw = c.mapping(h, "disks", where)
    volumes, ephemeral, parsed = _disks(c, disks_raw, where)
    return Host(name=name, clouds=clouds, services=tuple(placed), ssh_cidr=ssh_cidr, volumes=volumes,
                ephemeral=ephemeral, disks_raw=disks_raw, disks=parsed, line=yamlutil.line_of(h))


def _cloud(c: _Ctx, cloud: str, d: dict, where: str) -> CloudSettings:
    c.keys(d, CLOUD_KEYS[cloud], where)
    if cloud == "aws":
        itype = c.string(d, "instance_type", where, required=True,
                         pattern=re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$"), hint="like t3.small")
        image = c.string(d, "image", where, required=True, pattern=AMI_RE, hint="an AMI id like ami-0abc12345678")
        region = c.string(d, "region", where, pattern=re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$"), hint="like us-east-1")
        zone = c.string(d, "zone", where, pattern=re.compile(r"^[a-z]{2}(-[a-z]+)+-\d[a-z]$"), hint="like us-east-1a")
        if zone and region and not zone.startswith(region):
            raise c.fail(f"{where}.zone {zone!r} is not in region {region!r}", d, "zone")
        if not region and not zone:
            raise c.fail(f"{where}: needs 'region' or 'zone'", d)
        region = region or zone[:-1]
        tags, spot, network = c.str_map(d, "tags", where), c.boolean(d, "spot", where, False), None
    else:
        itype = c.string(d, "machine_type", where, required=True,
                         pattern=re.compile(r"^[a-z][a-z0-9-]*$"), hint="like e2-small")
        image = c.string(d, "image", where, required=True)
        zone = c.string(d, "zone", where, required=True,
                        pattern=re.compile(r"^[a-z]+-[a-z]+\d+-[a-z]$"), hint="like us-central1-a")
        region = zone.rsplit("-", 1)[0]
        network = c.string(d, "network", where)
        tags, spot = c.str_map(d, "labels", where), c.boolean(d, "preemptible", where, False)
        for k, v in tags.items():
            if not re.match(r"^[a-z][a-z0-9_-]{0,62}$", k) or not re.match(r"^[a-z0-9_-]{0,63}$", v):
                raise c.fail(f"{where}.labels.{k}: GCE labels are lowercase letters, digits, '_' and '-'",
                             d.get("labels"), k)
    rd = c.mapping(d, "root_disk", where) or {}
    c.keys(rd, {"size", "type"}, f"{where}.root_disk")
    root = RootDisk(c.integer(rd, "size", f"{where}.root_disk", 1, 65536), c.string(rd, "type", f"{where}.root_disk"))
    return CloudSettings(cloud=cloud, instance_type=itype, image=image, region=region, zone=zone,
                         subnet=c.string(d, "subnet", where), network=network, tags=tags, spot=spot,
                         root_disk=root, line=yamlutil.line_of(d))


def _local(c: _Ctx, d: dict, where: str, line) -> CloudSettings:
    """`local:` — how the qemu VM looks: style (aws: NVMe disks with EBS-style serials, as on Nitro;
    gce: virtio-scsi disks named like Persistent Disk / local SSD), memory (MiB) and cpus."""
    c.keys(d, LOCAL_KEYS, where)
    style = c.string(d, "style", where) or "aws"
    if style not in ("aws", "gce"):
        raise c.fail(f"{where}.style must be aws or gce (how the VM presents its disks)", d, "style")
    memory = c.integer(d, "memory", where, 256, 65536) or 1024
    cpus = c.integer(d, "cpus", where, 1, 64) or 1
    return CloudSettings(cloud="local", instance_type=f"qemu-{cpus}cpu-{memory}m", image="bookworm", region=None,
                         zone=None, subnet=None, network=None, tags={}, spot=False, root_disk=RootDisk(),
                         line=line or None, options={"style": style, "memory_mb": memory, "cpus": cpus})


def _disks(c: _Ctx, d: dict | None, where: str):
    """Validate `disks:` with the disk layer's parser, then pick out what the cloud must create."""
    if d is None:
        return (), None, None
    parsed = None
    try:
        from ..disks.config import parse_config  # owned by the disk layer
    except ImportError:
        parse_config = None
    if parse_config is not None:
        try:
            parsed = parse_config(d, c.path)
        except StackError:
            raise
        except ConfigError as err:
            raise StackError(err.message.split(": ", 1)[-1] if err.path else err.message, c.path,
                             err.line) from None
    eph = c.mapping(d, "ephemeral", f"{where}.disks")
    ephemeral = None
    if eph is not None:
        iface = eph.get("interface")
        if iface is not None and iface not in ("nvme", "scsi"):
            raise c.fail(f"{where}.disks.ephemeral.interface must be nvme or scsi", eph, "interface")
        ephemeral = EphemeralSpec(c.integer(eph, "count", f"{where}.disks.ephemeral", 0, 24), iface)
    vols_raw = d.get("volumes") or []
    if not isinstance(vols_raw, list):
        raise c.fail(f"{where}.disks.volumes must be a list", d, "volumes")
    volumes, names = [], set()
    for i, v in enumerate(vols_raw):
        if not isinstance(v, dict):
            raise c.fail(f"{where}.disks.volumes[{i}] must be a mapping", vols_raw, i)
        vw = f"{where}.disks.volumes[{i}]"
        vname = c.string(v, "name", vw, required=True, pattern=NAME_RE, hint="lowercase letters, digits, '-'")
        if vname in names:
            raise c.fail(f"{vw}: duplicate volume name {vname!r}", v, "name")
        names.add(vname)
        size = c.integer(v, "size", vw, 1, 65536)
        if size is None:
            raise c.fail(f"{vw}: 'size' (GiB) is needed to create volume {vname!r}", v)
        volumes.append(VolumeSpec(vname, size, c.string(v, "type", vw), c.boolean(v, "encrypted", vw, True),
                                  c.boolean(v, "keep", vw, False), c.integer(v, "iops", vw, 100, 256000)))
    return tuple(volumes), ephemeral, parsed
