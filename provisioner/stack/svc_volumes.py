"""A stack's volumes: the top-level named volumes, and each service's `volumes:` (short syntax
SRC:DST[:MODES] and the long syntax) and `tmpfs:`. A relative or ~ source is a host path taken
from the compose file's directory, as compose does; anything else that is not absolute names a
volume, which must be declared at the top level.
"""
from __future__ import annotations

from typing import Any

from .. import yamlutil
from ..errors import ConfigError, StackError
from ..runspec.mounts import VOLUME_NAME, VolumeSpec, parse_long_volume, parse_tmpfs, parse_volume
from .fields import Fields

TOP_KEYS = {"driver", "driver_opts", "external", "labels", "name"}


def top_volumes(f: Fields, top: Any) -> set[str]:
    if top is None:
        return set()
    if not isinstance(top, dict):
        raise StackError("'volumes' must be a mapping of named volumes", f.path, yamlutil.line_of(top))
    for name, v in top.items():
        if not isinstance(name, str) or not VOLUME_NAME.fullmatch(name):
            raise f.fail(f"volumes: {name!r} is not a valid volume name", top, name)
        if v in (None, {}):
            continue
        if not isinstance(v, dict):
            raise f.fail(f"volumes.{name} must be empty or a mapping", top, name)
        where = f"volumes.{name}"
        for k in v:
            if str(k).startswith("x-"):
                continue
            if k not in TOP_KEYS:
                raise f.fail(f"{where}: unsupported key {k!r} (supported: {', '.join(sorted(TOP_KEYS))})", v, k)
        driver = f.scalar(v, "driver", where)
        if driver not in (None, "local"):
            raise f.fail(f"{where}.driver: {driver!r} is not available (volumes here are local btrfs subvolumes)",
                         v, "driver")
        if v.get("driver_opts"):
            raise f.fail(f"{where}.driver_opts: the local volumes here take no driver options", v, "driver_opts")
        if v.get("external"):
            raise f.fail(f"{where}.external: volumes made outside the stack are not supported; declare it here and "
                         "the stack creates it", v, "external")
        if v.get("name") is not None:
            raise f.fail(f"{where}.name: volumes are named <project>_<key> here; a custom name is not supported",
                         v, "name")
        if f.pairs(v, "labels", where):
            f.notice(f"{where}.labels: volume labels are not kept (local btrfs subvolumes carry none)", v, "labels")
    return set(top)


def service_volumes(f: Fields, d: dict, where: str, named: set[str]) -> list[VolumeSpec]:
    raw = f.items(d, "volumes", where)
    out = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        w = f"{where}.volumes[{i}]"
        try:
            if isinstance(item, dict):
                entry = dict(item)
                src = entry.get("source")
                if entry.get("type") == "bind" and isinstance(src, str) and not src.startswith("/"):
                    entry["source"] = f.relative(src)
                if isinstance(entry.get("tmpfs"), dict) and entry["tmpfs"].get("mode") is not None:
                    entry["tmpfs"] = dict(entry["tmpfs"], mode=str(f.mode_text(entry["tmpfs"], "mode")))
                spec = parse_long_volume(entry, w)
            elif isinstance(item, str):
                src, sep, rest = item.partition(":")
                if sep and (src.startswith(".") or src.startswith("~")):   # relative to the stack file, as compose
                    item = f"{f.relative(src)}:{rest}"
                spec = parse_volume(item)
            else:
                raise ConfigError("want SRC:DST[:MODES] or the long syntax (a mapping with type, source, target)")
        except ConfigError as exc:
            raise f.config(exc, w, raw, i) from None
        if spec.kind == "volume" and spec.source not in named:
            raise f.fail(f"{w}: named volume {spec.source!r} is not declared under the top-level 'volumes:'", raw, i)
        if spec.destination in seen:
            raise f.fail(f"{w}: {spec.destination} is mounted twice", raw, i)
        seen.add(spec.destination)
        out.append(spec)
    for i, item in enumerate(f.strings(d, "tmpfs", where)):
        try:
            spec = parse_tmpfs(item)
        except ConfigError as exc:
            raise f.config(exc, f"{where}.tmpfs[{i}]", d, "tmpfs") from None
        if spec.destination in seen:
            raise f.fail(f"{where}.tmpfs[{i}]: {spec.destination} is mounted twice", d, "tmpfs")
        seen.add(spec.destination)
        out.append(spec)
    return out
