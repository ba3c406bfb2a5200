"""Reading signatures and mounts: parsers (pure) and the probes that feed them (via the Runner).

- `blkid -p -o export DEV` reads the disk itself (no cache, no udev): exit 0 with TYPE/UUID/
  LABEL/PTTYPE lines, exit 2 when it found nothing.
- `btrfs inspect-internal dump-super DEV` reads one btrfs superblock: fsid, label, number of
  devices, and how much of *this* device the filesystem uses (to know when a volume grew).
- /proc/self/mountinfo says what is mounted where (fields per proc(5)).
"""
from __future__ import annotations

import json

from ..errors import CommandError, DiskError
from .facts import BtrfsSuper, MountEntry, Signature

MOUNTINFO = "/proc/self/mountinfo"
SWAPS = "/proc/swaps"
BLKID_NOTHING_FOUND = 2


def parse_blkid_export(text: str) -> Signature:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return Signature(
        fstype=values.get("TYPE") or None,
        uuid=values.get("UUID") or None,
        label=values.get("LABEL") or None,
        pttype=values.get("PTTYPE") or None,
    )


def probe_signature(runner, node: str) -> Signature:
    """What is on `node` right now, read from the device itself."""
    result = runner.run(["blkid", "-p", "-o", "export", node], check=False)
    if result.returncode == BLKID_NOTHING_FOUND:
        return Signature()
    if result.returncode != 0:
        raise CommandError(result.argv, result.returncode, result.stdout, result.stderr)
    sig = parse_blkid_export(result.stdout)
    if sig.blank:
        # blkid can report a signature it cannot name (e.g. USAGE=other): treat as data.
        return Signature(fstype="unknown")
    return sig


def probe_wipefs(runner, node: str) -> list[dict]:
    """Every signature wipefs can see (it finds some blkid -p ignores, like backup GPT headers)."""
    result = runner.run(["wipefs", "--no-act", "--json", node])
    text = result.stdout.strip()
    if not text:
        return []
    try:
        return list(json.loads(text).get("signatures", []))
    except (ValueError, AttributeError):
        raise DiskError(f"{node}: cannot parse wipefs output: {text[:80]!r}") from None


def parse_dump_super(text: str) -> BtrfsSuper | None:
    values: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2:
            values.setdefault(parts[0], parts[1].strip())
        elif len(parts) == 1:
            values.setdefault(parts[0], "")
    try:
        return BtrfsSuper(
            fsid=values["fsid"],
            label=values.get("label", ""),
            num_devices=int(values["num_devices"]),
            devid=int(values["dev_item.devid"]),
            dev_size=int(values["dev_item.total_bytes"]),
            total_bytes=int(values["total_bytes"]),
        )
    except (KeyError, ValueError):
        return None


def probe_btrfs_super(runner, node: str) -> BtrfsSuper | None:
    result = runner.run(["btrfs", "inspect-internal", "dump-super", node], check=False)
    if result.returncode != 0:
        return None
    return parse_dump_super(result.stdout)


EXT_TYPES = ("ext2", "ext3", "ext4")


def parse_dumpe2fs(text: str) -> int | None:
    """Filesystem size in bytes from `dumpe2fs -h` (Block count × Block size)."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    try:
        return int(values["Block count"]) * int(values["Block size"])
    except (KeyError, ValueError):
        return None


def probe_ext_size(runner, node: str) -> int | None:
    result = runner.run(["dumpe2fs", "-h", node], check=False)
    return parse_dumpe2fs(result.stdout) if result.returncode == 0 else None


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> tuple[MountEntry, ...]:
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields or len(fields) < 7:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 3:
            continue
        entries.append(MountEntry(
            mountpoint=_unescape(fields[4]),
            fstype=fields[sep + 1],
            source=_unescape(fields[sep + 2]),
            major_minor=fields[2],
            options=fields[5] + ("," + fields[sep + 3] if len(fields) > sep + 3 else ""),
        ))
    return tuple(entries)


def read_mountinfo(path: str = MOUNTINFO) -> tuple[MountEntry, ...]:
    with open(path) as f:
        return parse_mountinfo(f.read())


def parse_swaps(text: str) -> tuple[MountEntry, ...]:
    """Active swap areas from /proc/swaps, as pseudo-mounts at "[swap]" (a disk holding one is in use)."""
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 2:
            out.append(MountEntry(mountpoint="[swap]", fstype="swap", source=_unescape(fields[0]),
                                  major_minor=""))
    return tuple(out)


def read_swaps(path: str = SWAPS) -> tuple[MountEntry, ...]:
    try:
        with open(path) as f:
            return parse_swaps(f.read())
    except FileNotFoundError:
        return ()
