"""Volumes as `docker run -v` and compose's short `volumes:` syntax write them.

Docker's rules for `-v` (moby volume/mounts/linux_parser.go):
  DST                   an anonymous volume (a fresh named volume with a random name)
  SRC:DST[:MODE]        SRC absolute → bind mount of that host path (created as a directory when
                        missing, as `docker run -v` does); otherwise SRC is a volume name
                        ([A-Za-z0-9][A-Za-z0-9_.-]+) — "./data" or "data/x" is an error, not a path
  MODE                  ro | rw (default rw)
DST must be absolute and not "/".
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..errors import ConfigError

VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class VolumeSpec:
    kind: str          # "bind" | "volume" | "anonymous"
    source: str        # host path (bind), volume name (volume), "" (anonymous, named later)
    destination: str
    readonly: bool = False

    def __str__(self) -> str:
        """The `-v` text that parses back to this volume."""
        if self.kind == "anonymous":
            return self.destination
        return f"{self.source}:{self.destination}" + (":ro" if self.readonly else "")

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
    if not VOLUME_NAME.fullmatch(src):
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
