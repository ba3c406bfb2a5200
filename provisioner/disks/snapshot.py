"""Read-only btrfs snapshots of a mounted filesystem, kept under MOUNT/.snapshots/NAME."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import CommandError, DiskError

SNAPSHOT_DIR = ".snapshots"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$")


@dataclass(frozen=True)
class Snapshot:
    name: str
    path: str
    created: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "path": self.path, "created": self.created}


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name or ""):
        raise DiskError(f"invalid snapshot name {name!r}: use letters, digits, '.', '_', ':', '+' or '-'")
    return name


def _check_btrfs(runner, mount: str) -> Path:
    p = Path(mount)
    if not p.is_dir():
        raise DiskError(f"{mount}: not a directory")
    try:
        runner.run(["btrfs", "subvolume", "show", str(p)])
    except CommandError:
        raise DiskError(f"{mount}: not a btrfs subvolume (is the filesystem mounted there?)") from None
    return p


def default_name(now: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def create(runner, mount: str, name: str | None = None) -> Snapshot:
    base = _check_btrfs(runner, mount)
    name = _check_name(name or default_name())
    target = base / SNAPSHOT_DIR / name
    if target.exists():
        raise DiskError(f"snapshot {name!r} already exists in {base / SNAPSHOT_DIR}")
    runner.run(["mkdir", "-p", str(base / SNAPSHOT_DIR)])
    runner.run(["btrfs", "subvolume", "snapshot", "-r", str(base), str(target)])
    return Snapshot(name, str(target), time.strftime("%Y-%m-%d %H:%M:%S"))  # btrfs otime's format


def parse_subvolume_list(text: str) -> list[tuple[str, str]]:
    """`btrfs subvolume list -s -o`-style lines → (path, otime)."""
    out = []
    for line in text.splitlines():
        if " path " not in line:
            continue
        head, _, path = line.partition(" path ")
        otime = ""
        if " otime " in head:
            otime = head.split(" otime ", 1)[1].strip()
        out.append((path.strip(), otime))
    return out


def list_snapshots(runner, mount: str) -> list[Snapshot]:
    base = _check_btrfs(runner, mount)
    snapdir = base / SNAPSHOT_DIR
    if not snapdir.is_dir():
        return []
    result = runner.run(["btrfs", "subvolume", "list", "-s", str(base)])
    times = {Path(p).name: t for p, t in parse_subvolume_list(result.stdout)
             if Path(p).parent.name == SNAPSHOT_DIR}
    snaps = [Snapshot(n, str(snapdir / n), t) for n, t in times.items() if (snapdir / n).is_dir()]
    return sorted(snaps, key=lambda s: s.name)


def delete(runner, mount: str, name: str) -> Snapshot:
    base = _check_btrfs(runner, mount)
    _check_name(name)
    target = base / SNAPSHOT_DIR / name
    if name not in {s.name for s in list_snapshots(runner, mount)}:
        raise DiskError(f"no snapshot {name!r} in {base / SNAPSHOT_DIR}")
    runner.run(["btrfs", "subvolume", "delete", str(target)])
    return Snapshot(name, str(target))
