"""Compose's variable interpolation (compose-spec 12-interpolation.md), over the line-aware tree.

  $VAR  ${VAR}          the value; unset → "" (and a notice, as compose warns)
  ${VAR:-default}       default when unset or empty;   ${VAR-default}  when unset
  ${VAR:?message}       error when unset or empty;     ${VAR?message}  when unset
  ${VAR:+alternative}   alternative when set and non-empty; ${VAR+alternative} when set
  $$                    a literal $
A default, message or alternative may itself hold ${...}. `$` followed by anything else is kept as
written (compose v2 does the same); an unterminated or malformed `${` is an error. Values are
interpolated, keys are not. Every error is a StackError at the file:line of the value.
"""
from __future__ import annotations

import re
from typing import Callable

from .. import yamlutil
from ..errors import StackError

Lookup = Callable[[str], "str | None"]
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPS = (":-", ":?", ":+", "-", "?", "+")


def substitute(text: str, get: Lookup) -> tuple[str, list[str]]:
    """`text` with its variables replaced; also the names that were unset and defaulted to ""."""
    out: list[str] = []
    missing: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "$" or i + 1 >= len(text):
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt == "{":
            end = _matching_brace(text, i + 2)
            if end < 0:
                raise ValueError(f"invalid interpolation format in {text!r}: '${{' is never closed")
            out.append(_braced(text[i + 2:end], text, get, missing))
            i = end + 1
            continue
        m = _NAME.match(text, i + 1)
        if m:
            value = get(m.group(0))
            if value is None:
                missing.append(m.group(0))
            out.append(value or "")
            i = m.end()
            continue
        out.append(c)   # "$(", "$ " ...: kept as written
        i += 1
    return "".join(out), missing


def _matching_brace(text: str, start: int) -> int:
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _braced(inner: str, whole: str, get: Lookup, missing: list[str]) -> str:
    m = _NAME.match(inner)
    if not m:
        raise ValueError(f"invalid interpolation format in {whole!r}: '${{{inner}}}' names no variable")
    name, rest = m.group(0), inner[m.end():]
    value = get(name)
    if not rest:
        if value is None:
            missing.append(name)
        return value or ""
    op = next((o for o in _OPS if rest.startswith(o)), None)
    if op is None:
        raise ValueError(f"invalid interpolation format in {whole!r}: '${{{inner}}}' "
                         "(want ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} or ${VAR:+alternative})")
    word = rest[len(op):]
    unset_or_empty = value is None or (op.startswith(":") and value == "")
    if op in (":-", "-"):
        if unset_or_empty:
            return substitute(word, get)[0] if word else ""
        return value
    if op in (":?", "?"):
        if unset_or_empty:
            msg = substitute(word, get)[0] if word else ""
            raise ValueError(f"required variable {name} is missing a value" + (f": {msg}" if msg else ""))
        return value
    # :+ / +
    return "" if unset_or_empty else (substitute(word, get)[0] if word else "")


def interpolate_tree(node, path: str, get: Lookup, notices: list[str]):
    """A copy of the YAML tree with every string value interpolated (line numbers kept). An unset
    variable defaulted to "" adds a notice naming it and where it was used."""
    if isinstance(node, yamlutil.YDict):
        out = yamlutil.YDict()
        out.line, out.key_lines, out.raw = node.line, dict(node.key_lines), dict(getattr(node, "raw", {}))
        for k, v in node.items():
            out[k] = _value(v, node, k, path, get, notices)
        return out
    if isinstance(node, yamlutil.YList):
        out_l = yamlutil.YList()
        out_l.line, out_l.item_lines = node.line, list(node.item_lines)
        for i, v in enumerate(node):
            out_l.append(_value(v, node, i, path, get, notices))
        return out_l
    return node


def _value(v, parent, key, path: str, get: Lookup, notices: list[str]):
    if isinstance(v, str):
        try:
            text, missing = substitute(v, get)
        except ValueError as exc:
            raise StackError(str(exc), path, yamlutil.line_of(parent, key)) from None
        for name in dict.fromkeys(missing):
            notices.append(f"{path}:{yamlutil.line_of(parent, key)}: the {name!r} variable is not set; "
                           "it defaults to a blank string")
        return text
    return interpolate_tree(v, path, get, notices)
