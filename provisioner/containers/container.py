"""Container records: `<root>/containers/<id>/container.json`, written atomically.

A record holds what the container *is* (name, id, image, how it was asked to run) and what
we decided for it (volume names, hostname); whether it is running right now comes from its
supervisor (supervise.status), never from the record, so a record cannot go stale.

Names are unique: reserve() takes `<root>/containers/.lock` (flock), checks, and writes the
record before releasing it, so two concurrent `run --name x` cannot both win.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError, ContainerError
from ..fsutil import atomic_write, private_dir

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,63}$")
RECORD = "container.json"
_ID = re.compile(r"[0-9a-f]{64}")


@dataclass
class ContainerRecord:
    id: str
    name: str
    image: str                  # the reference as given
    image_id: str
    created: float
    config: dict = field(default_factory=dict)   # RunOptions + ports, volumes, links, restart, rm, image config
    state: dict = field(default_factory=dict)    # "phase": creating | created | removing; "stopped_by_user"

    @property
    def dir_name(self) -> str:
        return self.id

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "ContainerRecord":
        return cls(d["id"], d["name"], d["image"], d.get("image_id", ""), float(d.get("created", 0)),
                   dict(d.get("config") or {}), dict(d.get("state") or {}))


def new_id() -> str:
    return secrets.token_hex(32)


def check_name(name: str) -> str:
    if not NAME.fullmatch(name or ""):
        raise ConfigError(f"bad container name {name!r} (2-64 of letters, digits, '_', '.', '-'; "
                          "starting with a letter or digit)")
    return name


class Containers:
    """The records under `<root>/containers`."""

    def __init__(self, root: str | os.PathLike):
        self.dir = Path(root) / "containers"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        # 0710 as Docker's containers directory; each container's own is 0700 (rootfs, bundle,
        # record, logs: what the image brings and the container's secrets)
        private_dir(self.dir, 0o710)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def op_lock(self, cid: str) -> Iterator[None]:
        """One lifecycle operation at a time per container (two `rm -f`, or `stop` racing
        `start`, from different shells). The lock file goes with the container."""
        d = self.dir / ".locks"
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / self.path(cid).name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            if not self.path(cid).exists():
                (d / cid).unlink(missing_ok=True)
            os.close(fd)

    def path(self, cid: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", cid):
            raise ContainerError(f"bad container id {cid!r}")
        return self.dir / cid

    def _load(self, d: Path) -> ContainerRecord | None:
        try:
            return ContainerRecord.from_json(json.loads((d / RECORD).read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ContainerError(f"{d / RECORD}: unreadable container record ({exc})") from exc

    def all(self) -> list[ContainerRecord]:
        try:
            with os.scandir(self.dir) as it:
                names = sorted(e.name for e in it if _ID.fullmatch(e.name) and e.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for name in names:
            rec = self._load(self.dir / name)
            if rec is not None:
                out.append(rec)
        return sorted(out, key=lambda r: r.created)

    def by_id(self, cid: str) -> ContainerRecord | None:
        """The record of the container with this full id (its own file alone), or None."""
        if not re.fullmatch(r"[0-9a-f]{64}", cid or ""):
            return None
        return self._load(self.path(cid))

    def find(self, ref: str) -> ContainerRecord | None:
        records = self.all()
        for r in records:
            if r.name == ref or r.id == ref:
                return r
        if re.fullmatch(r"[0-9a-f]{3,63}", ref or ""):
            hits = [r for r in records if r.id.startswith(ref)]
            if len(hits) > 1:
                raise ContainerError(f"container id prefix {ref!r} is ambiguous ({len(hits)} containers match)")
            if hits:
                return hits[0]
        return None

    def get(self, ref: str) -> ContainerRecord:
        rec = self.find(ref)
        if rec is None:
            raise ContainerError(f"no such container: {ref}")
        return rec

    def reserve(self, name: str | None, image: str, image_id: str, config: dict) -> ContainerRecord:
        """Creates the record (phase "creating") under a unique name; raises if the name is taken."""
        cid = new_id()
        name = check_name(name) if name else f"c-{cid[:12]}"
        with self.lock():
            for r in self.all():
                if r.name == name:
                    raise ContainerError(
                        f"the container name {name!r} is already in use by container {r.id[:12]}; "
                        "remove it (provision container rm) or choose another --name")
            rec = ContainerRecord(cid, name, image, image_id, time.time(), dict(config), {"phase": "creating"})
            self.path(cid).mkdir(mode=0o700)
            os.chmod(self.path(cid), 0o700)   # whatever the umask
            self.save(rec)
        return rec

    def save(self, rec: ContainerRecord) -> None:
        atomic_write(self.path(rec.id) / RECORD, json.dumps(rec.to_json(), indent=2, sort_keys=True) + "\n",
                     mode=0o600)

    def delete(self, rec: ContainerRecord) -> None:
        """Removes the record directory (its rootfs subvolume must be gone already)."""
        d = self.path(rec.id)
        # the record first: a crash in the middle leaves an unnamed directory, never a half record
        (d / RECORD).unlink(missing_ok=True)
        shutil.rmtree(d, ignore_errors=True)
