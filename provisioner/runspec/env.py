"""Environment entries: `-e KEY=VALUE`, compose's `environment:`, and Docker's --env-file format."""
from __future__ import annotations

import re
from typing import Iterable

from ..errors import ConfigError

_ENV_KEY = re.compile(r"[^=\s]+")


def parse_env(items: Iterable[str], where: str = "-e") -> list[tuple[str, str]]:
    """`K=V` entries; a bare `K` is dropped here (Docker takes it from the CLI's environment:
    the caller resolves that before)."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _ENV_KEY.fullmatch(key):
            raise ConfigError(f"bad environment entry {item!r} in {where} (want KEY=VALUE)")
        out.append((key, value))
    return out


def parse_env_file(text: str, path: str) -> list[tuple[str, str]]:
    """Docker's --env-file: KEY=VALUE lines, '#' comments and blank lines skipped, no quoting."""
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not _ENV_KEY.fullmatch(key):
            raise ConfigError(f"bad line {raw!r} (want KEY=VALUE)", path, n)
        out.append((key, value))
    return out
