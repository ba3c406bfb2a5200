"""Reading typed fields out of a line-aware stack file mapping, every error a StackError at file:line."""
from __future__ import annotations

import os
import re
import shlex
from typing import Any

from .. import yamlutil
from ..errors import ConfigError, StackError


class Fields:
    """Field readers bound to one file (`path`); relative paths in it are taken from `base`."""

    def __init__(self, path: str, environ: dict[str, str] | None = None, lookup=None):
        self.path = path
        self.base = os.path.dirname(os.path.abspath(path)) if path and not path.startswith("<") else os.getcwd()
        self.notices: list[str] = []
        self.environ = environ if environ is not None else dict(os.environ)   # the project's environment
        self._lookup = lookup

    def lookup(self, name: str) -> str | None:
        """A variable of the project's environment (recorded as used, for deploy to carry over)."""
        return self._lookup(name) if self._lookup else self.environ.get(name)

    def fail(self, msg: str, container: Any = None, key: Any = None) -> StackError:
        return StackError(msg, self.path, yamlutil.line_of(container, key) if container is not None else None)

    def notice(self, msg: str, container: Any = None, key: Any = None) -> None:
        """Something accepted but not done as written (ignored, or done differently): one line,
        printed by the command, never silent."""
        line = yamlutil.line_of(container, key) if container is not None else None
        self.notices.append(f"{self.path}:{line}: {msg}" if line else f"{self.path}: {msg}")

    def config(self, exc: ConfigError, where: str, container: Any, key: Any = None) -> StackError:
        """A runspec parser's ConfigError as this file's error, prefixed with where it was."""
        msg = exc.message
        return self.fail(msg if msg.startswith(where) else f"{where}: {msg}", container, key)

    def keys(self, d: dict, allowed: set[str], where: str) -> None:
        for k in d:
            if k not in allowed:
                raise self.fail(f"unknown key {k!r} in {where} (expected one of: {', '.join(sorted(allowed))})", d, k)

    def mapping(self, parent: Any, key: Any, where: str, required: bool = False) -> dict | None:
        v = parent.get(key) if isinstance(parent, dict) else None
        if v is None:
            if required:
                raise self.fail(f"{where}: missing required key {key!r}", parent)
            return None
        if not isinstance(v, dict):
            raise self.fail(f"{where}.{key} must be a mapping", parent, key)
        return v

    def string(self, d: dict, key: str, where: str, required: bool = False, pattern: re.Pattern | None = None,
               hint: str = "") -> str | None:
        if key not in d or d[key] is None:
            if required:
                raise self.fail(f"{where}: missing required key {key!r}", d)
            return None
        v = d[key]
        if not isinstance(v, str) or not v.strip():
            raise self.fail(f"{where}.{key} must be a non-empty string", d, key)
        if pattern and not pattern.fullmatch(v):
            raise self.fail(f"{where}.{key}: {v!r} is not valid{(' (' + hint + ')') if hint else ''}", d, key)
        return v

    def integer(self, d: dict, key: str, where: str, low: int = 1, high: int = 65536) -> int | None:
        if key not in d or d[key] is None:
            return None
        v = d[key]
        if isinstance(v, bool) or not isinstance(v, int) or not (low <= v <= high):
            raise self.fail(f"{where}.{key} must be an integer in {low}..{high}", d, key)
        return v

    def boolean(self, d: dict, key: str, where: str, default: bool) -> bool:
        if key not in d or d[key] is None:
            return default
        if not isinstance(d[key], bool):
            raise self.fail(f"{where}.{key} must be true or false", d, key)
        return d[key]

    def str_map(self, d: dict, key: str, where: str) -> dict[str, str]:
        m = self.mapping(d, key, where) or {}
        out = {}
        for k, v in m.items():
            if not isinstance(k, str) or isinstance(v, (dict, list)) or v is None:
                raise self.fail(f"{where}.{key}.{k} must map a string to a scalar", m, k)
            out[k] = str(v).lower() if isinstance(v, bool) else str(v)
        return out

    def scalar(self, d: dict, key: str, where: str) -> str | None:
        """A non-empty string, or a number taken as its text."""
        v = d.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (str, int, float)) or str(v).strip() == "":
            raise self.fail(f"{where}.{key} must be a non-empty string", d, key)
        return str(v)

    def words(self, d: dict, key: str, where: str) -> tuple[str, ...] | None:
        """A command: compose's list form, or a string split as a shell would."""
        v = d.get(key)
        if v is None:
            return None
        if isinstance(v, str):
            try:
                return tuple(shlex.split(v))
            except ValueError as exc:
                raise self.fail(f"{where}.{key}: {exc}", d, key) from None
        if isinstance(v, list) and all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in v):
            return tuple(str(x) for x in v)
        raise self.fail(f"{where}.{key} must be a string or a list of strings", d, key)

    def strings(self, d: dict, key: str, where: str, one_string: bool = True) -> list[str]:
        """A list of strings (numbers taken as text), or one string as a one-item list."""
        out = []
        items = self.items(d, key, where, one_string=one_string)
        for i, v in enumerate(items):
            if isinstance(v, bool) or not isinstance(v, (str, int, float)) or str(v) == "":
                container, at = (items, i) if isinstance(items, yamlutil.YList) else (d, key)
                raise self.fail(f"{where}.{key}[{i}] must be a non-empty string", container, at)
            out.append(str(v))
        return out

    def pairs(self, d: dict, key: str, where: str, sep: str = "=") -> list[tuple[str, str]]:
        """Compose's "list or dict" (labels, sysctls, extra_hosts…): KEY=VALUE items or a mapping.
        A missing value is "" (labels) — the caller checks what it needs."""
        v = d.get(key)
        if v is None:
            return []
        out = []
        if isinstance(v, dict):
            for k, val in v.items():
                if isinstance(val, (dict, list)):
                    raise self.fail(f"{where}.{key}.{k} must be a scalar", v, k)
                out.append((str(k), "" if val is None else (str(val).lower() if isinstance(val, bool) else str(val))))
            return out
        if isinstance(v, list):
            for i, item in enumerate(v):
                if not isinstance(item, (str, int, float)) or isinstance(item, bool):
                    raise self.fail(f"{where}.{key}[{i}] must be a string like KEY{sep}VALUE", v, i)
                k, _, val = str(item).partition(sep)
                out.append((k, val))
            return out
        raise self.fail(f"{where}.{key} must be a list of KEY{sep}VALUE or a mapping", d, key)

    def items(self, d: dict, key: str, where: str, one_string: bool = False) -> list:
        """A list (or, with `one_string`, a lone string taken as a one-item list)."""
        v = d.get(key)
        if v is None:
            return []
        if isinstance(v, str) and one_string:
            return [v]
        if not isinstance(v, list):
            raise self.fail(f"{where}.{key} must be a list", d, key)
        return v

    def mode_text(self, d: dict, key: str):
        """A file mode as written: compose writes modes in octal (0440, 1777); YAML 1.1 reads 0440 as
        the number 288 and 1777 as 1777 — the text is what the author meant."""
        raw = yamlutil.raw_text(d, key)
        v = d.get(key)
        return raw if raw is not None and isinstance(v, int) and not isinstance(v, bool) else v

    def relative(self, path: str) -> str:
        """A path as the stack file means it: relative to the file's directory, ~ expanded."""
        return os.path.normpath(os.path.join(self.base, os.path.expanduser(path)))
