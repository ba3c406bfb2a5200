"""Reading the world: enumerate block disks with pyudev, probe them, and collect host facts.

Without udevd (containers, this build machine) the udev database has no ID_* properties, so
the identity comes from sysfs attributes of the disk and its nvme/scsi parent, and the
signatures from probing the device itself (`blkid -p`), never from a cache.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

from . import nvme
from .classify import classify, clean
from .facts import BtrfsSuper, Disk, HostFacts, MountEntry, RawDisk, Signature
from .probe import (EXT_TYPES, MOUNTINFO, SWAPS, probe_btrfs_super, probe_ext_size,
                    probe_signature, read_mountinfo, read_swaps)

SYSFS = "/sys"
FSTAB = "/etc/fstab"
_NVME_PATH = re.compile(r"^nvme\d+c\d+n\d+$")
_SKIP_PREFIXES = ("ram", "zram", "sr", "fd", "md", "dm-", "nbd")
_PARENT_SUBSYSTEMS = ("nvme", "nvme-subsystem", "scsi", "virtio", "xen")
_PARENT_ATTRS = ("model", "serial", "vendor", "firmware_rev", "rev", "vpd_pg80")


def _attr(device, name: str):
    try:
        value = device.attributes.get(name)
    except (OSError, KeyError):
        return None
    if value is None:
        return None
    return value if name == "vpd_pg80" else value.decode("utf-8", "replace")


def raw_from_udev(device) -> RawDisk | None:
    """One pyudev block Device of type disk → RawDisk (None for disks we never consider)."""
    name = device.sys_name
    if name.startswith(_SKIP_PREFIXES):
        return None
    is_loop = name.startswith("loop")
    # With native NVMe multipath (nvme_core.multipath=Y, the default on current distros) the
    # disk is the subsystem's head device under /devices/virtual/nvme-subsystem/, and the
    # per-path devices (nvme0c0n1) are hidden: keep the former, skip the latter.
    if _NVME_PATH.match(name) or (_attr(device, "hidden") or "0").strip() == "1":
        return None
    virtual = "/devices/virtual/" in device.device_path
    if virtual and not is_loop and "/nvme-subsystem/" not in device.device_path:
        return None
    backing = None
    if is_loop:
        backing = _attr(device, "loop/backing_file")
        if not backing:
            return None  # an unattached loop device
        backing = backing.strip()
    try:
        size = int(device.attributes.asint("size")) * 512
    except (KeyError, ValueError, OSError):
        size = 0
    if size == 0 and not is_loop:
        return None
    attrs: dict = {}
    for key in ("serial", "removable", "ro"):
        value = _attr(device, key)
        if value is not None:
            attrs[key] = value
    parent_subsystem = ""
    for subsystem in _PARENT_SUBSYSTEMS:
        parent = device.find_parent(subsystem)
        if parent is None:
            continue
        parent_subsystem = "nvme" if subsystem.startswith("nvme") else subsystem
        # virtio/xen parents carry bus ids ("0x1af4"), not a disk identity
        wanted = _PARENT_ATTRS if parent_subsystem in ("nvme", "scsi") else ()
        for key in wanted:
            if key not in attrs:
                value = _attr(parent, key)
                if value is not None:
                    attrs[key] = value
        if subsystem in ("nvme", "scsi"):
            pci = parent.find_parent("pci")
            if pci is not None and _attr(pci, "vendor"):
                attrs["pci_vendor"] = _attr(pci, "vendor").strip()
        break
    if parent_subsystem == "nvme":
        _nvme_names(device, attrs)
    rotational = (_attr(device, "queue/rotational") or "0").strip() == "1"
    partitions = tuple(sorted(c.sys_name for c in device.children
                              if c.device_type == "partition"))
    holders = _holders(device.sys_path, partitions)
    props = {k: device.properties[k] for k in device.properties}
    links = tuple(sorted(device.device_links))
    return RawDisk(name=name, node=device.device_node or f"/dev/{name}", size=size,
                   properties=props, attributes=attrs, parent_subsystem=parent_subsystem,
                   rotational=rotational, partitions=partitions, holders=holders,
                   backing_file=backing, links=links)


def _nvme_names(device, attrs: dict) -> None:
    """The names AWS and GCE keep in NVMe identify data (see nvme.py), into `attrs`."""
    model = clean(attrs.get("model"))
    node = device.device_node
    if not node:
        return
    if model == "Amazon Elastic Block Store":
        name = nvme.ebs_device_name(nvme.identify(node, nvme._CNS_CONTROLLER))
        if name:
            attrs["ebs_device_name"] = name
    elif model.startswith("nvme_card"):
        try:
            nsid = int(_attr(device, "nsid") or "1")
        except ValueError:
            nsid = 1
        name = nvme.gce_device_name(nvme.identify(node, nvme._CNS_NAMESPACE, nsid))
        if name:
            attrs["gce_device_name"] = name


def _holders(sys_path: str, partitions: Iterable[str]) -> tuple[str, ...]:
    found: list[str] = []
    for sub in ["", *partitions]:
        try:
            found += os.listdir(os.path.join(sys_path, sub, "holders"))
        except OSError:
            pass
    return tuple(sorted(set(found)))


def enumerate_raw(context=None) -> list[RawDisk]:
    import pyudev  # imported here so unit tests of the pure layers never need it

    context = context or pyudev.Context()
    raws = []
    for device in context.list_devices(subsystem="block", DEVTYPE="disk"):
        raw = raw_from_udev(device)
        if raw is not None:
            raws.append(raw)
    return sorted(raws, key=lambda r: r.name)


def whole_disks_of(name: str, sysfs_root: str = SYSFS, _depth: int = 0) -> set[str]:
    """Kernel block name (disk, partition, dm-N) → the whole disks it lives on."""
    base = Path(sysfs_root, "class", "block", name)
    if _depth > 8 or not base.exists():
        return {name}
    if (base / "partition").exists():
        return {Path(os.path.realpath(base)).parent.name}
    try:
        slaves = os.listdir(base / "slaves")
    except OSError:
        slaves = []
    if slaves:
        out: set[str] = set()
        for s in slaves:
            out |= whole_disks_of(s, sysfs_root, _depth + 1)
        return out
    return {name}


def _block_name_of_mount(m: MountEntry, sysfs_root: str) -> str | None:
    major = m.major_minor.split(":")[0]
    if major not in ("0", ""):
        link = Path(sysfs_root, "dev", "block", m.major_minor)
        if link.exists():
            return Path(os.path.realpath(link)).name
    if m.source.startswith("/dev/"):
        return Path(os.path.realpath(m.source)).name
    return None


def mount_map(raws: list[RawDisk], sigs: dict[str, Signature], mounts: Iterable[MountEntry],
              sysfs_root: str = SYSFS) -> tuple[dict[str, list[str]], set[str]]:
    """disk name → mountpoints using it (directly, via a partition or dm, or as a btrfs member),
    and the set of disks holding `/`."""
    names = {r.name for r in raws}
    by_uuid: dict[str, set[str]] = {}
    for r in raws:
        sig = sigs.get(r.name)
        if sig and sig.fstype == "btrfs" and sig.uuid:
            by_uuid.setdefault(sig.uuid, set()).add(r.name)
    result: dict[str, list[str]] = {}
    root: set[str] = set()
    for m in mounts:
        block = _block_name_of_mount(m, sysfs_root)
        if block is None:
            continue
        disks = whole_disks_of(block, sysfs_root) & names
        for d in list(disks):
            sig = sigs.get(d)
            if m.fstype == "btrfs" and sig and sig.fstype == "btrfs" and sig.uuid:
                disks |= by_uuid.get(sig.uuid, set())
        for d in disks:
            result.setdefault(d, [])
            if m.mountpoint not in result[d]:
                result[d].append(m.mountpoint)
            if m.mountpoint == "/":
                root.add(d)
    return result, root


def build_disks(raws: list[RawDisk], sigs: dict[str, Signature], supers: dict,
                mounts: Iterable[MountEntry], sysfs_root: str = SYSFS) -> tuple[Disk, ...]:
    mounted, root = mount_map(raws, sigs, mounts, sysfs_root)
    disks = []
    for r in raws:
        ident = classify(r, holds_root=r.name in root)
        sig = sigs.get(r.name, Signature())
        extra = supers.get(r.name)  # a BtrfsSuper, or an ext filesystem's size in bytes
        disks.append(Disk(
            node=r.node, name=r.name, size=r.size, bus=ident.bus, model=ident.model,
            serial=ident.serial, vendor=ident.vendor, rotational=r.rotational,
            cloud=ident.cloud, role=ident.role, volume_id=ident.volume_id,
            device_name=ident.device_name, fstype=sig.fstype, fs_uuid=sig.uuid,
            fs_label=sig.label, pttype=sig.pttype, partitions=r.partitions, holders=r.holders,
            mountpoints=tuple(mounted.get(r.name, ())), holds_root=r.name in root,
            btrfs=extra if isinstance(extra, BtrfsSuper) else None,
            fs_size=extra if isinstance(extra, int) else None, backing_file=r.backing_file, links=r.links,
        ))
    return tuple(disks)


def probe_all(runner, raws: list[RawDisk]) -> tuple[dict[str, Signature], dict]:
    """Signatures of every disk; btrfs superblocks and ext sizes (bytes) where they apply."""
    sigs, supers = {}, {}
    for r in raws:
        sigs[r.name] = probe_signature(runner, r.node)
        if sigs[r.name].fstype == "btrfs":
            sb = probe_btrfs_super(runner, r.node)
            if sb is not None:
                supers[r.name] = sb
        elif sigs[r.name].fstype in EXT_TYPES:
            size = probe_ext_size(runner, r.node)
            if size is not None:
                supers[r.name] = size
    return sigs, supers


def path_state(path: str) -> str:
    """'dir', 'missing', or 'file:<p>' when `path` or an ancestor exists but is not a directory."""
    p = Path("/")
    for part in Path(path).parts[1:]:
        p = p / part
        if not os.path.lexists(p):
            return "missing"
        if not p.is_dir():
            return f"file:{p}"
    return "dir"


def discover(runner, *, context=None, mountinfo_path: str = MOUNTINFO, swaps_path: str = SWAPS,
             sysfs_root: str = SYSFS) -> tuple[Disk, ...]:
    raws = enumerate_raw(context)
    sigs, supers = probe_all(runner, raws)
    mounts = read_mountinfo(mountinfo_path) + read_swaps(swaps_path)
    return build_disks(raws, sigs, supers, mounts, sysfs_root)


def resolve_aliases(paths: Iterable[str]) -> dict[str, str]:
    """Device paths that are symlinks (by-id, by-path, /dev/sdf from cloud rules) → real node."""
    out = {}
    for p in paths:
        if os.path.islink(p):
            real = os.path.realpath(p)
            if real != p and os.path.exists(real):
                out[p] = real
    return out


def gather(runner, mountpoints: Iterable[str] = (), *, devices: Iterable[str] = (),
           fstab_path: str = FSTAB, mountinfo_path: str = MOUNTINFO, swaps_path: str = SWAPS,
           sysfs_root: str = SYSFS,
           context=None) -> HostFacts:
    """Everything the planner needs, read once."""
    raws = enumerate_raw(context)
    sigs, supers = probe_all(runner, raws)
    mounts = read_mountinfo(mountinfo_path) + read_swaps(swaps_path)
    disks = build_disks(raws, sigs, supers, mounts, sysfs_root)
    try:
        fstab_text = Path(fstab_path).read_text()
    except FileNotFoundError:
        fstab_text = ""
    return HostFacts(disks=disks, mounts=mounts, fstab_text=fstab_text,
                     paths={m: path_state(m) for m in mountpoints},
                     aliases=resolve_aliases(devices))
