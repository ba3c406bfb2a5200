"""A stack file's `hosts:` entries: each host's clouds, placed services, SSH range and disks.

`disks:` is checked by the disk layer's own parser (provisioner.disks.config); what the cloud
must create (volumes, ephemeral disks) is picked out of it here.
"""
from __future__ import annotations

import ipaddress
import re

from .. import hostos, yamlutil
from ..disks.config import parse_config
from ..errors import ConfigError, StackError
from ..images.registryconf import RegistriesConf, check_location, registries_conf
from .fields import Fields
from .model import CloudSettings, CloudVolume, EphemeralSpec, Host, RootDisk
from .observe import parse_logging, parse_metrics

HOST_KEYS = {"name", "aws", "gce", "local", "services", "disks", "ssh_cidr", "registries", "metrics", "logging"}
LOCAL_KEYS = {"style", "memory", "cpus", "os"}
CLOUD_KEYS = {
    "aws": {"instance_type", "image", "region", "zone", "subnet", "tags", "spot", "root_disk", "instance_profile"},
    "gce": {"machine_type", "image", "zone", "network", "subnet", "labels", "preemptible", "root_disk",
            "service_account", "scopes"},
}
# Names end up in resource names, DNS labels and GCE labels: keep them to what all accept.
NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,30}[a-z0-9]|[a-z]")
NAME_HINT = "lowercase letters, digits, '-', at most 32 characters"
AMI_RE = re.compile(r"ami-[0-9a-f]{8,17}")


def parse_host(c: Fields, h: dict, services: dict) -> Host:
    c.keys(h, HOST_KEYS, "a host")
    name = c.string(h, "name", "host", required=True, pattern=NAME_RE,
                    hint=NAME_HINT)
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
    volumes, ephemeral, parsed = _disks(c, c.mapping(h, "disks", where), where)
    return Host(name=name, clouds=clouds, services=tuple(placed), ssh_cidr=ssh_cidr, volumes=volumes,
                ephemeral=ephemeral, disks=parsed, registries=_registries(c, h, where), line=yamlutil.line_of(h),
                metrics=parse_metrics(c, h, where), logging=parse_logging(c, h, where))


def _registries(c: Fields, h: dict, where: str) -> RegistriesConf:
    """`registries:` — where this host pulls from, as containers-registries.conf(5) entries:
    [{prefix, location, insecure, blocked, mirrors: [LOCATION | {location, insecure}]}]."""
    items = c.items(h, "registries", where)
    rules = []
    for i, r in enumerate(items):
        w = f"{where}.registries[{i}]"
        if not isinstance(r, dict):
            raise c.fail(f"{w} must be a mapping with 'location' (and prefix, insecure, mirrors)", items, i)
        c.keys(r, {"prefix", "location", "insecure", "blocked", "mirrors"}, w)
        location = _location(c, r, "location", w) or _location(c, r, "prefix", w, required=True)
        prefix = _location(c, r, "prefix", w) or location
        mirrors = []
        mirrors_raw = c.items(r, "mirrors", w)
        for j, m in enumerate(mirrors_raw):
            wm = f"{w}.mirrors[{j}]"
            if isinstance(m, str):
                mirrors.append({"location": _location(c, {"location": m}, "location", wm, at=(mirrors_raw, j))})
                continue
            if not isinstance(m, dict):
                raise c.fail(f"{wm} must be a location or {{location, insecure}}", mirrors_raw, j)
            c.keys(m, {"location", "insecure"}, wm)
            mirrors.append({"location": _location(c, m, "location", wm, required=True),
                            "insecure": c.boolean(m, "insecure", wm, False)})
        rules.append({"prefix": prefix, "location": location, "insecure": c.boolean(r, "insecure", w, False),
                      "blocked": c.boolean(r, "blocked", w, False), "mirror": mirrors})
    return registries_conf(rules)


def _location(c: Fields, d: dict, key: str, where: str, required: bool = False, at=None) -> str | None:
    value = c.string(d, key, where, required=required)
    if value is not None:
        try:
            check_location(value, f"{where}.{key}")
        except ConfigError as exc:
            raise c.fail(exc.message, *(at or (d, key))) from None
    return value


IMPLICIT_HOST = "main"


IMPLICIT_DISKS = {"ephemeral": {"mount": "/var/lib/provisioner", "count": 1}}   # the container store: btrfs


def implicit_host(c: Fields, services: tuple[str, ...]) -> Host:
    """A file without `hosts:` deployed: one host running every service, with the local cloud's
    defaults and one instance-store disk for the container store (aws and gce have no defaults:
    their settings need a `hosts:` section)."""
    volumes, ephemeral, parsed = _disks(c, IMPLICIT_DISKS, f"hosts.{IMPLICIT_HOST}")
    return Host(name=IMPLICIT_HOST, clouds={"local": _local(c, {}, f"hosts.{IMPLICIT_HOST}.local", None)},
                services=services, ssh_cidr=None, volumes=volumes, ephemeral=ephemeral, disks=parsed, line=None)


def _cloud(c: Fields, cloud: str, d: dict, where: str) -> CloudSettings:
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
        profile = c.string(d, "instance_profile", where, pattern=re.compile(r"[\w+=,.@-]{1,128}"),
                           hint="an IAM instance profile name")
        identity = {"instance_profile": profile} if profile else None
    else:
        itype = c.string(d, "machine_type", where, required=True,
                         pattern=re.compile(r"^[a-z][a-z0-9-]*$"), hint="like e2-small")
        image = c.string(d, "image", where, required=True)
        zone = c.string(d, "zone", where, required=True,
                        pattern=re.compile(r"^[a-z]+-[a-z]+\d+-[a-z]$"), hint="like us-central1-a")
        region = zone.rsplit("-", 1)[0]
        network = c.string(d, "network", where)
        if d.get("subnet") is not None and network is None:
            raise c.fail(f"{where}.subnet needs 'network:' (the VPC network the subnet is in); without one the "
                         "host goes on the stack's own network", d, "subnet")
        tags, spot = c.str_map(d, "labels", where), c.boolean(d, "preemptible", where, False)
        identity = _service_account(c, d, where)
        for k, v in tags.items():
            if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", k) or not re.fullmatch(r"[a-z0-9_-]{0,63}", v):
                raise c.fail(f"{where}.labels.{k}: GCE labels are lowercase letters, digits, '_' and '-'",
                             d.get("labels"), k)
    rd = c.mapping(d, "root_disk", where) or {}
    rw = f"{where}.root_disk"
    c.keys(rd, {"size", "type", "encrypted", "kms_key"}, rw)
    root = RootDisk(c.integer(rd, "size", rw, 1, 65536), c.string(rd, "type", rw), c.boolean(rd, "encrypted", rw, True),
                    c.string(rd, "kms_key", rw))
    if not root.encrypted and root.kms_key:
        raise c.fail(f"{rw}: kms_key with encrypted: false", rd, "kms_key")
    if cloud == "gce" and not root.encrypted:
        raise c.fail(f"{rw}.encrypted: GCE encrypts every disk; only kms_key (a customer-managed key) changes it",
                     rd, "encrypted")
    return CloudSettings(cloud=cloud, instance_type=itype, image=image, region=region, zone=zone,
                         subnet=c.string(d, "subnet", where), network=network, tags=tags, spot=spot,
                         root_disk=root, identity=identity, line=yamlutil.line_of(d))


# Enough to pull from Artifact Registry and Container Registry (storage read), nothing more.
DEFAULT_SCOPES = ("https://www.googleapis.com/auth/devstorage.read_only",)


def _service_account(c: Fields, d: dict, where: str) -> dict | None:
    email = c.string(d, "service_account", where, pattern=re.compile(r"[^@\s]+@[^@\s]+\.[a-z]+|default"),
                     hint="a service account e-mail, or default")
    scopes = c.items(d, "scopes", where)
    if scopes and email is None:
        raise c.fail(f"{where}.scopes: give service_account too (the scopes are the account's)", d, "scopes")
    for i, sc in enumerate(scopes):
        if not isinstance(sc, str) or not sc.startswith("https://www.googleapis.com/auth/"):
            raise c.fail(f"{where}.scopes[{i}]: {sc!r} is not a scope URL (https://www.googleapis.com/auth/…)",
                         scopes, i)
    return {"service_account": email, "scopes": list(scopes) or list(DEFAULT_SCOPES)} if email else None


def _local(c: Fields, d: dict, where: str, line) -> CloudSettings:
    """`local:` — how the qemu VM looks: style (aws: NVMe disks with EBS-style serials, as on Nitro;
    gce: virtio-scsi disks named like Persistent Disk / local SSD), memory (MiB), cpus, and the host
    OS it boots (a row of provisioner/hostos.py: debian-12, debian-13)."""
    c.keys(d, LOCAL_KEYS, where)
    style = c.string(d, "style", where) or "aws"
    if style not in ("aws", "gce"):
        raise c.fail(f"{where}.style must be aws or gce (how the VM presents its disks)", d, "style")
    memory = c.integer(d, "memory", where, 256, 65536) or 1024
    cpus = c.integer(d, "cpus", where, 1, 64) or 1
    system = c.string(d, "os", where) or hostos.DEFAULT
    if system not in hostos.SYSTEMS:
        raise c.fail(f"{where}.os must be one of {', '.join(sorted(hostos.SYSTEMS))}", d, "os")
    return CloudSettings(cloud="local", instance_type=f"qemu-{cpus}cpu-{memory}m", image=system, region=None,
                         zone=None, subnet=None, network=None, tags={}, spot=False, root_disk=RootDisk(),
                         line=line or None, options={"style": style, "memory_mb": memory, "cpus": cpus, "os": system})


def _disks(c: Fields, d: dict | None, where: str):
    """Validate `disks:` with the disk layer's parser, then pick out what the cloud must create."""
    if d is None:
        return (), None, None
    try:
        parsed = parse_config(d, c.path)
    except StackError:
        raise
    except ConfigError as err:
        raise StackError(err.message.split(": ", 1)[-1] if err.path else err.message, c.path, err.line) from None
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
        volumes.append(CloudVolume(vname, size, c.string(v, "type", vw), c.boolean(v, "encrypted", vw, True),
                                  c.boolean(v, "keep", vw, False), c.integer(v, "iops", vw, 100, 256000),
                                  c.string(v, "kms_key", vw)))
    return tuple(volumes), ephemeral, parsed
