"""The pure half of `up`: what a service's container is made from (its config hash), and the plan —
desired hashes + what exists → Remove/Create/Recreate/Start actions. An unchanged, running
stack plans nothing.

A recreated service's *linkers* are recreated too: their link env vars carry its address and
environment (Docker bakes them in at create). Services that only depends_on it are kept.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import StackError
from ..stack.model import ServiceSpec, Stack


def profile_paths(spec: ServiceSpec) -> list[str]:
    """The seccomp profile file a service names (absolute: the loader made it so)."""
    return [spec.security.seccomp] if spec.security.seccomp not in (None, "unconfined") else []


def _relative(value, base: str):
    """`value` with every path under `base` written relative to it (recursively)."""
    if isinstance(value, str):
        return value[len(base) + 1:] if value.startswith(base + "/") else value
    if isinstance(value, dict):
        return {k: _relative(v, base) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_relative(v, base) for v in value]
    return value


def config_hash(spec: ServiceSpec, env_file_texts: dict[str, str], digest: str | None = None,
                base: str | None = None) -> str:
    """What the service's container is made from: every field but its line, the contents of its
    env files and seccomp profiles (`env_file_texts`: path → text, for both), and the image's
    manifest digest when a release pins it (a new digest under the same tag is a new container).

    With `base` (the stack file's folder) the hash is *portable*: paths under the folder count by
    their place in it, so the operator's copy of a stack and the host's copy deploy pushed hash
    alike — how deploy tells, before touching a host, which services a release changes."""
    data = asdict(spec)
    if base is not None:
        data = _relative(data, base.rstrip("/"))
    if digest:
        data["image_digest"] = digest
    data.pop("line", None)
    for key in ("health_disabled", "cloud_metadata"):
        if not data.get(key):
            data.pop(key, None)   # likewise: only a set flag changes the hash (older stacks keep theirs)
    if profile_paths(spec):   # a changed seccomp profile recreates the service, as a changed env file does
        data["security_opt_texts"] = [env_file_texts.get(f, "") for f in profile_paths(spec)]
    data["env_file_texts"] = [env_file_texts.get(f, "") for f in spec.env_files]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def service_hashes(stack: Stack, pins: dict[str, str] | None = None, *, portable: bool = False) -> dict[str, str]:
    """Each service's config hash, reading the env files and seccomp profiles it names (the one
    part of this module that reads anything). `portable`: counted from the stack file's folder."""
    pins = pins or {}
    base = str(Path(stack.path).resolve().parent) if portable else None
    out = {}
    for name, spec in stack.services.items():
        texts = {}
        for key, paths in (("env_file", spec.env_files), ("security_opt", profile_paths(spec))):
            for f in paths:
                try:
                    texts[f] = Path(f).read_text()
                except OSError as exc:
                    raise StackError(f"services.{name}.{key}: cannot read ({exc.strerror})", f) from exc
        out[name] = config_hash(spec, texts, pins.get(spec.image), base)
    return out


# ---- facts and plan (pure) ----------------------------------------------------------------------

@dataclass(frozen=True)
class Current:
    container: str
    hash: str
    exists: bool
    running: bool


@dataclass(frozen=True)
class Create:
    service: str


@dataclass(frozen=True)
class Recreate:
    service: str
    reason: str


@dataclass(frozen=True)
class Start:
    service: str


@dataclass(frozen=True)
class Remove:
    service: str
    container: str


def plan(stack: Stack, hashes: dict[str, str], current: dict[str, Current]) -> list:
    """Removals first (services gone from the file), then services in dependency order."""
    actions: list = []
    for name, cur in sorted(current.items()):
        if name not in stack.services and cur.exists:
            actions.append(Remove(name, cur.container))
    recreated: set[str] = set()
    for name in stack.order:
        spec = stack.services[name]
        cur = current.get(name)
        if cur is None or not cur.exists:
            actions.append(Create(name))
            recreated.add(name)
        elif cur.hash != hashes[name]:
            actions.append(Recreate(name, "configuration changed"))
            recreated.add(name)
        elif any(t in recreated for t, _ in spec.links):
            actions.append(Recreate(name, "a linked service was recreated"))
            recreated.add(name)
        elif not cur.running:
            actions.append(Start(name))
    return actions


def describe(action) -> str:
    if isinstance(action, Remove):
        return f"remove {action.container} (service {action.service} is no longer in the file)"
    if isinstance(action, Recreate):
        return f"recreate {action.service} ({action.reason})"
    return f"{type(action).__name__.lower()} {action.service}"
