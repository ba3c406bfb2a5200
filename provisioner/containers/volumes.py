"""Volumes: `-v SRC:DST[:ro]` parsing with Docker's rules, and named volumes as btrfs subvolumes.

Docker's rules for `-v` (moby volume/mounts/linux_parser.go):
  DST                   an anonymous volume (a fresh named volume with a random name)
  SRC:DST[:MODE]        SRC absolute → bind mount of that host path (created as a directory when
                        missing, as `docker run -v` does); otherwise SRC is a volume name
                        ([A-Za-z0-9][A-Za-z0-9_.-]+) — "./data" or "data/x" is an error, not a path
  MODE                  ro | rw (default rw)
DST must be absolute and not "/".

Named volumes live under `<root>/volumes/<name>` (a btrfs subvolume each, so they are cheap to
create and delete and outlive containers) with `<root>/volumes/<name>.json` beside it.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import CommandError, ConfigError, ContainerError, ImageError
from ..fsutil import atomic_write
from ..images import btrfs

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class VolumeSpec:
    kind: str          # "bind" | "volume" | "anonymous"
    source: str        # host path (bind), volume name (volume), "" (anonymous, named later)
    destination: str
    readonly: bool = False

    def to_json(self) -> dict:
        return {"kind": self.kind, "source": self.source, "destination": self.destination, "readonly": self.readonly}

    @classmethod
    def from_json(cls, d) -> "VolumeSpec":
        return cls(d["kind"], d["source"], d["destination"], bool(d.get("readonly")))


def _check_destination(dst: str, spec: str) -> str:
    if not dst.startswith("/"):
        raise ConfigError(f"bad volume {spec!r}: the container path {dst!r} is not absolute")
    norm = os.path.normpath(dst)
    if norm == "/":
        raise ConfigError(f"bad volume {spec!r}: cannot mount over the container's /")
    return norm


def parse_volume(spec: str) -> VolumeSpec:
    """One `-v` value."""
    parts = spec.split(":")
    if not spec or any(p == "" for p in parts):
        raise ConfigError(f"bad volume {spec!r} (want SRC:DST[:ro] or DST)")
    if len(parts) == 1:
        return VolumeSpec("anonymous", "", _check_destination(parts[0], spec))
    if len(parts) > 3:
        raise ConfigError(f"bad volume {spec!r}: too many ':' (want SRC:DST[:ro])")
    src, dst = parts[0], parts[1]
    readonly = False
    if len(parts) == 3:
        modes = parts[2].split(",")
        for mode in modes:
            if mode not in ("ro", "rw"):
                raise ConfigError(f"bad volume {spec!r}: mode {mode!r} is not supported (want ro or rw)")
        readonly = "ro" in modes
    dst = _check_destination(dst, spec)
    if src.startswith("/"):
        return VolumeSpec("bind", os.path.normpath(src), dst, readonly)
    if not _NAME.match(src):
        raise ConfigError(
            f"bad volume {spec!r}: {src!r} is not a valid volume name ([A-Za-z0-9][A-Za-z0-9_.-]+); "
            "to mount a host directory, give an absolute path")
    return VolumeSpec("volume", src, dst, readonly)


def check_unique(specs: list[VolumeSpec]) -> None:
    seen = set()
    for s in specs:
        if s.destination in seen:
            raise ConfigError(f"duplicate mount point {s.destination} in -v")
        seen.add(s.destination)


class Volumes:
    """Named volumes under `<root>/volumes`."""

    def __init__(self, root: str | os.PathLike, runner):
        self.dir = Path(root) / "volumes"
        self.runner = runner

    def path(self, name: str) -> Path:
        if not _NAME.match(name):
            raise ContainerError(f"bad volume name {name!r}")
        return self.dir / name

    def exists(self, name: str) -> bool:
        return self.path(name).is_dir()

    def new_anonymous_name(self) -> str:
        return secrets.token_hex(32)

    def create(self, name: str, *, anonymous: bool = False) -> bool:
        """Creates the volume if missing; returns True when it was created now."""
        path = self.path(name)
        if path.is_dir():
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            btrfs.create(self.runner, path)
        except (CommandError, ImageError) as exc:  # btrfs reports its failures as ImageError
            if path.is_dir():  # another run created it at the same moment
                return False
            raise ContainerError(f"cannot create volume {name} at {path}: {exc}") from exc
        atomic_write(self.dir / f"{name}.json",
                     json.dumps({"name": name, "anonymous": anonymous, "created": time.time()}) + "\n")
        return True

    def info(self, name: str) -> dict:
        try:
            return json.loads((self.dir / f"{name}.json").read_text())
        except (OSError, ValueError):
            return {"name": name, "anonymous": False}

    def list(self) -> list[dict]:
        if not self.dir.is_dir():
            return []
        return [self.info(p.name) | {"path": str(p)} for p in sorted(self.dir.iterdir())
                if p.is_dir() and _NAME.match(p.name)]

    def remove(self, name: str) -> None:
        path = self.path(name)
        if path.is_dir():
            if btrfs.is_subvolume(path):
                btrfs.delete(self.runner, path)
            else:
                raise ContainerError(f"volume {name} at {path} is not a btrfs subvolume; not removing it")
        (self.dir / f"{name}.json").unlink(missing_ok=True)


# ---- paths inside a container's rootfs --------------------------------------------------------
# The rootfs comes from an image, so any of its symlinks may point anywhere ("/etc/passwd ->
# /../../../host/file"). These resolve a container path the way the container would see it,
# with every symlink (absolute or with "..") kept inside the rootfs (as runc's securejoin).

_MAX_LINKS = 40


def resolve_in(rootfs: str | os.PathLike, path: str) -> Path:
    """The host path of container path `path`, all symlinks resolved inside `rootfs`; the last
    component need not exist."""
    root = Path(rootfs)
    todo = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        cand = root.joinpath(*done, part)
        if cand.is_symlink():
            hops += 1
            if hops > _MAX_LINKS:
                raise ContainerError(f"too many symlinks resolving {path} in the image")
            target = os.readlink(cand)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            continue
        done.append(part)
    return root.joinpath(*done)


def read_in(rootfs: str | os.PathLike, path: str) -> str:
    """A text file of the rootfs ("" when missing or not a regular file)."""
    p = resolve_in(rootfs, path)
    try:
        if not p.is_file():
            return ""
        return p.read_text(errors="replace")
    except OSError:
        return ""


def make_dir_in(rootfs: str | os.PathLike, path: str) -> None:
    """mkdir -p of a container path inside the rootfs (Docker creates a missing WorkingDir)."""
    p = resolve_in(rootfs, path)
    if p.is_dir():
        return
    try:
        p.mkdir(parents=True, mode=0o755)
    except FileExistsError:
        raise ContainerError(f"cannot create directory {path} in the container: a file is in the way") from None
    except OSError as exc:
        raise ContainerError(f"cannot create directory {path} in the container: {exc.strerror}") from exc
