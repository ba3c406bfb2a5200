"""Pure classification: which cloud a disk comes from and what role it plays.

Input is what udev and sysfs say (a RawDisk); output an Identity. Works from udev's ID_*
properties when udevd ran, and from sysfs attributes alone when it did not (containers,
this build machine): the two must agree, and the unit tests check both ways for every
identity. Facts from ../shared/reference/cloud-disks.md; never match on names like sdb.
"""
from __future__ import annotations

import re

from .facts import (AWS, EPHEMERAL, GCE, LOCAL, OTHER, ROOT, UNKNOWN, VOLUME, Identity,
                    RawDisk)

AWS_EBS_MODEL = "amazon elastic block store"
AWS_INSTANCE_STORE_MODEL = "amazon ec2 nvme instance storage"
AWS_PCI_VENDOR = "0x1d0f"
GCE_VENDOR = "google"
GCE_PD_MODEL = "persistentdisk"
GCE_LOCAL_SSD_MODEL = "ephemeraldisk"
_GCE_NVME_LOCAL = re.compile(r"^nvme_card\d*$")
GCE_NVME_PD_MODEL = "nvme_card-pd"


def clean(value) -> str:
    """sysfs pads model/serial/vendor with spaces (and udev's ID_* use '_' for them)."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).strip().strip("\x00").strip()


def _norm(value: str) -> str:
    return " ".join(value.replace("_", " ").lower().split())


def vpd_serial(raw: bytes | str | None) -> str:
    """The unit serial number from a SCSI VPD page 0x80 (`vpd_pg80`): 4-byte header, then text."""
    if not raw:
        return ""
    if isinstance(raw, str):
        raw = raw.encode("latin-1")
    if len(raw) < 4:
        return ""
    length = raw[3]
    return clean(raw[4:4 + length])


def bus_of(raw: RawDisk) -> str:
    name = raw.name
    if name.startswith("loop"):
        return "loop"
    if name.startswith("nvme") or raw.parent_subsystem == "nvme":
        return "nvme"
    if name.startswith("xvd") or raw.parent_subsystem == "xen":
        return "xen"
    if name.startswith("vd") or raw.parent_subsystem == "virtio":
        return "virtio"
    id_bus = raw.properties.get("ID_BUS", "")
    if id_bus in ("ata", "usb"):
        return id_bus
    if name.startswith("sd") or raw.parent_subsystem == "scsi" or id_bus == "scsi":
        return "scsi"
    return id_bus or "unknown"


def _model(raw: RawDisk) -> str:
    return clean(raw.attributes.get("model")) or clean(raw.properties.get("ID_MODEL", "")).replace("_", " ")


def _vendor(raw: RawDisk) -> str:
    return clean(raw.attributes.get("vendor")) or clean(raw.properties.get("ID_VENDOR", "")).replace("_", " ")


def _serial(raw: RawDisk) -> str:
    attrs = raw.attributes
    return (clean(attrs.get("serial"))
            or vpd_serial(attrs.get("vpd_pg80"))
            or clean(raw.properties.get("ID_SERIAL_SHORT", "")))


def aws_volume_id(serial: str) -> str | None:
    """EBS NVMe serials are the volume id without its dash: vol0123… → vol-0123…."""
    s = serial.strip()
    if s.startswith("vol-"):
        return s
    if s.startswith("vol") and len(s) > 3:
        return "vol-" + s[3:]
    return None


def normalise_volume_id(value: str) -> str:
    return aws_volume_id(value) or value


def classify(raw: RawDisk, holds_root: bool = False) -> Identity:
    bus = bus_of(raw)
    model, vendor, serial = _model(raw), _vendor(raw), _serial(raw)
    nmodel, nvendor = _norm(model), _norm(vendor)
    cloud, role = UNKNOWN, OTHER
    volume_id = device_name = None

    if bus == "nvme" and nmodel == AWS_EBS_MODEL:
        cloud, role = AWS, VOLUME
        volume_id = aws_volume_id(serial)
        # The mapping name lives in vendor-specific identify data (read by discover via
        # nvme.py); amazon-ec2-utils' rules, when installed, also link /dev/sdf to the disk.
        device_name = clean(raw.attributes.get("ebs_device_name")) or _mapping_link(raw)
    elif bus == "nvme" and nmodel == AWS_INSTANCE_STORE_MODEL:
        cloud, role = AWS, EPHEMERAL
    elif bus == "xen":
        # Xen instance types: xvdX is the mapping sdX. The guest cannot tell EBS from
        # instance store here, so these are volumes unless the config lists them as ephemeral.
        cloud, role = AWS, VOLUME
        device_name = "sd" + raw.name[3:] if raw.name.startswith("xvd") else None
    elif bus == "scsi" and nvendor == GCE_VENDOR and nmodel == GCE_PD_MODEL:
        cloud, role, device_name = GCE, VOLUME, serial or None
    elif bus == "scsi" and nvendor == GCE_VENDOR and nmodel == GCE_LOCAL_SSD_MODEL:
        cloud, role, device_name = GCE, EPHEMERAL, serial or None
    elif bus == "nvme" and _GCE_NVME_LOCAL.match(model):
        cloud, role = GCE, EPHEMERAL
        device_name = clean(raw.attributes.get("gce_device_name")) or _google_rules_name(raw)
    elif bus == "nvme" and model == GCE_NVME_PD_MODEL:
        # The device name sits in vendor-specific namespace data; Google's guest rules put it
        # in ID_SERIAL_SHORT (google_nvme_id) when they are installed.
        cloud, role = GCE, VOLUME
        device_name = clean(raw.attributes.get("gce_device_name")) or _google_rules_name(raw)
    elif bus == "loop":
        cloud, role = LOCAL, OTHER
    elif bus == "nvme" and nmodel.startswith("qemu") and _LOCAL_AWS_STORE_SERIAL.fullmatch(serial or ""):
        # The local cloud presents AWS-style disks on qemu NVMe, whose model is always
        # "QEMU NVMe Ctrl": the serial carries the identity (AWS<17 hex> = instance store).
        cloud, role = LOCAL, EPHEMERAL
    elif bus == "nvme" and nmodel.startswith("qemu") and _LOCAL_AWS_VOLUME_SERIAL.fullmatch(serial or ""):
        cloud, role, volume_id = LOCAL, VOLUME, aws_volume_id(serial)
    elif bus in ("virtio", "nvme", "scsi") and (bus == "virtio" or nmodel.startswith("qemu")
                                                 or nvendor == "qemu"):
        cloud, role = LOCAL, VOLUME
    if holds_root:
        role = ROOT
    return Identity(bus=bus, cloud=cloud, role=role, model=model, serial=serial, vendor=vendor,
                    volume_id=volume_id, device_name=device_name)


_LOCAL_AWS_STORE_SERIAL = re.compile(r"^AWS[0-9A-Fa-f]{17}$")
_LOCAL_AWS_VOLUME_SERIAL = re.compile(r"^vol[0-9a-f]{17}$")
_MAPPING_LINK = re.compile(r"^/dev/((?:sd|xvd)[a-z]+)$")


def _links(raw: RawDisk) -> list[str]:
    return list(raw.links) + raw.properties.get("DEVLINKS", "").split()


def _mapping_link(raw: RawDisk) -> str | None:
    """amazon-ec2-utils' udev rules link the mapping name (/dev/sdf or /dev/xvdf) to the disk."""
    for link in _links(raw):
        m = _MAPPING_LINK.match(link)
        if m:
            name = m.group(1)
            return "sd" + name[3:] if name.startswith("xvd") else name
    return None


def _google_rules_name(raw: RawDisk) -> str | None:
    """Google's guest rules: ID_SERIAL_SHORT from google_nvme_id, or /dev/disk/by-id/google-NAME."""
    props = raw.properties
    if props.get("ID_SERIAL", "").startswith(("Google_PersistentDisk_", "Google_EphemeralDisk_")):
        return clean(props.get("ID_SERIAL_SHORT", "")) or None
    for link in _links(raw):
        if link.startswith("/dev/disk/by-id/google-"):
            return link[len("/dev/disk/by-id/google-"):] or None
    return None
