"""The pure planner: host facts + desired config → a Plan of frozen actions.

Nothing here reads or changes the system; every refusal is raised here, before any action
runs, so a bad input never leaves a half-done host. Safety rules (issue 2):
- a volume with any filesystem is mounted, never formatted; one with only a partition table
  is refused;
- an ephemeral disk holding a foreign filesystem or a partition table is refused unless
  `ephemeral.wipe: true`; a disk that is mounted, in use (dm/md holders) or holds `/` is
  refused always;
- an ephemeral set that is already ours (every device btrfs, our label, one fs UUID, the whole
  set present) is only mounted; a blank set is (re-)created.
"""
from __future__ import annotations

import uuid as _uuid
from dataclasses import dataclass
from typing import Callable

from ..errors import DiskError
from . import fstab
from .actions import Action, DeviceScan, Grow, MakeDir, Mkfs, Mount, Remount, Wipe, WriteFstab
from .classify import normalise_volume_id
from .config import DisksConfig, Volume, Where
from .facts import EPHEMERAL, Disk, HostFacts

EPHEMERAL_LABEL = "prov-ephemeral"
VOLUME_LABEL_PREFIX = "prov-vol-"
# nosuid,nodev: the container store holds what images bring (setuid-root binaries, device
# nodes) and volumes what containers write: neither is usable from the host through these
# mounts (a container's rootfs gets its own suid mount, containers.rootfsmount)
HARDENING = ("nosuid", "nodev")
BTRFS_OPTIONS = ("noatime", *HARDENING, "compress=zstd:1")
GROW_THRESHOLD = 1 << 20  # ignore differences below 1 MiB (alignment)


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    notes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.actions

    def describe(self) -> list[str]:
        return [a.describe() for a in self.actions]

    def to_json(self) -> dict:
        return {"actions": [a.to_json() for a in self.actions], "notes": list(self.notes)}


def _new_uuid() -> str:
    return str(_uuid.uuid4())


def mount_options(disks: list[Disk], fstype: str) -> str:
    if fstype != "btrfs":
        return ",".join(("noatime", *HARDENING))
    opts = list(BTRFS_OPTIONS)
    if disks and not any(d.rotational for d in disks):
        opts += ["ssd", "discard=async"]
    return ",".join(opts)


def _fstab_options(options: str) -> str:
    return ",".join([options, *fstab.FSTAB_EXTRA_OPTIONS])


def _usable(disk: Disk, purpose: str) -> None:
    """Refusals that no config can override."""
    if disk.holds_root:
        raise DiskError(f"refusing {disk.node} for {purpose}: it holds the root filesystem /")
    if disk.holders:
        raise DiskError(f"refusing {disk.node} for {purpose}: it is in use by {', '.join(disk.holders)}")


def _resolve_device(facts: HostFacts, node: str, where: Where, who: str) -> Disk:
    disk = facts.disk(node)
    if disk is None:
        raise where.error(f"{who}: unknown device {node} (not a block disk on this host)")
    return disk


def _match_volume(facts: HostFacts, vol: Volume) -> Disk:
    m = vol.match
    if m is None:
        raise vol.where.error(f"volume {vol.name!r}: no 'match:' says which disk it is (give match: with one of "
                              "device, aws_volume_id, gce_device_name, serial; `provision deploy` records it "
                              "for the volumes it creates)")
    if m.key == "device":
        return _resolve_device(facts, m.value, vol.match_where, f"volume {vol.name!r}")
    if m.key == "aws_volume_id":
        want = normalise_volume_id(m.value)
        found = [d for d in facts.disks if d.volume_id == want]
    elif m.key == "gce_device_name":
        found = [d for d in facts.disks if d.cloud == "gce" and d.device_name == m.value]
    else:
        found = [d for d in facts.disks if d.serial == m.value]
    if not found:
        raise DiskError(f"volume {vol.name!r}: no disk on this host matches {m.describe()}")
    if len(found) > 1:
        raise DiskError(f"volume {vol.name!r}: {m.describe()} matches several disks: "
                        f"{', '.join(d.node for d in found)}")
    return found[0]


def _check_mountpoint(facts: HostFacts, mount: str, where: Where, who: str) -> None:
    state = facts.paths.get(mount, "missing")
    if state.startswith("file:"):
        raise where.error(f"{who}: mountpoint {mount} is under {state[5:]}, which is not a directory")
    line = fstab.unmanaged_mountpoints(facts.fstab_text).get(mount)
    if line is not None:
        raise where.error(f"{who}: mountpoint {mount} already has an fstab entry (line {line}) "
                          "that provisioner does not manage")


def _mount_steps(facts: HostFacts, disks: list[Disk], fs_uuid: str, fstype: str, mount: str,
                 who: str, fresh: bool) -> tuple[list[Action], str]:
    """MakeDir/DeviceScan/Mount actions (none when already mounted there) + the fstab line."""
    options = mount_options(disks, fstype)
    entry = fstab.FstabEntry(f"UUID={fs_uuid}", mount, fstype, _fstab_options(options)).line()
    current = facts.mount_at(mount)
    mounted_here = not fresh and any(mount in d.mountpoints for d in disks)
    if mounted_here:
        have = set((current.options if current else "").split(","))
        missing = [o for o in HARDENING if o not in have]
        return ([Remount(mount, ",".join(missing))] if current and missing else []), entry
    if current is not None:
        raise DiskError(f"{who}: {mount} already has {current.source} ({current.fstype}) mounted on it")
    steps: list[Action] = []
    if facts.paths.get(mount, "missing") != "dir":
        steps.append(MakeDir(mount))
    if fstype == "btrfs" and len(disks) > 1:
        steps.append(DeviceScan(tuple(d.node for d in disks)))
    steps.append(Mount(disks[0].node, mount, fstype, options))
    return steps, entry


def _is_ours(disks: list[Disk]) -> bool:
    uuids = {d.fs_uuid for d in disks}
    if len(uuids) != 1 or None in uuids:
        return False
    if not all(d.fstype == "btrfs" and d.fs_label == EPHEMERAL_LABEL for d in disks):
        return False
    supers = [d.btrfs for d in disks if d.btrfs is not None]
    return all(sb.num_devices == len(disks) for sb in supers)


def _plan_ephemeral(facts, cfg, claimed, new_uuid, notes):
    eph = cfg.ephemeral
    if eph.devices is not None:
        disks = [_resolve_device(facts, node, w, "ephemeral.devices")
                 for node, w in zip(eph.devices, eph.devices_where or [eph.where] * len(eph.devices))]
        for d in disks:
            if d.node in claimed:
                raise eph.where.error(f"ephemeral: {d.node} is also matched by {claimed[d.node]}")
    else:
        disks = [d for d in facts.disks if d.role == EPHEMERAL and d.node not in claimed]
    if not disks:
        notes.append("no ephemeral disks on this host; nothing to do for ephemeral")
        return [], [], None
    for d in disks:
        _usable(d, "ephemeral")
    _check_mountpoint(facts, eph.mount, eph.where, "ephemeral")
    if _is_ours(disks):
        steps, entry = _mount_steps(facts, disks, disks[0].fs_uuid, "btrfs", eph.mount,
                                    "ephemeral", fresh=False)
        mounted_elsewhere = [m for d in disks for m in d.mountpoints if m != eph.mount]
        if steps and mounted_elsewhere:
            raise DiskError(f"ephemeral: the filesystem on {disks[0].node} is mounted at "
                            f"{mounted_elsewhere[0]}, not {eph.mount}; unmount it first")
        return [], steps, entry
    wipes: list[Action] = []
    partial = [d for d in disks if d.fstype == "btrfs" and d.fs_label == EPHEMERAL_LABEL]
    if partial and not eph.wipe and not any(d.mounted for d in disks):
        d = partial[0]
        total = d.btrfs.num_devices if d.btrfs else "?"
        raise DiskError(f"ephemeral: {d.node} belongs to an earlier ephemeral btrfs (UUID {d.fs_uuid}, "
                        f"{total} devices) but the set now is {', '.join(x.node for x in disks)}; "
                        "refusing to re-create it over its data; set ephemeral.wipe: true to allow")
    for d in disks:
        if d.mounted:
            raise DiskError(f"refusing to format {d.node} as ephemeral: it is mounted at "
                            f"{', '.join(d.mountpoints)}")
        if d.blank:
            continue
        what = d.signature.describe() if not d.signature.blank else "partitions"
        if d.partitions and d.signature.blank:
            what = f"partitions {', '.join(d.partitions)}"
        if not eph.wipe:
            raise DiskError(f"refusing to format {d.node} as ephemeral: it holds {what}; "
                            "set ephemeral.wipe: true to allow erasing it")
        wipes.append(Wipe(d.node, d.signature))
    nodes = tuple(d.node for d in disks)
    multi = len(nodes) > 1
    fs_uuid = new_uuid()
    mkfs = Mkfs(nodes, EPHEMERAL_LABEL, fs_uuid, "raid0" if multi else "single",
                "raid1" if multi else "dup", role="ephemeral")
    steps, entry = _mount_steps(facts, disks, fs_uuid, "btrfs", eph.mount, "ephemeral", fresh=True)
    return wipes + [mkfs], steps, entry


def _plan_volume(facts, vol: Volume, disk: Disk, new_uuid):
    who = f"volume {vol.name!r}"
    _usable(disk, who)
    _check_mountpoint(facts, vol.mount, vol.where, who)
    if disk.fstype:
        others = [m for m in disk.mountpoints if m != vol.mount]
        if disk.mounted and vol.mount not in disk.mountpoints:
            raise DiskError(f"{who}: {disk.node} is mounted at {others[0]}, not {vol.mount}; "
                            "unmount it first")
        if disk.fs_uuid is None:
            raise DiskError(f"{who}: {disk.node} holds {disk.fstype} data without a UUID; "
                            "refusing to guess how to mount it")
        steps, entry = _mount_steps(facts, [disk], disk.fs_uuid, disk.fstype, vol.mount, who, fresh=False)
        grow: list[Action] = []
        sb = disk.btrfs
        if disk.fstype == "btrfs" and sb is not None and disk.size - sb.dev_size >= GROW_THRESHOLD:
            grow.append(Grow(disk.node, vol.mount, sb.devid, sb.dev_size, disk.size))
        elif disk.fs_size is not None and disk.size - disk.fs_size >= GROW_THRESHOLD:
            # ext2/3/4 grow online with resize2fs; other foreign filesystems are left as they are
            grow.append(Grow(disk.node, vol.mount, 0, disk.fs_size, disk.size, fstype=disk.fstype))
        return [], steps, grow, entry
    if disk.pttype or disk.partitions:
        raise DiskError(f"{who}: {disk.node} holds a {disk.pttype or 'partition'} partition table "
                        f"{('(' + ', '.join(disk.partitions) + ') ') if disk.partitions else ''}"
                        "and no filesystem on the whole disk; refusing to touch it")
    if disk.mounted:
        raise DiskError(f"{who}: {disk.node} is mounted at {disk.mountpoints[0]}")
    fs_uuid = new_uuid()
    mkfs = Mkfs((disk.node,), VOLUME_LABEL_PREFIX + vol.name, fs_uuid, "single", "dup", role="volume")
    steps, entry = _mount_steps(facts, [disk], fs_uuid, "btrfs", vol.mount, who, fresh=True)
    return [mkfs], steps, [], entry


def _depth(path: str) -> int:
    return len([p for p in path.split("/") if p])


def plan(facts: HostFacts, config: DisksConfig, *,
         new_uuid: Callable[[], str] = _new_uuid) -> Plan:
    """Decide what to do. Raises ConfigError/DiskError (nothing has been touched) on refusal."""
    notes: list[str] = []
    claimed: dict[str, str] = {}
    matched: list[tuple[Volume, Disk]] = []
    for vol in config.volumes:
        disk = _match_volume(facts, vol)
        if disk.node in claimed:
            raise vol.match_where.error(f"volume {vol.name!r}: {disk.node} is already matched by "
                                        f"{claimed[disk.node]}")
        claimed[disk.node] = f"volume {vol.name!r}"
        matched.append((vol, disk))

    formats: list[Action] = []
    mounts: list[tuple[str, list[Action]]] = []
    grows: list[Action] = []
    entries: list[tuple[str, str]] = []
    if config.ephemeral is not None:
        fmt, steps, entry = _plan_ephemeral(facts, config, claimed, new_uuid, notes)
        formats += fmt
        if entry:
            mounts.append((config.ephemeral.mount, steps))
            entries.append((config.ephemeral.mount, entry))
    for vol, disk in matched:
        fmt, steps, grow, entry = _plan_volume(facts, vol, disk, new_uuid)
        formats += fmt
        grows += grow
        mounts.append((vol.mount, steps))
        entries.append((vol.mount, entry))

    actions: list[Action] = list(formats)
    for _, steps in sorted(mounts, key=lambda m: _depth(m[0])):
        actions += steps
    actions += grows
    wanted = [e for _, e in sorted(entries, key=lambda e: _depth(e[0]))]
    current = fstab.managed_lines(facts.fstab_text)
    if wanted != current:
        actions.append(WriteFstab(tuple(wanted), tuple(e for e in current if e not in wanted)))
    return Plan(tuple(actions), tuple(notes))
