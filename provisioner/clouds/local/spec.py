"""What a local VM should look like (pure data) and how its extra disks identify themselves.

The local cloud imitates how AWS and GCE present disks (see shared/reference/cloud-disks.md) so the
on-host discovery runs against real udev in a real VM:

- AWS style: every disk is its own NVMe controller (`-device nvme,serial=…`), as on Nitro. qemu's
  NVMe model string is always "QEMU NVMe Ctrl", so unlike on AWS the model cannot tell EBS from
  instance store; the serial does: EBS volumes carry the volume id without its dash
  ("vol" + 17 hex, exactly like AWS) and instance-store disks "AWS" + 17 hex (the form AWS uses in
  the instance-store by-id link). Discovery must therefore classify a "QEMU NVMe Ctrl" disk by
  serial prefix (`local_nvme_role`).
- GCE style: one virtio-scsi controller, `scsi-hd` disks with vendor "Google", product
  "PersistentDisk" or "EphemeralDisk" and the device name as serial: byte-for-byte what udev
  reports on GCE (ID_VENDOR, ID_MODEL, ID_SERIAL_SHORT).
"""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field

from ... import hostos
from ...errors import ConfigError

STYLES = ("aws", "gce")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class VolumeDisk:
    name: str
    size_mb: int
    keep: bool = False  # survives a destroy (like `keep: true` volumes on the clouds)


@dataclass(frozen=True)
class PortForward:
    host_port: int   # on 127.0.0.1 only
    guest_port: int
    proto: str = "tcp"


@dataclass(frozen=True)
class VmSpec:
    stack: str
    host: str
    ssh_public_key: str
    style: str = "aws"              # how extra disks are presented: aws | gce
    ephemeral: int = 0              # instance-store / local-SSD disks (blank at every launch)
    ephemeral_mb: int = 1024
    volumes: tuple[VolumeDisk, ...] = ()
    ports: tuple[PortForward, ...] = ()
    memory_mb: int = 1024
    cpus: int = 1
    root_gb: int = 8
    os: str = hostos.DEFAULT         # which base image boots (provisioner/hostos.py)
    user: str = "provision"
    extra_user_data: dict = field(default_factory=dict)
    # Complete #cloud-config from the stack's template (clouds/userdata.py). When set it is the
    # seed's user-data as is (its key goes to the image's default user, so `user` must name that
    # user: "debian" on Debian images).
    user_data: str | None = None

    def validate(self) -> None:
        for what, value in (("stack", self.stack), ("host", self.host)):
            if not _NAME.fullmatch(value):
                raise ConfigError(f"local cloud: {what} name {value!r} must be lowercase letters, digits and '-'")
        if self.style not in STYLES:
            raise ConfigError(f"local cloud: disk style {self.style!r} unknown (expected one of {', '.join(STYLES)})")
        if not 0 <= self.ephemeral <= 8:
            raise ConfigError(f"local cloud: {self.ephemeral} ephemeral disks (0..8 supported)")
        names = [v.name for v in self.volumes]
        for n in names:
            if not _NAME.fullmatch(n):
                raise ConfigError(f"local cloud: volume name {n!r} must be lowercase letters, digits and '-'")
        if len(set(names)) != len(names):
            raise ConfigError(f"local cloud: duplicate volume names in {names}")
        seen = set()
        for p in self.ports:
            if not (1 <= p.host_port <= 65535 and 1 <= p.guest_port <= 65535) or p.proto not in ("tcp", "udp"):
                raise ConfigError(f"local cloud: bad port forward {p.host_port}->{p.guest_port}/{p.proto}")
            if (p.host_port, p.proto) in seen:
                raise ConfigError(f"local cloud: host port {p.host_port}/{p.proto} forwarded twice")
            seen.add((p.host_port, p.proto))
        hostos.host_os(self.os)
        if self.memory_mb < 256:
            raise ConfigError(f"local cloud: {self.memory_mb} MiB of memory is too little (256 minimum)")


@dataclass(frozen=True)
class DiskPlan:
    """One extra disk as qemu will present it."""

    role: str        # "ephemeral" | "volume"
    name: str        # volume name, or ephemeral0..N
    file: str        # file name inside the host's state dir
    size_mb: int
    serial: str
    bus: str         # "nvme" | "scsi"
    vendor: str = ""
    product: str = ""
    keep: bool = False


def aws_volume_serial(stack: str, host: str, volume: str) -> str:
    """A stable EBS-style serial: "vol" + 17 hex (the volume id without its dash), same on every relaunch."""
    return "vol" + hashlib.sha256(f"{stack}/{host}/{volume}".encode()).hexdigest()[:17]


def aws_instance_store_serial(token: str | None = None) -> str:
    """"AWS" + 17 hex digits; new per launch, like the instance it belongs to."""
    return "AWS" + (token or secrets.token_hex(9)[:17]).upper()


def local_nvme_role(serial: str) -> str | None:
    """How discovery tells the local cloud's NVMe disks apart (the model is always "QEMU NVMe Ctrl")."""
    s = serial.strip()
    if re.fullmatch(r"vol[0-9a-f]{17}", s):
        return "volume"
    if re.fullmatch(r"AWS[0-9A-Fa-f]{17}", s):
        return "ephemeral"
    return None


def plan_disks(spec: VmSpec, launch_token: str | None = None) -> list[DiskPlan]:
    disks: list[DiskPlan] = []
    token = launch_token or secrets.token_hex(8)
    for i in range(spec.ephemeral):
        if spec.style == "aws":
            serial = aws_instance_store_serial(hashlib.sha256(f"{token}/{i}".encode()).hexdigest()[:17])
            disks.append(DiskPlan("ephemeral", f"ephemeral{i}", f"ephemeral{i}.qcow2", spec.ephemeral_mb,
                                  serial, "nvme"))
        else:
            disks.append(DiskPlan("ephemeral", f"local-ssd-{i}", f"ephemeral{i}.qcow2", spec.ephemeral_mb,
                                  f"local-ssd-{i}", "scsi", "Google", "EphemeralDisk"))
    for v in spec.volumes:
        if spec.style == "aws":
            disks.append(DiskPlan("volume", v.name, f"volumes/{v.name}.qcow2", v.size_mb,
                                  aws_volume_serial(spec.stack, spec.host, v.name), "nvme", keep=v.keep))
        else:
            disks.append(DiskPlan("volume", v.name, f"volumes/{v.name}.qcow2", v.size_mb,
                                  v.name, "scsi", "Google", "PersistentDisk", keep=v.keep))
    return disks
