"""Builders for disk facts in tests (ours and downstream code's): sensible defaults, override
what the case is about."""
from __future__ import annotations

from .facts import OTHER, LOCAL, BtrfsSuper, Disk, HostFacts, MountEntry


def make_disk(node: str, **kw) -> Disk:
    name = node.rsplit("/", 1)[-1]
    fields = dict(
        node=node, name=name, size=300 * 2**20, bus="loop" if name.startswith("loop") else "nvme",
        model="", serial="", vendor="", rotational=False, cloud=LOCAL, role=OTHER, volume_id=None,
        device_name=None, fstype=None, fs_uuid=None, fs_label=None, pttype=None, partitions=(),
        holders=(), mountpoints=(), holds_root=False, btrfs=None, backing_file=None, links=(),
    )
    fields.update(kw)
    return Disk(**fields)


def btrfs_disk(node: str, fs_uuid: str, label: str, *, num_devices: int = 1, devid: int = 1,
               dev_size: int | None = None, **kw) -> Disk:
    size = kw.get("size", 300 * 2**20)
    sb = BtrfsSuper(fsid=fs_uuid, label=label, num_devices=num_devices, devid=devid,
                    dev_size=size if dev_size is None else dev_size, total_bytes=size * num_devices)
    return make_disk(node, fstype="btrfs", fs_uuid=fs_uuid, fs_label=label, btrfs=sb, **kw)


def make_facts(disks, *, mounts=(), fstab_text: str = "", paths=None) -> HostFacts:
    return HostFacts(disks=tuple(disks), mounts=tuple(mounts), fstab_text=fstab_text,
                     paths=dict(paths or {}))


def mount_entry(mountpoint: str, source: str, fstype: str = "btrfs",
                options: str = "rw,nosuid,nodev,noatime") -> MountEntry:
    return MountEntry(mountpoint=mountpoint, fstype=fstype, source=source, major_minor="0:40", options=options)
