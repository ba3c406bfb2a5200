"""Facts about block disks and the host, as plain frozen data read by `discover`.

`RawDisk` is what udev/sysfs say about one disk (what the unit-test fixtures record);
`Disk` adds the probe results (signatures, mounts) and the classification (cloud, role).
`HostFacts` is everything the pure planner needs: disks, mounts, fstab text, path states.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Roles a disk can play.
ROOT, EPHEMERAL, VOLUME, OTHER = "root", "ephemeral", "volume", "other"
# Clouds a disk can come from.
AWS, GCE, LOCAL, UNKNOWN = "aws", "gce", "local", "unknown"


@dataclass(frozen=True)
class RawDisk:
    """One block disk as udev and sysfs describe it, before probing and classification."""

    name: str                       # kernel name: nvme1n1, sdb, xvdf, vdb, loop3
    node: str                       # /dev/nvme1n1
    size: int                       # bytes
    properties: dict = field(default_factory=dict)   # udev properties (ID_* only when udevd ran)
    attributes: dict = field(default_factory=dict)   # sysfs attrs of the disk and its nvme/scsi parent
    parent_subsystem: str = ""      # nvme | scsi | virtio | xen | "" (loop, ram)
    rotational: bool = False
    partitions: tuple[str, ...] = ()
    holders: tuple[str, ...] = ()   # device-mapper / md devices built on this disk or its partitions
    backing_file: str | None = None  # loop devices only
    links: tuple[str, ...] = ()      # /dev/disk/by-* symlinks udev made (none without udevd)


@dataclass(frozen=True)
class Identity:
    """What classification decides about a disk."""

    bus: str
    cloud: str
    role: str
    model: str = ""
    serial: str = ""
    vendor: str = ""
    volume_id: str | None = None     # AWS EBS volume id, "vol-…"
    device_name: str | None = None   # AWS mapping name ("sdf") or GCE device name ("data-1")


@dataclass(frozen=True)
class Signature:
    """What `blkid -p` found on the whole disk (all None when blank)."""

    fstype: str | None = None
    uuid: str | None = None
    label: str | None = None
    pttype: str | None = None

    @property
    def blank(self) -> bool:
        return self.fstype is None and self.pttype is None

    def describe(self) -> str:
        if self.fstype:
            extra = f" labelled {self.label!r}" if self.label else ""
            return f"an existing {self.fstype} filesystem (UUID {self.uuid}){extra}"
        if self.pttype:
            return f"a {self.pttype} partition table"
        return "no signature"


@dataclass(frozen=True)
class BtrfsSuper:
    """The parts of a btrfs superblock the planner needs (from `btrfs inspect-internal dump-super`)."""

    fsid: str
    label: str
    num_devices: int
    devid: int
    dev_size: int        # bytes of this device the filesystem uses
    total_bytes: int


@dataclass(frozen=True)
class Disk:
    node: str
    name: str
    size: int
    bus: str
    model: str
    serial: str
    vendor: str
    rotational: bool
    cloud: str
    role: str
    volume_id: str | None
    device_name: str | None
    fstype: str | None
    fs_uuid: str | None
    fs_label: str | None
    pttype: str | None
    partitions: tuple[str, ...]
    holders: tuple[str, ...]
    mountpoints: tuple[str, ...]    # where it (or a partition, or its btrfs filesystem) is mounted
    holds_root: bool
    btrfs: BtrfsSuper | None = None
    backing_file: str | None = None
    links: tuple[str, ...] = ()
    fs_size: int | None = None      # bytes the filesystem spans (ext2/3/4, from its superblock)

    @property
    def signature(self) -> Signature:
        return Signature(self.fstype, self.fs_uuid, self.fs_label, self.pttype)

    @property
    def blank(self) -> bool:
        return self.fstype is None and self.pttype is None and not self.partitions

    @property
    def mounted(self) -> bool:
        return bool(self.mountpoints)

    def to_json(self) -> dict:
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo."""

    mountpoint: str
    fstype: str
    source: str
    major_minor: str
    options: str = ""


@dataclass(frozen=True)
class HostFacts:
    disks: tuple[Disk, ...]
    mounts: tuple[MountEntry, ...]
    fstab_text: str
    # For every mountpoint the config names: "dir", "missing", or "file:<path>" when the
    # path itself or one of its ancestors is a regular file (or anything not a directory).
    paths: dict = field(default_factory=dict)
    # config device path → the node it resolves to (e.g. /dev/disk/by-id/google-data-1 → /dev/sdb)
    aliases: dict = field(default_factory=dict)

    def disk(self, node: str) -> Disk | None:
        node = self.aliases.get(node, node)
        for d in self.disks:
            if d.node == node or node in d.links:
                return d
        return None

    def mount_at(self, mountpoint: str) -> MountEntry | None:
        found = None
        for m in self.mounts:
            if m.mountpoint == mountpoint:
                found = m  # the last one stacks on top
        return found

    def to_json(self) -> dict:
        return {"disks": [d.to_json() for d in self.disks]}
