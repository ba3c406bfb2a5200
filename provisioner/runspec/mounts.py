"""Mounts as `docker run -v/--mount/--tmpfs` and compose's `volumes:` (short and long syntax) and
`tmpfs:` write them.

Docker's rules for `-v` (moby volume/mounts/linux_parser.go):
  DST                   an anonymous volume (a fresh named volume with a random name)
  SRC:DST[:MODES]       SRC absolute → bind mount of that host path (created as a directory when
                        missing, as `docker run -v` does); otherwise SRC is a volume name
                        ([A-Za-z0-9][A-Za-z0-9_.-]+) — "./data" or "data/x" is an error, not a path
  MODES                 comma-separated: ro | rw; nocopy (a new volume does not get the image's
                        content); a bind propagation (rprivate, the default, private, rshared, shared,
                        rslave, slave); z, Z (SELinux relabelling: no SELinux here, nothing to do,
                        as Docker on such a host); cached, delegated, consistent (macOS hints: none)
DST must be absolute and not "/".

The long syntax ({type: bind|volume|tmpfs, source, target, read_only, bind: {propagation,
create_host_path}, volume: {nocopy, subpath}, tmpfs: {size, mode}}) gives the same values; a long
bind mount does not create a missing source unless `bind.create_host_path` says so (compose).
`--tmpfs DST[:OPTIONS]` is a tmpfs with Docker's default noexec,nosuid,nodev; OPTIONS are mount
options (size=64m, mode=1777, exec, uid=…).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ConfigError
from .resources import parse_size

VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]+")
PROPAGATIONS = ("rprivate", "private", "rshared", "shared", "rslave", "slave")
_NOOP_MODES = ("z", "Z", "cached", "delegated", "consistent")
_TMPFS_OPT = re.compile(r"(size=\d+[kmgKMG%]?|mode=[0-7]{3,4}|uid=\d+|gid=\d+|nr_inodes=\d+[kmg]?|"
                        r"exec|noexec|suid|nosuid|dev|nodev|ro|rw|atime|noatime|relatime|strictatime)")


@dataclass(frozen=True)
class VolumeSpec:
    kind: str          # "bind" | "volume" | "anonymous" | "tmpfs"
    source: str        # host path (bind), volume name (volume), "" (anonymous, named later; tmpfs)
    destination: str
    readonly: bool = False
    propagation: str | None = None        # bind: None is rprivate
    nocopy: bool = False                  # volume: not filled with the image's content
    create_host_path: bool = True         # bind: make a missing source directory (else: an error)
    subpath: str | None = None            # volume: mount this subdirectory of it
    tmpfs_options: tuple[str, ...] = ()   # tmpfs: mount options (size=…, mode=…, exec, …)

    def __str__(self) -> str:
        """The `-v` (or `--tmpfs`) text that parses back to this volume."""
        if self.kind == "tmpfs":
            return self.destination + (":" + ",".join(self.tmpfs_options) if self.tmpfs_options else "")
        if self.kind == "anonymous":
            return self.destination
        modes = (["ro"] if self.readonly else []) + (["nocopy"] if self.nocopy else []) + \
            ([self.propagation] if self.propagation else [])
        return f"{self.source}:{self.destination}" + (":" + ",".join(modes) if modes else "")

    def to_json(self) -> dict:
        d: dict[str, Any] = {"kind": self.kind, "source": self.source, "destination": self.destination,
                             "readonly": self.readonly}
        # the fields added later only when set: older records and hashes stay as they were
        for k, default in _LATER_FIELDS.items():
            v = getattr(self, k)
            if v != default:
                d[k] = list(v) if isinstance(v, tuple) else v
        return d

    @classmethod
    def from_json(cls, d) -> "VolumeSpec":
        return cls(d["kind"], d["source"], d["destination"], bool(d.get("readonly")), d.get("propagation"),
                   bool(d.get("nocopy")), bool(d.get("create_host_path", True)), d.get("subpath"),
                   tuple(d.get("tmpfs_options") or ()))

    def with_source(self, source: str) -> "VolumeSpec":
        from dataclasses import replace

        return replace(self, source=source)


_LATER_FIELDS = {"propagation": None, "nocopy": False, "create_host_path": True, "subpath": None,
                 "tmpfs_options": ()}


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
    readonly = nocopy = False
    propagation = None
    if len(parts) == 3:
        for mode in parts[2].split(","):
            if mode in ("ro", "rw"):
                readonly = mode == "ro"
            elif mode == "nocopy":
                nocopy = True
            elif mode in PROPAGATIONS:
                propagation = mode
            elif mode not in _NOOP_MODES:
                raise ConfigError(f"bad volume {spec!r}: mode {mode!r} is not supported (want ro, rw, nocopy or a "
                                  f"propagation: {', '.join(PROPAGATIONS)})")
    dst = _check_destination(dst, spec)
    if src.startswith("/"):
        if nocopy:
            raise ConfigError(f"bad volume {spec!r}: nocopy is for volumes, not bind mounts")
        return VolumeSpec("bind", os.path.normpath(src), dst, readonly, propagation=propagation)
    if not VOLUME_NAME.fullmatch(src):
        raise ConfigError(
            f"bad volume {spec!r}: {src!r} is not a valid volume name ([A-Za-z0-9][A-Za-z0-9_.-]+); "
            "to mount a host directory, give an absolute path")
    if propagation:
        raise ConfigError(f"bad volume {spec!r}: a propagation mode is for bind mounts")
    return VolumeSpec("volume", src, dst, readonly, nocopy=nocopy)


def parse_tmpfs(spec: str) -> VolumeSpec:
    """`--tmpfs DST[:OPTIONS]` (and compose's `tmpfs:` entries)."""
    dst, _, opts = str(spec).partition(":")
    options = tuple(o.strip() for o in opts.split(",") if o.strip()) if opts else ()
    for o in options:
        if not _TMPFS_OPT.fullmatch(o):
            raise ConfigError(f"bad tmpfs {spec!r}: option {o!r} is not a tmpfs mount option "
                              "(size=, mode=, uid=, gid=, exec, noexec, …)")
    return VolumeSpec("tmpfs", "", _check_destination(dst, spec), tmpfs_options=options)


_LONG_KEYS = {"type", "source", "target", "read_only", "bind", "volume", "tmpfs", "consistency"}
_SUB_KEYS = {"bind": {"propagation", "create_host_path", "selinux"}, "volume": {"nocopy", "subpath"},
             "tmpfs": {"size", "mode"}}


def parse_long_volume(entry: Mapping[str, Any], where: str = "volume") -> VolumeSpec:
    """Compose's long syntax (also what `--mount type=…,source=…,target=…` gives, as a mapping). A
    relative bind source must have been made absolute by the caller (relative to the compose file)."""
    unknown = sorted(set(map(str, entry)) - _LONG_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unsupported key(s) {', '.join(unknown)} (supported: {', '.join(sorted(_LONG_KEYS))})")
    kind = entry.get("type")
    if kind not in ("bind", "volume", "tmpfs"):
        raise ConfigError(f"{where}: type {kind!r} is not supported (want bind, volume or tmpfs)")
    target = entry.get("target")
    if not isinstance(target, str) or not target:
        raise ConfigError(f"{where}: 'target' (the path in the container) is required")
    dst = _check_destination(target, target)
    for sub, keys in _SUB_KEYS.items():
        opts = entry.get(sub)
        if opts is None:
            continue
        if sub != kind:
            raise ConfigError(f"{where}: '{sub}' options are for type {sub}, not {kind}")
        if not isinstance(opts, Mapping):
            raise ConfigError(f"{where}.{sub} must be a mapping")
        bad = sorted(set(map(str, opts)) - keys)
        if bad:
            raise ConfigError(f"{where}.{sub}: unsupported key(s) {', '.join(bad)} (supported: {', '.join(sorted(keys))})")
    readonly = _flag(entry.get("read_only"), f"{where}.read_only")
    source = entry.get("source")
    if kind == "tmpfs":
        if source:
            raise ConfigError(f"{where}: a tmpfs has no 'source'")
        t = entry.get("tmpfs") or {}
        options: list[str] = ["ro"] if readonly else []
        if t.get("size") is not None:
            options.append(f"size={parse_size(t['size'], f'{where}.tmpfs.size')}")
        if t.get("mode") is not None:
            from .secrets import parse_mode

            try:
                mode = parse_mode(t["mode"])
            except ConfigError:
                raise ConfigError(f"{where}.tmpfs.mode: {t['mode']!r} is not a file mode such as 1777") from None
            options.append(f"mode={mode:o}")
        return VolumeSpec("tmpfs", "", dst, readonly, tmpfs_options=tuple(options))
    if kind == "bind":
        if not isinstance(source, str) or not source:
            raise ConfigError(f"{where}: a bind mount needs 'source' (a host path)")
        if not source.startswith("/"):
            raise ConfigError(f"{where}: bind source {source!r} is not an absolute path")
        b = entry.get("bind") or {}
        prop = b.get("propagation")
        if prop is not None and prop not in PROPAGATIONS:
            raise ConfigError(f"{where}.bind.propagation: {prop!r} is not one of {', '.join(PROPAGATIONS)}")
        selinux = b.get("selinux")
        if selinux not in (None, "z", "Z"):
            raise ConfigError(f"{where}.bind.selinux: {selinux!r} is not z or Z")
        return VolumeSpec("bind", os.path.normpath(source), dst, readonly, propagation=prop,
                          create_host_path=_flag(b.get("create_host_path"), f"{where}.bind.create_host_path"))
    v = entry.get("volume") or {}
    nocopy = _flag(v.get("nocopy"), f"{where}.volume.nocopy")
    subpath = v.get("subpath")
    if subpath is not None and (not isinstance(subpath, str) or subpath.startswith("/") or ".." in subpath.split("/")):
        raise ConfigError(f"{where}.volume.subpath: {subpath!r} is not a relative path inside the volume")
    if source in (None, ""):
        if nocopy or subpath:
            raise ConfigError(f"{where}: an anonymous volume takes no volume options")
        return VolumeSpec("anonymous", "", dst, readonly)
    if not isinstance(source, str) or not VOLUME_NAME.fullmatch(source):
        raise ConfigError(f"{where}: {source!r} is not a valid volume name ([A-Za-z0-9][A-Za-z0-9_.-]+)")
    return VolumeSpec("volume", source, dst, readonly, nocopy=nocopy, subpath=subpath)


def parse_mount_flag(text: str) -> VolumeSpec:
    """`--mount type=bind,source=/x,target=/y,readonly` (Docker's CSV form) → the long syntax."""
    entry: dict[str, Any] = {}
    for part in str(text).split(","):
        k, sep, v = part.partition("=")
        k = k.strip()
        if k in ("type", "target", "source"):
            entry[k] = v
        elif k in ("src",):
            entry["source"] = v
        elif k in ("dst", "destination"):
            entry["target"] = v
        elif k in ("readonly", "ro"):
            entry["read_only"] = v in ("", "1", "true")
        elif k == "bind-propagation":
            entry.setdefault("bind", {})["propagation"] = v
        elif k == "volume-nocopy":
            entry.setdefault("volume", {})["nocopy"] = v in ("", "1", "true")
        elif k == "volume-subpath":
            entry.setdefault("volume", {})["subpath"] = v
        elif k == "tmpfs-size":
            entry.setdefault("tmpfs", {})["size"] = v
        elif k == "tmpfs-mode":
            entry.setdefault("tmpfs", {})["mode"] = v
        else:
            raise ConfigError(f"bad --mount {text!r}: unsupported field {k!r}")
    entry.setdefault("type", "volume")
    if entry.get("type") == "bind":
        entry.setdefault("bind", {})["create_host_path"] = False   # --mount: a missing source is an error
    return parse_long_volume(entry, f"--mount {text!r}")


def _flag(v: Any, where: str) -> bool:
    if v is None:
        return False
    if not isinstance(v, bool):
        raise ConfigError(f"{where} must be true or false")
    return v


def check_unique(specs: list[VolumeSpec]) -> None:
    seen = set()
    for s in specs:
        if s.destination in seen:
            raise ConfigError(f"duplicate mount point {s.destination} in -v")
        seen.add(s.destination)
