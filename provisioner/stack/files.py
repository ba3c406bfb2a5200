"""Secrets and configs: the top-level `secrets:` / `configs:` (where each one's content comes
from) and each service's use of them (which file in the container, its owner and mode).

Sources: `file:` (a path taken from the compose file's directory) or `environment:` (a variable
of the project's environment: the command's, or .env); a config may also give `content:`. A
service gets a secret at /run/secrets/<name> (or its `target`), a config at /<name> (or its
`target`), read-only, mode 0444 and owner 0:0 unless `uid`/`gid`/`mode` say otherwise.

`check_sources` runs once everything else in the file has parsed: a secret file that is missing
or that every user of this machine can read, or an unset variable, is an error at the secret's
file:line before anything is created.
"""
from __future__ import annotations

import os
import stat
from typing import Any

from .. import yamlutil
from ..errors import ConfigError, StackError
from ..runspec.secrets import check_name, parse_id, parse_mode, target_for
from .fields import Fields
from .model import FileDef, FileRef, ServiceSpec

TOP_KEYS = {"secret": {"file", "environment", "external", "name", "labels"},
            "config": {"file", "environment", "content", "external", "name", "labels"}}
REF_KEYS = {"source", "target", "uid", "gid", "mode"}


def top_files(f: Fields, raw: Any, kind: str) -> dict[str, FileDef]:
    section = f"{kind}s"
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise StackError(f"'{section}' must be a mapping of {section}", f.path, yamlutil.line_of(raw))
    out = {}
    for name, v in raw.items():
        where = f"{section}.{name}"
        try:
            check_name(name)
        except ConfigError as exc:
            raise f.config(exc, where, raw, name) from None
        if not isinstance(v, dict):
            raise f.fail(f"{where} must be a mapping with file: or environment:", raw, name)
        for k in v:
            if not str(k).startswith("x-") and k not in TOP_KEYS[kind]:
                raise f.fail(f"{where}: unsupported key {k!r} (supported: {', '.join(sorted(TOP_KEYS[kind]))})", v, k)
        if v.get("external"):
            raise f.fail(f"{where}.external: {section} kept outside the stack (swarm's) are not available; give "
                         "file: or environment:", v, "external")
        if v.get("name") is not None:
            f.notice(f"{where}.name: ignored; the {kind} is known by its key {name!r}", v, "name")
        sources = [k for k in ("file", "environment", "content") if v.get(k) is not None]
        if len(sources) != 1:
            raise f.fail(f"{where}: give exactly one of {', '.join(sorted(TOP_KEYS[kind] & {'file', 'environment', 'content'}))}",
                         raw, name)
        path = f.string(v, "file", where)
        env = f.string(v, "environment", where)
        content = v.get("content")
        if content is not None and not isinstance(content, str):
            raise f.fail(f"{where}.content must be a string", v, "content")
        out[name] = FileDef(kind, name, f.relative(path) if path else None, env, content,
                            yamlutil.line_of(v, sources[0]))
    return out


def service_refs(f: Fields, d: dict, where: str, kind: str, defs: dict[str, FileDef]) -> tuple[FileRef, ...]:
    key = f"{kind}s"
    raw = f.items(d, key, where)
    out = []
    for i, item in enumerate(raw):
        w = f"{where}.{key}[{i}]"
        if isinstance(item, str):
            item = {"source": item}
            container, at = raw, i
        elif isinstance(item, dict):
            container, at = item, None
            for k in item:
                if k not in REF_KEYS:
                    raise f.fail(f"{w}: unsupported key {k!r} (supported: {', '.join(sorted(REF_KEYS))})", item, k)
        else:
            raise f.fail(f"{w} must be a {kind} name or a mapping with source", raw, i)
        source = item.get("source")
        if source not in defs:
            known = ", ".join(defs) or "none declared"
            raise f.fail(f"{w}: {kind} {source!r} is not declared under the top-level '{key}:' (declared: {known})",
                         raw, i)
        values: dict[str, Any] = {}
        for k, parse, default in (("target", lambda v: target_for(kind, source, v), None),
                                  ("uid", lambda v: parse_id(v, "uid"), 0), ("gid", lambda v: parse_id(v, "gid"), 0),
                                  ("mode", lambda v: parse_mode(f.mode_text(item, "mode")), 0o444)):
            try:
                values[k] = parse(item.get(k)) if item.get(k) is not None or k == "target" else default
            except ConfigError as exc:
                raise f.config(exc, w, container, at if at is not None else k) from None
        out.append(FileRef(source, values["target"], values["uid"], values["gid"], values["mode"]))
    return tuple(out)


def check_sources(f: Fields, services: dict[str, ServiceSpec], secrets: dict[str, FileDef],
                  configs: dict[str, FileDef], variables: dict[str, str]) -> None:
    """The sources the services use, checked before anything is created; the value of an
    `environment:` source is recorded in `variables` (the project's values the stack uses)."""
    used = {("secret", r.source) for s in services.values() for r in s.secrets}
    used |= {("config", r.source) for s in services.values() for r in s.configs}
    for kind, defs in (("secret", secrets), ("config", configs)):
        for name, d in defs.items():
            if (kind, name) not in used:
                continue
            where = f"{kind}s.{name}"
            if d.file is not None:
                try:
                    st = os.stat(d.file)
                except FileNotFoundError:
                    raise StackError(f"{where}.file: {d.file} does not exist", f.path, d.line) from None
                except OSError as exc:
                    raise StackError(f"{where}.file: cannot read {d.file} ({exc.strerror})", f.path, d.line) from None
                if not stat.S_ISREG(st.st_mode):
                    raise StackError(f"{where}.file: {d.file} is not a regular file", f.path, d.line)
                if kind == "secret" and st.st_mode & stat.S_IROTH:
                    raise StackError(f"{where}.file: {d.file} is readable by every user of this machine (mode "
                                     f"{stat.S_IMODE(st.st_mode):04o}); `chmod o-rwx` it first", f.path, d.line)
                if not os.access(d.file, os.R_OK):
                    raise StackError(f"{where}.file: {d.file} is not readable by this user", f.path, d.line)
            elif d.environment is not None:
                value = f.lookup(d.environment)
                if value is None:
                    raise StackError(f"{where}.environment: variable {d.environment} is not set (in the environment "
                                     "or the .env file)", f.path, d.line)
                variables[d.environment] = value
