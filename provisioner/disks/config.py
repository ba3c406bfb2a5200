"""The desired disk layout: one schema, used by `provision host disks --config FILE` and, in a
stack file, as `hosts.<name>.disks` (the clouds layer calls `parse_config` on that mapping).

```yaml
ephemeral:                  # every instance-store / local-SSD disk, striped into ONE btrfs
  mount: /var/lib/provisioner
  devices: [/dev/loop3]     # optional allow-list (default: every disk classified ephemeral)
  wipe: false               # allow formatting ephemeral disks holding a foreign fs / partitions
  count: 2                  # cloud side: how many local SSDs to ask for
  interface: nvme           # cloud side: nvme | scsi
volumes:                    # attached EBS / PD volumes, one btrfs each
  - name: data
    match: {device: /dev/loop5}   # or aws_volume_id / gce_device_name / serial
    mount: /srv/data
    size: 10                # cloud side, GiB
    type: gp3               # cloud side
    encrypted: true         # cloud side (default true)
    kms_key: alias/data     # cloud side: AWS KMS key / GCE Cloud KMS key name (default: the cloud's own)
    keep: false             # cloud side: keep the volume when the VM is destroyed
    iops: 3000              # cloud side
```
Everything is validated here with file:line errors; checks that need the host (does the
device exist, is the mountpoint under a file) happen in the planner, with the same lines.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from .. import yamlutil
from ..errors import ConfigError

MATCH_KEYS = ("device", "aws_volume_id", "gce_device_name", "serial")
INTERFACES = ("nvme", "scsi")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class Where:
    """Where a value came from, so later checks can say file:line."""

    path: str = "<config>"
    line: int | None = None

    def error(self, msg: str) -> ConfigError:
        return ConfigError(msg, self.path, self.line)


@dataclass(frozen=True)
class Ephemeral:
    mount: str
    devices: tuple[str, ...] | None = None
    wipe: bool = False
    count: int | None = None
    interface: str | None = None
    where: Where = field(default=Where(), compare=False)
    devices_where: tuple[Where, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Match:
    key: str
    value: str

    def describe(self) -> str:
        return f"{{{self.key}: {self.value}}}"


@dataclass(frozen=True)
class Volume:
    name: str
    match: Match | None   # None: matched by what `provision deploy` recorded (host.yml `volumes:`)
    mount: str
    size: int | None = None
    type: str | None = None
    encrypted: bool = True
    keep: bool = False
    iops: int | None = None
    where: Where = field(default=Where(), compare=False)
    match_where: Where = field(default=Where(), compare=False)


@dataclass(frozen=True)
class DisksConfig:
    ephemeral: Ephemeral | None = None
    volumes: tuple[Volume, ...] = ()
    path: str = field(default="<config>", compare=False)

    def mountpoints(self) -> list[str]:
        out = [self.ephemeral.mount] if self.ephemeral else []
        return out + [v.mount for v in self.volumes]

    def device_paths(self) -> list[str]:
        out = list(self.ephemeral.devices or ()) if self.ephemeral else []
        return out + [v.match.value for v in self.volumes if v.match is not None and v.match.key == "device"]

    def to_json(self) -> dict:
        from dataclasses import asdict

        def strip(o):
            if isinstance(o, dict):
                return {k: strip(v) for k, v in o.items() if not k.endswith("where")}
            if isinstance(o, (list, tuple)):
                return [strip(v) for v in o]
            return o
        return strip(asdict(self))


def _where(path, container, key=None) -> Where:
    return Where(path, yamlutil.line_of(container, key))


def _check_keys(data: dict, allowed: tuple[str, ...], path: str, what: str) -> None:
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{what}: unknown key {key!r} (expected one of: {', '.join(allowed)})",
                              path, yamlutil.line_of(data, key))


def _require(data: dict, key: str, path: str, what: str):
    if key not in data or data[key] is None:
        raise ConfigError(f"{what}: missing required key {key!r}", path, yamlutil.line_of(data))
    return data[key]


def _mount(value, path, data, key, what) -> str:
    line = yamlutil.line_of(data, key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what}.mount: must be a path string, got {value!r}", path, line)
    if not value.startswith("/"):
        raise ConfigError(f"{what}.mount: must be an absolute path, got {value!r}", path, line)
    norm = posixpath.normpath(value)
    if norm == "/" or ".." in value.split("/"):
        raise ConfigError(f"{what}.mount: refusing to mount over {value!r}", path, line)
    return norm


def _bool(data, key, default, path, what) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{what}.{key}: must be true or false, got {value!r}", path,
                          yamlutil.line_of(data, key))
    return value


def _int(data, key, path, what, minimum=1) -> int | None:
    if key not in data or data[key] is None:
        return None
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what}.{key}: must be an integer ≥ {minimum}, got {value!r}", path,
                          yamlutil.line_of(data, key))
    return value


def _str(data, key, path, what) -> str | None:
    if key not in data or data[key] is None:
        return None
    value = data[key]
    if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value) == "":
        raise ConfigError(f"{what}.{key}: must be a non-empty string, got {value!r}", path,
                          yamlutil.line_of(data, key))
    return str(value)


def _device(value, path, container, key, what) -> str:
    if not isinstance(value, str) or not value.startswith("/dev/"):
        raise ConfigError(f"{what}: must be a device path under /dev/, got {value!r}", path,
                          yamlutil.line_of(container, key))
    return posixpath.normpath(value)


def _parse_ephemeral(data, path: str) -> Ephemeral:
    what = "ephemeral"
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: must be a mapping", path, yamlutil.line_of(data))
    _check_keys(data, ("mount", "devices", "wipe", "count", "interface"), path, what)
    mount = _mount(_require(data, "mount", path, what), path, data, "mount", what)
    devices = devices_where = None
    if data.get("devices") is not None:
        raw = data["devices"]
        if not isinstance(raw, list) or not raw:
            raise ConfigError(f"{what}.devices: must be a non-empty list of device paths", path,
                              yamlutil.line_of(data, "devices"))
        devices = tuple(_device(v, path, raw, i, f"{what}.devices[{i}]") for i, v in enumerate(raw))
        if len(set(devices)) != len(devices):
            raise ConfigError(f"{what}.devices: lists a device twice", path,
                              yamlutil.line_of(data, "devices"))
        devices_where = tuple(_where(path, raw, i) for i in range(len(raw)))
    interface = _str(data, "interface", path, what)
    if interface is not None and interface not in INTERFACES:
        raise ConfigError(f"{what}.interface: must be one of {', '.join(INTERFACES)}, got {interface!r}",
                          path, yamlutil.line_of(data, "interface"))
    return Ephemeral(mount=mount, devices=devices, wipe=_bool(data, "wipe", False, path, what),
                     count=_int(data, "count", path, what, minimum=0), interface=interface,
                     where=_where(path, data, "mount"), devices_where=devices_where or ())


def parse_match(data, path: str, what: str) -> Match:
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: must be a mapping with one of: {', '.join(MATCH_KEYS)}", path,
                          yamlutil.line_of(data))
    _check_keys(data, MATCH_KEYS, path, what)
    if len(data) != 1:
        raise ConfigError(f"{what}: needs exactly one of: {', '.join(MATCH_KEYS)}", path,
                          yamlutil.line_of(data))
    (key, value), = data.items()
    if key == "device":
        value = _device(value, path, data, key, f"{what}.device")
    else:
        value = _str(data, key, path, what)
    return Match(key, value)


def _parse_volume(data, index: int, path: str) -> Volume:
    what = f"volumes[{index}]"
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: must be a mapping", path, yamlutil.line_of(data))
    _check_keys(data, ("name", "match", "mount", "size", "type", "encrypted", "keep", "iops", "kms_key"),
                path, what)
    name = _require(data, "name", path, what)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{what}.name: must be lowercase letters, digits, '-', '_' or '.', got {name!r}",
                          path, yamlutil.line_of(data, "name"))
    what = f"volume {name!r}"
    match = parse_match(data["match"], path, f"{what}.match") if data.get("match") is not None else None
    mount = _mount(_require(data, "mount", path, what), path, data, "mount", what)
    return Volume(
        name=name, match=match, mount=mount, size=_int(data, "size", path, what),
        type=_str(data, "type", path, what), encrypted=_bool(data, "encrypted", True, path, what),
        keep=_bool(data, "keep", False, path, what), iops=_int(data, "iops", path, what),
        where=_where(path, data, "mount"), match_where=_where(path, data, "match"),
    )


def parse_config(data, path: str = "<config>") -> DisksConfig:
    """Validate a disks mapping (e.g. from yamlutil.load) into frozen dataclasses."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("disks config must be a mapping with 'ephemeral' and/or 'volumes'", path,
                          yamlutil.line_of(data))
    _check_keys(data, ("ephemeral", "volumes"), path, "disks")
    ephemeral = _parse_ephemeral(data["ephemeral"], path) if data.get("ephemeral") is not None else None
    volumes: list[Volume] = []
    raw_volumes = data.get("volumes") or []
    if not isinstance(raw_volumes, list):
        raise ConfigError("volumes: must be a list", path, yamlutil.line_of(data, "volumes"))
    names: set[str] = set()
    for i, item in enumerate(raw_volumes):
        vol = _parse_volume(item, i, path)
        if vol.name in names:
            raise ConfigError(f"volume {vol.name!r}: name used twice", path, yamlutil.line_of(item, "name"))
        names.add(vol.name)
        volumes.append(vol)
    _check_mounts(ephemeral, volumes)
    _check_devices(ephemeral, volumes)
    return DisksConfig(ephemeral=ephemeral, volumes=tuple(volumes), path=path)


def _check_mounts(ephemeral: Ephemeral | None, volumes: list[Volume]) -> None:
    seen: dict[str, str] = {}
    items = ([("ephemeral", ephemeral.mount, ephemeral.where)] if ephemeral else []) + \
        [(f"volume {v.name!r}", v.mount, v.where) for v in volumes]
    for who, mount, where in items:
        if mount in seen:
            raise where.error(f"{who}: mountpoint {mount} is already used by {seen[mount]}")
        seen[mount] = who


def _check_devices(ephemeral: Ephemeral | None, volumes: list[Volume]) -> None:
    used: dict[str, str] = {}
    if ephemeral and ephemeral.devices:
        for dev in ephemeral.devices:
            used[dev] = "ephemeral"
    for v in volumes:
        if v.match is not None and v.match.key == "device":
            if v.match.value in used:
                raise v.match_where.error(
                    f"volume {v.name!r}: device {v.match.value} is already used by {used[v.match.value]}")
            used[v.match.value] = f"volume {v.name!r}"


def load_config(path) -> DisksConfig:
    return parse_config(yamlutil.load(path), str(path))
