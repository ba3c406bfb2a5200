"""Named volumes as btrfs subvolumes, and paths inside a container's rootfs. (`-v` itself is
runspec.mounts.)

Named volumes live under `<root>/volumes/<name>` (a btrfs subvolume each, so they are cheap to
create and delete and outlive containers) with `<root>/volumes/<name>.json` beside it.
"""
from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from ..errors import CommandError, ContainerError, ImageError
from ..fsutil import atomic_write, private_dir
from ..runspec.mounts import VOLUME_NAME as _NAME
from ..images import btrfs

class Volumes:
    """Named volumes under `<root>/volumes`."""

    def __init__(self, root: str | os.PathLike, runner):
        self.dir = Path(root) / "volumes"
        self.runner = runner

    def path(self, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise ContainerError(f"bad volume name {name!r}")
        return self.dir / name

    def exists(self, name: str) -> bool:
        return self.path(name).is_dir()

    def new_anonymous_name(self) -> str:
        return secrets.token_hex(32)

    def create(self, name: str, *, anonymous: bool = False, labels: dict[str, str] | None = None) -> bool:
        """Creates the volume if missing; returns True when it was created now."""
        path = self.path(name)
        if path.is_dir():
            return False
        private_dir(self.dir, 0o700)   # volumes hold what containers wrote: theirs alone
        try:
            btrfs.create(self.runner, path)
        except (CommandError, ImageError) as exc:  # btrfs reports its failures as ImageError
            if path.is_dir():  # another run created it at the same moment
                return False
            raise ContainerError(f"cannot create volume {name} at {path}: {exc}") from exc
        atomic_write(self.dir / f"{name}.json",
                     json.dumps({"name": name, "anonymous": anonymous, "created": time.time(),
                                 **({"labels": labels} if labels else {})}) + "\n")
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
                if p.is_dir() and _NAME.fullmatch(p.name)]

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
