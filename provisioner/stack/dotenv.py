"""Compose's `.env` files: the variables a compose file is interpolated with (besides the
environment), and what `env_file:` gives a service.

The format is compose's (compose-go's dotenv, not Docker's `--env-file`): `KEY=VALUE` or
`export KEY=VALUE` lines, `#` comments and blank lines skipped;
  - 'single quoted' values are literal (and may span lines);
  - "double quoted" values take the escapes \\n \\r \\t \\\\ \\" \\$ and ${VAR} interpolation (and
    may span lines);
  - unquoted values are trimmed, lose an inline ` # comment`, and take ${VAR} interpolation.
Interpolation sees the variables defined above in the same file, then `lookup` (the environment).
"""
from __future__ import annotations

import re
from typing import Callable

from ..errors import StackError
from .interpolate import substitute

_LINE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*[=:]\s?(.*)\Z", re.S)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "$": "$"}


def parse(text: str, path: str, lookup: Callable[[str], str | None] = lambda _: None,
          interpolate: bool = True) -> dict[str, str]:
    """The file's variables, in order. A line that is not a variable is a StackError at path:line."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    i = 0

    def get(name: str) -> str | None:
        return out[name] if name in out else lookup(name)

    while i < len(lines):
        n, raw = i + 1, lines[i]
        i += 1
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _LINE.match(raw)
        if not m:
            raise StackError(f"bad line {raw.strip()!r} in an env file (want KEY=VALUE)", path, n)
        key, rest = m.group(1), m.group(2)
        value_start = rest.lstrip()
        if value_start[:1] in ("'", '"'):
            quote = value_start[0]
            body = value_start[1:]
            # a quoted value may run over several lines, up to its closing quote
            while _closing(body, quote) < 0 and i < len(lines):
                body += "\n" + lines[i]
                i += 1
            end = _closing(body, quote)
            if end < 0:
                raise StackError(f"{key}: the {quote} quote is never closed", path, n)
            value = body[:end]
            if quote == '"':
                # \$ is a literal $: kept from interpolation as $$, which interpolation turns into $
                value = re.sub(r"\\(.)", lambda e: "$$" if e.group(1) == "$" else
                               _ESCAPES.get(e.group(1), "\\" + e.group(1)), value)
                value = _sub(value, get, path, n) if interpolate else value.replace("$$", "$")
        else:
            value = re.split(r"\s#", rest, maxsplit=1)[0].strip()
            if interpolate:
                value = _sub(value, get, path, n)
        out[key] = value
    return out


def _closing(body: str, quote: str) -> int:
    """Index of the unescaped closing quote in `body`, or -1."""
    j = 0
    while j < len(body):
        if body[j] == "\\" and quote == '"':
            j += 2
            continue
        if body[j] == quote:
            return j
        j += 1
    return -1


def _sub(value: str, get, path: str, line: int) -> str:
    try:
        return substitute(value, get)[0]
    except ValueError as exc:
        raise StackError(str(exc), path, line) from None


def read(path: str, lookup: Callable[[str], str | None] = lambda _: None) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise StackError("env file not found", path) from None
    except OSError as exc:
        raise StackError(f"cannot read env file ({exc.strerror})", path) from None
    return parse(text, path, lookup)
