"""The frozen actions a disk plan is made of. Each has `describe()` (one human line) and
`to_json()`; `provisioner.disks.apply` knows how to carry each one out."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .facts import Signature


@dataclass(frozen=True)
class Action:
    def describe(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def to_json(self) -> dict:
        return {"action": type(self).__name__.lower(), **_lists(asdict(self)),
                "describe": self.describe()}


def _lists(o):
    """asdict keeps tuples; JSON consumers (and equality with parsed JSON) want lists."""
    if isinstance(o, dict):
        return {k: _lists(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_lists(v) for v in o]
    return o


@dataclass(frozen=True)
class Wipe(Action):
    """Erase every signature on `device` (only with `wipe: true`); `expect` is what the plan saw."""

    device: str
    expect: Signature

    def describe(self) -> str:
        return f"wipe {self.device} (holds {self.expect.describe()}; ephemeral.wipe is true)"


@dataclass(frozen=True)
class Mkfs(Action):
    devices: tuple[str, ...]
    label: str
    uuid: str
    data_profile: str
    metadata_profile: str
    role: str = "ephemeral"

    def argv(self) -> list[str]:
        # --nodiscard: AWS and GCE hand out instance-store / local SSDs already trimmed, and a
        # whole-device TRIM of several TB at boot can take minutes; the mount's discard=async
        # keeps freed space trimmed from then on.
        return ["mkfs.btrfs", "-q", "--nodiscard", "-L", self.label, "-U", self.uuid,
                "-d", self.data_profile, "-m", self.metadata_profile, *self.devices]

    def describe(self) -> str:
        return (f"mkfs.btrfs {' '.join(self.devices)} label={self.label} uuid={self.uuid} "
                f"data={self.data_profile} metadata={self.metadata_profile}")


@dataclass(frozen=True)
class MakeDir(Action):
    path: str

    def describe(self) -> str:
        return f"mkdir -p {self.path}"


@dataclass(frozen=True)
class DeviceScan(Action):
    devices: tuple[str, ...]

    def describe(self) -> str:
        return f"btrfs device scan {' '.join(self.devices)}"


@dataclass(frozen=True)
class Mount(Action):
    source: str
    mountpoint: str
    fstype: str
    options: str

    def describe(self) -> str:
        return f"mount {self.source} on {self.mountpoint} ({self.fstype}, {self.options})"


@dataclass(frozen=True)
class Remount(Action):
    """Add mount flags to a filesystem mounted already (by an older version: nosuid,nodev)."""

    mountpoint: str
    options: str

    def describe(self) -> str:
        return f"remount {self.mountpoint} with {self.options}"


@dataclass(frozen=True)
class Grow(Action):
    """Grow the filesystem to the whole (grown) disk: btrfs resize DEVID:max, or resize2fs."""

    device: str
    mountpoint: str
    devid: int
    from_bytes: int
    to_bytes: int
    fstype: str = "btrfs"

    def describe(self) -> str:
        return (f"grow {self.fstype} on {self.mountpoint} ({self.device}): "
                f"{self.from_bytes // 2**20} MiB → {self.to_bytes // 2**20} MiB")


@dataclass(frozen=True)
class WriteFstab(Action):
    entries: tuple[str, ...]
    removed: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        what = f"{len(self.entries)} managed entr{'y' if len(self.entries) == 1 else 'ies'}"
        return f"write fstab: {what}" + "".join(f"\n    {e}" for e in self.entries)
