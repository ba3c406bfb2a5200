"""Secrets and configs a container gets as files (compose's `secrets:` / `configs:`): where the
file appears, its owner and mode, and its content.

The content is carried here only in memory, on its way into the container's private directory
(root-only); it never goes into the container's record, the stack state, logs or command lines.
Records keep the digest, so a changed secret is a changed container.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field

from ..errors import ConfigError

SECRETS_DIR = "/run/secrets"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class FileMount:
    kind: str                 # "secret" | "config"
    name: str
    target: str               # absolute path in the container
    uid: int = 0
    gid: int = 0
    mode: int = 0o444
    content: bytes = field(default=b"", repr=False, compare=False)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    def to_json(self) -> dict:
        """For the record: everything but the content."""
        return {"kind": self.kind, "name": self.name, "target": self.target, "uid": self.uid, "gid": self.gid,
                "mode": self.mode, "digest": self.digest}


def check_name(name: str) -> str:
    if not _NAME.fullmatch(str(name)):
        raise ConfigError(f"bad secret or config name {name!r} (letters, digits, '_', '.', '-')")
    return str(name)


def target_for(kind: str, name: str, target: str | None) -> str:
    """Compose: a secret's target is /run/secrets/<target or name> (a relative target goes under
    /run/secrets); a config's is /<name> unless given."""
    if target in (None, ""):
        return f"{SECRETS_DIR}/{name}" if kind == "secret" else f"/{name}"
    if not target.startswith("/"):
        if kind == "config":
            raise ConfigError(f"config target {target!r} is not an absolute path")
        target = f"{SECRETS_DIR}/{target}"
    norm = os.path.normpath(target)
    if norm == "/":
        raise ConfigError(f"{kind} target {target!r} cannot be /")
    return norm


def parse_mode(value) -> int:
    """A file mode: octal text ("0440", "440", "0o440"), or a number taken as it is."""
    if isinstance(value, bool):
        raise ConfigError(f"mode {value!r} is not a file mode such as 0440")
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        if not re.fullmatch(r"[0-7]{1,5}", text):
            raise ConfigError(f"mode {value!r} is not a file mode such as 0440")
        value = int(text, 8)
    if not isinstance(value, int) or not 0 <= value <= 0o7777:
        raise ConfigError(f"mode {value!r} is not a file mode such as 0440")
    return value


def parse_id(value, what: str) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{what} {value!r} is not a numeric id") from None
    if isinstance(value, bool) or n < 0:
        raise ConfigError(f"{what} {value!r} is not a numeric id")
    return n
