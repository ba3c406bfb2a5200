"""/volumes/...: list, create, inspect, remove, prune — the btrfs-subvolume named volumes `-v NAME:/p`
makes (containers.volumes), with Docker's answers: a volume in use is not removed (409)."""
from __future__ import annotations

import os

from ..runspec.mounts import VOLUME_NAME
from .http import bad_request, conflict, not_found, not_supported, parse_filters
from .views import rfc3339


def _users(eng) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for rec in eng.manager.records.all():
        for m in rec.config.get("mounts") or []:
            if m.get("kind") in ("volume", "anonymous"):
                out.setdefault(m["source"], []).append(rec.id)
    return out


def _size(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def volume_json(eng, info: dict, users: dict | None = None, sizes: bool = False) -> dict:
    name = info["name"]
    out = {"CreatedAt": rfc3339(info.get("created")), "Driver": "local", "Labels": info.get("labels") or None,
           "Mountpoint": str(eng.manager.volumes.path(name)), "Name": name, "Options": None, "Scope": "local"}
    if users is not None:
        out["UsageData"] = {"RefCount": len(users.get(name, [])),
                            "Size": _size(out["Mountpoint"]) if sizes else -1}
    return out


def listing(eng, sizes: bool = False) -> list[dict]:
    users = _users(eng)
    return [volume_json(eng, v, users, sizes) for v in eng.manager.volumes.list()]


def list_volumes(eng, req, conn):
    f = parse_filters(req, {"dangling", "name", "label", "driver"})
    users = _users(eng)
    out = []
    for v in eng.manager.volumes.list():
        j = volume_json(eng, v)
        if "dangling" in f and (f["dangling"][0] in ("true", "1")) == bool(users.get(v["name"])):
            continue
        if "name" in f and not any(n in v["name"] for n in f["name"]):
            continue
        if "driver" in f and "local" not in f["driver"]:
            continue
        if "label" in f:
            labels = j["Labels"] or {}
            if not all(w.partition("=")[0] in labels and (not w.partition("=")[1] or
                                                          labels[w.partition("=")[0]] == w.partition("=")[2])
                       for w in f["label"]):
                continue
        out.append(j)
    return 200, {"Volumes": out, "Warnings": None}


def create_volume(eng, req, conn):
    body = req.json_object()
    name = body.get("Name") or eng.manager.volumes.new_anonymous_name()
    if not isinstance(name, str) or not VOLUME_NAME.fullmatch(name):
        raise bad_request(f"create {name}: volume name is invalid: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    if (body.get("Driver") or "local") != "local":
        raise not_supported(f"volume driver {body['Driver']!r}", "local volumes (btrfs subvolumes) only")
    if body.get("DriverOpts"):
        raise not_supported("volume driver options (DriverOpts)", "each volume is a btrfs subvolume")
    labels = body.get("Labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise bad_request("Labels must be an object of strings")
    vols = eng.manager.volumes
    vols.create(name, labels=labels or None)
    return 201, volume_json(eng, vols.info(name))


def _get(eng, name: str) -> dict:
    if not VOLUME_NAME.fullmatch(name) or not eng.manager.volumes.exists(name):
        raise not_found(f"get {name}: no such volume")
    return eng.manager.volumes.info(name)


def inspect_volume(eng, req, conn, name):
    return 200, volume_json(eng, _get(eng, name))


def remove_volume(eng, req, conn, name):
    _get(eng, name)
    users = _users(eng).get(name)
    if users:
        raise conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
    eng.manager.volumes.remove(name)
    return 204, None


def prune_volumes(eng, req, conn):
    f = parse_filters(req, {"label", "all"})
    if "label" in f:
        raise not_supported("the volume prune filter 'label'")
    users = _users(eng)
    gone, reclaimed = [], 0
    for v in eng.manager.volumes.list():
        if users.get(v["name"]):
            continue
        reclaimed += _size(v["path"])
        eng.manager.volumes.remove(v["name"])
        gone.append(v["name"])
    return 200, {"VolumesDeleted": gone or None, "SpaceReclaimed": reclaimed}


def register(router) -> None:
    router.add("GET", "/volumes", list_volumes)
    router.add("POST", "/volumes/create", create_volume)
    router.add("POST", "/volumes/prune", prune_volumes)
    router.add("GET", "/volumes/{name}", inspect_volume)
    router.add("DELETE", "/volumes/{name}", remove_volume)
