"""The operator's record of deployed hosts: `<root>/deploy/<stack>/<host>.json`.

`provision deploy` writes one record per host once the host's SSH host keys are known (from the
console, never trusted on first use); every command that reaches a host by name — `ssh`, `logs`,
`snapshot`, `image push` — reads it back. A host is named `STACK/HOST`, or just `HOST` when only
one deployed stack has a host of that name. The cloud's tags stay the truth about what exists;
this record only says how to reach it.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import HostError
from ..fsutil import atomic_write
from ..remote.hostkeys import Target

DIR = "deploy"


@dataclass(frozen=True)
class HostRecord:
    stack: str
    host: str
    cloud: str
    address: str                     # where SSH answers (127.0.0.1 for the local cloud)
    port: int
    user: str
    key_file: str                    # the operator's private key
    fingerprints: tuple[str, ...]    # "SHA256:…" of the host keys, read from the console
    instance_id: str = ""
    volumes: dict[str, str] = field(default_factory=dict)     # stack volume name -> cloud volume id
    endpoints: dict[str, str] = field(default_factory=dict)   # "80/tcp" -> "127.0.0.1:8080" as the operator sees it
    stack_file: str = ""
    style: str = ""                  # how its disks look: aws | gce (the local cloud can be either)
    ssh_cidr: str = ""               # the one SSH range: its cloud firewall's, written to its host.yml

    @property
    def name(self) -> str:
        return f"{self.stack}/{self.host}"

    def target(self) -> Target:
        return Target(host=self.address, port=self.port, user=self.user, key_file=Path(self.key_file),
                      fingerprints=tuple(self.fingerprints))

    def to_json(self) -> dict:
        data = asdict(self)
        data["fingerprints"] = list(self.fingerprints)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "HostRecord":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["fingerprints"] = tuple(known.get("fingerprints") or ())
        return cls(**known)


def _path(root: Path, stack: str, host: str) -> Path:
    return Path(root) / DIR / stack / f"{host}.json"


def save(root: Path, rec: HostRecord) -> Path:
    path = _path(root, rec.stack, rec.host)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(rec.to_json(), indent=2, sort_keys=True) + "\n")
    return path


def records(root: Path, stack: str | None = None) -> list[HostRecord]:
    base = Path(root) / DIR
    out = []
    for path in sorted(base.glob(f"{stack or '*'}/*.json")):
        try:
            out.append(HostRecord.from_json(json.loads(path.read_text())))
        except (OSError, ValueError, TypeError) as exc:
            raise HostError(f"{path}: unreadable host record ({exc}); remove it or deploy again") from None
    return out


def find(root: Path, name: str) -> HostRecord:
    """The record for `STACK/HOST` or a unique `HOST`; one clear error otherwise."""
    stack, _, host = name.rpartition("/")
    matches = [r for r in records(root, stack or None) if r.host == host]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(r.name for r in records(root)) or "none"
    if not matches:
        raise HostError(f"unknown host {name!r}: no deployed host by that name under {Path(root) / DIR} "
                        f"(deployed: {known})")
    raise HostError(f"host {name!r} is ambiguous: {', '.join(r.name for r in matches)}; name it as STACK/HOST")


def select(root: Path, name: str | None, cloud: str | None = None) -> list[HostRecord]:
    """The hosts `name` means: every host of a deployed stack of that name, else the host `STACK/HOST`
    or `HOST`; all deployed hosts when None. `cloud`, when given, must be theirs."""
    every = records(root)
    if cloud is not None:
        elsewhere = sorted({r.cloud for r in every if r.stack == name and r.cloud != cloud})
        every = [r for r in every if r.cloud == cloud]
        if elsewhere and not any(r.stack == name for r in every):
            raise HostError(f"stack {name} is deployed on the {', '.join(elsewhere)} cloud, not {cloud}")
    if name is None:
        chosen = every
    elif any(r.stack == name for r in every):
        chosen = [r for r in every if r.stack == name]
    else:
        chosen = [find(root, name)]
        if cloud is not None and chosen[0].cloud != cloud:
            raise HostError(f"host {chosen[0].name} is on the {chosen[0].cloud} cloud, not {cloud}")
    if not chosen:
        where = f" on the {cloud} cloud" if cloud else ""
        raise HostError(f"no deployed hosts{where} under {Path(root) / DIR} (deploy first)")
    return chosen


def forget(root: Path, stack: str, host: str | None = None) -> None:
    """Drop the records of one host, or of a whole stack (after destroy)."""
    if host is not None:
        _path(root, stack, host).unlink(missing_ok=True)
        return
    shutil.rmtree(Path(root) / DIR / stack, ignore_errors=True)
